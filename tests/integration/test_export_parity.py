"""Parity is the contract: every catalog tier x every backend, compiled from a tiny model with
the tier's own plan, trains like eager PyTorch. Plus one real MiniLM export."""

import pytest

from devices import load_catalog
from export import export_bundle, verify_bundle
from tests._require import require

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CATALOG = load_catalog()
BACKENDS = ("torch", "ort", "executorch")
#: MiniLM's depth: a tier that adapts every layer (jetson-orin-nano) has no frozen layer there either.
MINILM_LAYERS = 6


def layers_for(depth: int) -> int:
    """Layers of the tiny backbone for a tier adapting its top ``depth``: one frozen layer below them
    (MiniLM's 6 - depth frozen, int8-quantized layers run one loop), none for a tier that adapts all of
    MiniLM's. Why not always 6: an ExecuTorch export's graph passes scale with the node count, so
    more frozen layers cost CI minutes and test no other code."""
    return min(depth + 1, MINILM_LAYERS)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tier", sorted(CATALOG))
def test_every_tier_and_backend_matches_eager(tier, backend, tmp_path):
    require({"ort": "onnxruntime", "executorch": "executorch"}.get(backend, "torch"))
    plan = CATALOG[tier].plan
    spec = f"tiny:hidden=32,layers={layers_for(plan.depth)},heads=2,intermediate=64"
    result = export_bundle(spec, 2, tier, plan, backend, tmp_path, progress=lambda m: None)
    frozen_below = result.manifest.dims.num_layers - plan.depth
    assert frozen_below >= 1 or plan.depth == MINILM_LAYERS, f"{tier}: no frozen layer below the adapters"
    report = verify_bundle(result.bundle_dir, steps=3)
    assert report.ok, f"{tier}/{backend}: {report.problems}"
    assert report.max_frozen_move <= 1e-7


@pytest.mark.parametrize("backend", ["torch", "ort"])
def test_real_minilm_exports_and_verifies_for_one_tier(backend, tmp_path):
    """The bundled pretrained backbone, int8 tier: smaller than fp32 and parity with eager."""
    require({"ort": "onnxruntime"}.get(backend, "torch"))
    plan = CATALOG["android-low"].plan
    result = export_bundle("minilm", 2, "android-low", plan, backend, tmp_path, progress=lambda m: None)
    q = result.manifest.quantization
    assert result.manifest.base_model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert q["precision"] == "int8" and q["backbone_bytes_stored"] < 0.35 * q["backbone_bytes_fp32"]
    report = verify_bundle(result.bundle_dir, steps=2)
    assert report.ok, report.problems

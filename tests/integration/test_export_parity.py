"""Parity is the contract: every catalog tier x every backend, compiled from a tiny model with
the tier's own plan, trains like eager PyTorch. Plus one real MiniLM export."""

import pytest

from devices import load_catalog
from export import export_bundle, verify_bundle
from tests._require import require

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CATALOG = load_catalog()
# Six layers so that every tier's depth fits; small widths keep the 15 exports fast.
TINY6 = "tiny:hidden=32,layers=6,heads=2,intermediate=64"
BACKENDS = ("torch", "ort", "executorch")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tier", sorted(CATALOG))
def test_every_tier_and_backend_matches_eager(tier, backend, tmp_path):
    require({"ort": "onnxruntime", "executorch": "executorch"}.get(backend, "torch"))
    result = export_bundle(TINY6, 2, tier, CATALOG[tier].plan, backend, tmp_path, progress=lambda m: None)
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

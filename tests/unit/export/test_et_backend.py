"""ExecuTorch backend: the .pte joint training program trains like eager and keeps int8 storage.

An export costs ~30 s of CPU even for the tiny model (graph passes scale with the number of nodes,
not the tensor sizes), so both bundles are exported once per module, with depth 1 (two LoRA sites,
backward through one layer) to keep the graph small; MiniLM depth 2 and 6 parity is checked by
`fedhft export verify` on real bundles.
"""

import json

import numpy as np
import pytest

pytest.importorskip("executorch", reason="the executorch extra is missing: pip install 'fedhft[executorch]'")

from devices import AdapterPlan  # noqa: E402
from export import export_bundle, verify_bundle  # noqa: E402
from fedhft.manifest import load_manifest  # noqa: E402

PLAN = AdapterPlan(depth=1, ranks=(8,), mask_density=0.5, max_seq_len=32, batch_size=4)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    out = tmp_path_factory.mktemp("et-bundles")
    return {
        p: export_bundle(
            "tiny",
            2,
            f"t-{p}",
            AdapterPlan(**{**PLAN.to_dict(), "precision": p}),
            "executorch",
            out,
            progress=lambda m: None,
        )
        for p in ("fp32", "int8")
    }


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_et_bundle_matches_eager(bundles, precision):
    report = verify_bundle(bundles[precision].bundle_dir, steps=4)
    assert report.ok, report.problems
    assert report.max_loss_diff < 1e-5  # rounding only (AdamW's normalisation amplifies it in the params,
    # which the contract's PARAM_ATOL=1e-4 covers: ~1e-5 measured on tiny int8 and on MiniLM)
    assert report.max_frozen_move == 0.0
    assert report.losses_backend[-1] < report.losses_backend[0]  # it trains


def test_int8_pte_keeps_int8_storage_and_is_smaller(bundles):
    fp32 = bundles["fp32"].bundle_dir / "model.pte"
    int8 = bundles["int8"].bundle_dir / "model.pte"
    assert int8.stat().st_size < 0.4 * fp32.stat().st_size
    stored = bundles["int8"].manifest.backend_extras["stored_bytes_by_dtype"]
    assert stored["int8"] > 4 * stored.get("float32", 0)
    assert "int8" not in bundles["fp32"].manifest.backend_extras["stored_bytes_by_dtype"]


def test_manifest_maps_program_parameters_to_canonical_names(bundles):
    m = load_manifest(bundles["fp32"].bundle_dir)
    extras = m.backend_extras
    assert extras["input_order"] == ["input_ids", "attention_mask", "labels", "mask"]
    assert extras["training_methods"]["fqn"] == "__et_training_fqn_forward" and m.optimizer.runs_in == "model.pte"
    assert sorted(extras["param_to_canonical"].values()) == sorted(s.name for s in m.trainable)
    assert extras["param_to_canonical"]["head.weight"] == "head.weight"
    assert extras["addmm_split"] > 0  # the slow portable addmm never reaches the program
    assert extras["xnnpack"] is True  # GEMMs delegated by default (and parity above still holds)
    ids = {i.name: i for i in m.inputs}["input_ids"]
    assert ids.shape == ("batch", "seq") and ids.bounds == {"batch": [1, 4], "seq": [8, 32]}
    assert m.files_with_role("program") == ["model.pte"]
    raw = json.loads((bundles["fp32"].bundle_dir / "manifest.json").read_text())
    assert raw["backend"] == "executorch"


def test_mask_is_a_program_input(bundles):
    from bundle_runtime import open_session
    from fedhft.layout import init_trainable

    session = open_session(bundles["fp32"].bundle_dir)
    m = session.manifest
    state = init_trainable(m.plan, m.dims, 3)
    state = {k: (v + 0.5 if k.endswith("lora_B") else v) for k, v in state.items()}
    state["head.weight"] = state["head.weight"] * 50  # the init head (std 0.02) all but hides the encoder
    session.set_state(state)
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 2000, size=(2, 16), dtype=np.int64)
    losses = []
    for mask in (np.ones(m.mask_length, np.float32), np.zeros(m.mask_length, np.float32)):
        session.begin_round(mask, lr=0.0)
        losses.append(session.train_step(ids, np.ones_like(ids), np.array([0, 1])))
    assert abs(losses[0] - losses[1]) > 1e-3  # rounding is ~1e-7


def test_manifest_describes_the_optimizer_method(bundles):
    m = load_manifest(bundles["fp32"].bundle_dir)
    spec, n = m.backend_extras["optimizer_method"], len(m.trainable)
    assert spec["name"] == "adamw_step" and spec["count"] == n
    assert [(g["name"], g["offset"]) for g in spec["inputs"]] == [
        ("params", 0),
        ("grads", n),
        ("exp_avg", 2 * n),
        ("exp_avg_sq", 3 * n),
        ("step", 4 * n),
        ("lr", 4 * n + 1),
    ]
    assert [(g["name"], g["offset"]) for g in spec["outputs"]] == [("params", 0), ("exp_avg", n), ("exp_avg_sq", 2 * n)]
    assert spec["hyperparameters"] == {
        "betas": list(m.optimizer.betas),
        "eps": m.optimizer.eps,
        "weight_decay": m.optimizer.weight_decay,
    }
    assert spec["state"]["exp_avg"] == "zeros" and spec["state"]["first_step"] == 1


def _program_adamw(bundle_dir):
    from executorch.extension.pybindings.portable_lib import _load_for_executorch_from_buffer

    data = (bundle_dir / "model.pte").read_bytes()
    module = _load_for_executorch_from_buffer(data)
    return data, module  # the runtime borrows ``data``: the caller keeps both alive


def test_adamw_step_method_is_torch_adamw(bundles):
    """The shipped method alone, 20 steps, against torch.optim.AdamW fed the same gradients (gradient scales
    1e-4..1, row 0 always zero as a masked row is): equal to float rounding, and the zero rows never move."""
    import torch

    m = load_manifest(bundles["fp32"].bundle_dir)
    _data, module = _program_adamw(bundles["fp32"].bundle_dir)
    gen = torch.Generator().manual_seed(0)
    shapes = [tuple(s.shape) for s in m.trainable]
    start = [torch.randn(s, generator=gen) * 0.1 for s in shapes]
    ref = [torch.nn.Parameter(p.clone()) for p in start]
    lr, n = 5e-3, len(shapes)
    opt = torch.optim.AdamW(
        ref, lr=lr, betas=m.optimizer.betas, eps=m.optimizer.eps, weight_decay=m.optimizer.weight_decay
    )
    ours, exp_avg, exp_avg_sq = list(start), [torch.zeros(s) for s in shapes], [torch.zeros(s) for s in shapes]
    worst = 0.0
    for step in range(1, 21):
        grads = [torch.randn(s, generator=gen) * 10.0 ** -(step % 5) for s in shapes]
        for g in grads:
            g[0] = 0.0
        for p, g in zip(ref, grads):
            p.grad = g.clone()
        opt.step()
        out = module.run_method(
            "adamw_step",
            (*ours, *grads, *exp_avg, *exp_avg_sq, torch.tensor([step]), torch.tensor([lr], dtype=torch.float64)),
        )
        ours, exp_avg, exp_avg_sq = list(out[:n]), list(out[n : 2 * n]), list(out[2 * n :])
        worst = max(worst, max(float((a - b.detach()).abs().max()) for a, b in zip(ours, ref)))
    assert worst <= 1e-7, worst  # 20 steps of lr 5e-3 moved the weights ~0.1: this is float32 rounding
    for a, b in zip(ours, start):
        assert torch.equal(a[0], b[0])


def test_adamw_step_module_with_weight_decay():
    """Decoupled weight decay as torch does it, on the eager module the program is exported from."""
    import torch

    from export._et_adamw import AdamWStep

    gen = torch.Generator().manual_seed(1)
    shapes = [(4, 8), (3,)]
    ref = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    ours = [p.detach().clone() for p in ref]
    opt = torch.optim.AdamW(ref, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
    step_fn = AdamWStep(len(shapes), weight_decay=0.1)
    m = [torch.zeros(s) for s in shapes]
    v = [torch.zeros(s) for s in shapes]
    for step in range(1, 11):
        grads = [torch.randn(s, generator=gen) for s in shapes]
        for p, g in zip(ref, grads):
            p.grad = g.clone()
        opt.step()
        out = step_fn(*ours, *grads, *m, *v, torch.tensor([step]), torch.tensor([1e-2], dtype=torch.float64))
        ours, m, v = list(out[:2]), list(out[2:4]), list(out[4:])
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=1e-7)


def test_manifest_md_documents_every_executorch_extra(bundles):
    from tests.unit.test_manifest_doc import undocumented_extras

    for bundle in bundles.values():
        assert undocumented_extras("executorch", load_manifest(bundle.bundle_dir).backend_extras) == []


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_program_ships_the_initial_weights_the_manifest_states(bundles, precision):
    """The trainable parameters in model.pte are ``init_trainable(plan, dims, seed)`` with the seed the
    manifest records, bit for bit. A freshly opened session's state is the program's own parameters
    (read after one forward_backward, which moves nothing)."""
    from bundle_runtime import open_session
    from fedhft.layout import init_trainable

    bundle = bundles[precision].bundle_dir
    initial = json.loads((bundle / "manifest.json").read_text())["initial_weights"]
    assert initial["scheme"] == "fedhft.layout.init_trainable" and initial["shipped_in"] == "model.pte"
    session = open_session(bundle)
    m = session.manifest
    expected = init_trainable(m.plan, m.dims, initial["seed"])
    shipped = session.get_state()
    assert list(shipped) == [spec.name for spec in m.trainable]
    for name, value in shipped.items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)

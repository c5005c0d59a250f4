"""ExecuTorchSession: the program's own AdamW step, round semantics (fresh AdamW per mask), state round trips,
shapes, bad bundles."""

import dataclasses
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("executorch", reason="the executorch extra is missing: pip install 'fedhft[executorch]'")
pytest.importorskip("torch", reason="exporting the test bundle needs torch")

from devices import AdapterPlan  # noqa: E402
from bundle_runtime import open_session  # noqa: E402
from fedhft.layout import init_trainable, mask_layout  # noqa: E402
from tests.unit.edge_runtime.session_samples import half_mask, token_batch  # noqa: E402
from fedhft.manifest import BundleError, file_entry, load_manifest, write_manifest  # noqa: E402

# depth 1 keeps the joint graph (and the export time) small; int8 exercises the dequantizing backbone.
REPO = Path(__file__).resolve().parents[3]
PLAN = AdapterPlan(depth=1, ranks=(4,), mask_density=0.5, precision="int8", max_seq_len=16, batch_size=4)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from export import export_bundle

    out = tmp_path_factory.mktemp("et-session")
    return export_bundle("tiny", 2, "t", PLAN, "executorch", out, progress=lambda m: None).bundle_dir


@pytest.fixture(scope="module")
def session(bundle):
    return open_session(bundle, threads=1)


def _start(manifest, seed=1):
    state = init_trainable(manifest.plan, manifest.dims, seed)
    return {k: (v + 0.02 if k.endswith("lora_B") else v) for k, v in state.items()}


def test_state_round_trip_is_exact_and_copies(session):
    state = _start(session.manifest)
    session.set_state(state)
    got = session.get_state()
    assert list(got) == [s.name for s in session.manifest.trainable]
    for k in state:
        np.testing.assert_array_equal(got[k], state[k])
    got["head.bias"][:] = 99.0  # a copy: the runtime's tensor must not change
    assert session.get_state()["head.bias"].max() < 99.0


def test_no_optimizer_state_leaks_across_mask_changes(session):
    m = session.manifest
    start = _start(m)
    session.set_state(start)
    session.begin_round(half_mask(m, 0), lr=1e-2)
    for seed in range(3):
        session.train_step(*token_batch(seed))
    mid = session.get_state()
    session.begin_round(half_mask(m, 1), lr=1e-2)  # the rows trained in round 1 are now masked off
    for seed in range(3):
        session.train_step(*token_batch(seed))
    end = session.get_state()
    for s in mask_layout(m.plan, m.dims):
        off = np.arange(0, s.rows, 2)
        assert np.abs(mid[s.b_name][off] - start[s.b_name][off]).max() > 0  # they moved in round 1 ...
        np.testing.assert_array_equal(end[s.b_name][off], mid[s.b_name][off])  # ... and not at all in round 2


def test_logits_do_not_change_weights_and_chunk_large_batches(session):
    m = session.manifest
    session.set_state(_start(m))
    session.begin_round(half_mask(m, 0), lr=1e-2)
    before = session.get_state()
    ids, attn, _ = token_batch(5, batch=6, seq=5)  # more rows than the program's batch, fewer tokens than MIN_SEQ
    logits = session.logits(ids, attn)
    assert logits.shape == (6, m.dims.num_labels) and logits.dtype == np.float32
    np.testing.assert_allclose(session.logits(ids[:2], attn[:2]), logits[:2], atol=1e-6)  # GEMM blocking rounds
    after = session.get_state()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_dynamic_shapes_accept_smaller_batches_and_reject_too_large(session):
    m = session.manifest
    session.set_state(_start(m))
    session.begin_round(half_mask(m, 0), lr=1e-3)
    assert np.isfinite(session.train_step(*token_batch(1, batch=1, seq=16)))
    assert np.isfinite(session.train_step(*token_batch(1, batch=3, seq=9)))
    with pytest.raises(ValueError, match="outside this bundle's program"):
        session.train_step(*token_batch(1, batch=5, seq=8))
    with pytest.raises(ValueError, match="truncate"):
        session.train_step(*token_batch(1, batch=2, seq=17))


def test_session_owns_the_program_bytes(bundle):
    """The runtime keeps a raw pointer into the .pte bytes without owning them: a session that let them
    be freed segfaulted at its next step. A child process, so that a crash fails this test only."""
    code = textwrap.dedent(f"""
        import gc, numpy as np
        from bundle_runtime import open_session
        from fedhft.layout import full_mask, init_trainable
        s = open_session({str(bundle)!r})
        gc.collect()
        junk = [bytearray(b"\\xff") * (1 << 20) for _ in range(64)]  # reuses whatever memory was freed
        m = s.manifest
        s.set_state(init_trainable(m.plan, m.dims, 0))
        s.begin_round(full_mask(m.plan, m.dims), 1e-3)
        ids = np.full((2, 8), 1500)
        print(s.train_step(ids, np.ones_like(ids), np.array([0, 1])))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert np.isfinite(float(proc.stdout.strip().splitlines()[-1]))


def test_train_step_needs_begin_round(bundle):
    fresh = open_session(bundle)
    with pytest.raises(RuntimeError, match="begin_round"):
        fresh.train_step(*token_batch())


def _corrupt_copy(bundle, dest, fix_digest: bool):
    shutil.copytree(bundle, dest)
    pte = dest / "model.pte"
    data = bytearray(pte.read_bytes())
    data[100:4000] = b"\x00" * 3900
    pte.write_bytes(bytes(data))
    if fix_digest:  # a bundle whose manifest was re-written to match the damaged file
        manifest = load_manifest(dest, verify_files=False)
        files = {**manifest.files, "model.pte": file_entry(dest, "model.pte", "program")}
        write_manifest(dest, dataclasses.replace(manifest, files=files))
    return dest


def test_corrupted_program_is_a_bundle_error(bundle, tmp_path):
    bad = _corrupt_copy(bundle, tmp_path / "bad", fix_digest=False)
    with pytest.raises(BundleError, match="sha256"):
        open_session(bad)
    with pytest.raises(BundleError, match="sha256"):  # checked even when the caller skips file digests
        open_session(bad, verify_files=False)


def test_program_the_runtime_rejects_is_a_bundle_error(bundle, tmp_path):
    bad = _corrupt_copy(bundle, tmp_path / "bad", fix_digest=True)
    with pytest.raises(BundleError, match="re-export"):
        open_session(bad)


def _with_optimizer(bundle, dest, **changes):
    """A copy of the bundle whose manifest states another optimizer placement or method."""
    shutil.copytree(bundle, dest)
    manifest = load_manifest(dest)
    extras = {
        **manifest.backend_extras,
        "optimizer_method": {**manifest.backend_extras["optimizer_method"], **changes.pop("method", {})},
    }
    write_manifest(
        dest,
        dataclasses.replace(
            manifest, optimizer=dataclasses.replace(manifest.optimizer, **changes), backend_extras=extras
        ),
    )
    return dest


def _train(session, start, rounds):
    losses = []
    session.set_state(start)
    for parity, lr in rounds:
        session.begin_round(half_mask(session.manifest, parity), lr=lr)
        losses += [session.train_step(*token_batch(seed)) for seed in range(6)]
    return losses, session.get_state()


def test_program_adamw_step_trains_like_torch_adamw(session, bundle, tmp_path):
    """N steps of the program's forward_backward + its adamw_step (what an app runs) against the same
    forward_backward + torch.optim.AdamW (a bundle that says the app runs the optimizer), over two rounds
    with a mask change: the same losses and weights to float rounding."""
    assert session._opt_method == "adamw_step" and session.manifest.optimizer.runs_in == "model.pte"
    torch_opt = open_session(_with_optimizer(bundle, tmp_path / "app", runs_in="app"), threads=1)
    assert torch_opt._opt_method is None
    rounds = [(0, 1e-2), (1, 5e-3)]
    start = _start(session.manifest)
    (la, sa), (lb, sb) = _train(session, start, rounds), _train(torch_opt, start, rounds)
    np.testing.assert_allclose(la, lb, rtol=0, atol=1e-6)
    for name in sa:  # measured <= 1e-6 after 40 steps (kernels round in another order than torch's addcdiv)
        np.testing.assert_allclose(sa[name], sb[name], rtol=0, atol=1e-5, err_msg=name)
    assert max(np.abs(sa[k] - start[k]).max() for k in sa) > 1e-2  # it trained


def test_a_manifest_naming_a_missing_optimizer_method_is_a_bundle_error(bundle, tmp_path):
    bad = _with_optimizer(bundle, tmp_path / "bad", method={"name": "sgd_step"})
    with pytest.raises(BundleError, match="re-export"):
        open_session(bad)


def test_the_runtime_alone_trains_like_the_session(session, bundle):
    """docs/DEPLOY.md's recipe with nothing but the runtime and manifest.json: a TrainingModule for the
    forward-backward, and a second, plain module over the same bytes for adamw_step (Android's TrainingModule
    runs only joint methods), fed by the manifest's offsets. It ends where the session ends."""
    import json

    import torch
    from executorch.extension.pybindings.portable_lib import _load_for_executorch_from_buffer
    from executorch.extension.training import _load_for_executorch_for_training_from_buffer

    raw = json.loads((bundle / "manifest.json").read_text())
    extras, spec = raw["backend_extras"], raw["backend_extras"]["optimizer_method"]
    to_fqn = {canon: fqn for fqn, canon in extras["param_to_canonical"].items()}
    order = [t["name"] for t in raw["trainable"]]
    data = (bundle / extras["program"]).read_bytes()  # both modules borrow it
    trainer, optimizer = _load_for_executorch_for_training_from_buffer(data), _load_for_executorch_from_buffer(data)
    mask = torch.from_numpy(half_mask(session.manifest, 0))
    batches = [tuple(torch.from_numpy(a) for a in token_batch(seed)) for seed in range(4)]
    start = _start(session.manifest)
    trainer.forward_backward(extras["method"], (*batches[0], mask))  # warm-up: parameters exist after it
    params = [trainer.named_parameters()[to_fqn[name]] for name in order]
    for p, name in zip(params, order):
        p.copy_(torch.from_numpy(start[name]))
    moments = [torch.zeros_like(p) for _ in range(2) for p in params]  # exp_avg then exp_avg_sq, fresh
    n, lr = spec["count"], 1e-2
    for step, batch in enumerate(batches, start=1):
        trainer.forward_backward(extras["method"], (*batch, mask))
        grads = [trainer.named_gradients()[to_fqn[name]] for name in order]
        out = optimizer.run_method(
            spec["name"], (*params, *grads, *moments, torch.tensor([step]), torch.tensor([lr], dtype=torch.float64))
        )
        for p, new in zip(params, out[:n]):
            p.copy_(new)
        moments = list(out[n : 3 * n])
    session.set_state(start)
    session.begin_round(half_mask(session.manifest, 0), lr=lr)
    for batch in batches:
        session.train_step(*(b.numpy() for b in batch))
    ours = session.get_state()
    for p, name in zip(params, order):
        np.testing.assert_array_equal(p.numpy(), ours[name], err_msg=name)

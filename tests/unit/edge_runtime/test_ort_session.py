"""OrtSession: round semantics (fresh optimizer per mask), state round trips, bad bundles, no torch."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime.training", reason="the ort extra is missing: pip install 'fedhft[ort]'")
pytest.importorskip("torch", reason="exporting the test bundle needs torch")

from devices import AdapterPlan  # noqa: E402
from bundle_runtime import open_session  # noqa: E402
from fedhft.layout import init_trainable, mask_layout  # noqa: E402
from tests.unit.edge_runtime.session_samples import half_mask, token_batch  # noqa: E402
from fedhft.manifest import BundleError  # noqa: E402

PLAN = AdapterPlan(depth=2, ranks=(4, 4), mask_density=0.5, max_seq_len=16, batch_size=4)
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from export import export_bundle

    out = tmp_path_factory.mktemp("ort-session")
    return export_bundle("tiny", 2, "t", PLAN, "ort", out, progress=lambda m: None).bundle_dir


def test_state_round_trips_exactly_and_survives_begin_round(bundle):
    session = open_session(bundle, threads=1)
    state = init_trainable(session.manifest.plan, session.manifest.dims, 3)
    state = {k: v + np.float32(0.01) for k, v in state.items()}
    session.set_state(state)
    for name, value in session.get_state().items():
        np.testing.assert_array_equal(value, state[name])
    session.begin_round(np.ones(session.manifest.mask_length, np.float32), 1e-3)
    np.testing.assert_array_equal(session.get_state()["head.weight"], state["head.weight"])


def test_mask_change_between_rounds_does_not_leak_adam_moments(bundle):
    session = open_session(bundle)
    m = session.manifest
    session.set_state(init_trainable(m.plan, m.dims, 1))
    batch = token_batch()
    session.begin_round(half_mask(m, 0), 1e-2)  # round 1 trains the even rows
    for _ in range(3):
        session.train_step(*batch)
    after1 = session.get_state()
    second = half_mask(m, 1)  # round 2 trains only the odd rows
    session.begin_round(second, 1e-2)
    for _ in range(3):
        session.train_step(*batch)
    after2 = session.get_state()
    for s in mask_layout(m.plan, m.dims):
        on = second[s.offset : s.offset + s.rows] == 1.0
        # Even rows carry Adam moments from round 1; a leaked optimizer would keep moving them.
        np.testing.assert_array_equal(after2[s.b_name][~on], after1[s.b_name][~on])
        assert np.abs(after2[s.b_name][on] - after1[s.b_name][on]).max() > 0  # odd rows did train


def test_logits_follow_the_weights_and_misuse_raises(bundle):
    session = open_session(bundle)
    ids, attn, labels = token_batch(seq=9)
    with pytest.raises(RuntimeError, match="begin_round"):
        session.train_step(ids, attn, labels)
    before = session.logits(ids, attn)
    assert before.shape == (4, 2) and before.dtype == np.float32
    session.begin_round(np.ones(session.manifest.mask_length, np.float32), 1e-2)
    losses = [session.train_step(ids, attn, labels) for _ in range(4)]
    assert losses[-1] < losses[0]
    assert not np.allclose(before, session.logits(ids, attn))
    with pytest.raises(ValueError, match="mask"):
        session.begin_round(np.ones(3, np.float32), 1e-2)
    with pytest.raises(ValueError, match="labels"):
        session.train_step(ids, attn, labels[:2])
    with pytest.raises(ValueError, match="state does not fit"):
        session.set_state({"head.bias": np.zeros(2, np.float32)})


@pytest.mark.parametrize("name", ["checkpoint", "training_model.onnx"])
def test_corrupted_file_raises_bundle_error(bundle, tmp_path, name):
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    data = (copy / name).read_bytes()
    (copy / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match=name):  # the manifest digest catches it first
        open_session(copy)
    with pytest.raises(BundleError, match="re-export"):  # and ORT's own load, without the digest check
        open_session(copy, verify_files=False)


NO_TORCH = """
import json, sys
if sys.argv[2] == "blocked":
    sys.modules["torch"] = None  # any `import torch` now raises ImportError: a device without torch
import numpy as np
from bundle_runtime import open_session
from fedhft.layout import init_trainable
s = open_session(sys.argv[1], threads=1)
m = s.manifest
s.set_state(init_trainable(m.plan, m.dims, 1))
s.begin_round(np.ones(m.mask_length, np.float32), 1e-2)
ids = np.arange(1000, 1032, dtype=np.int64).reshape(4, 8)
losses = [s.train_step(ids, np.ones_like(ids), np.array([0, 1, 0, 1])) for _ in range(3)]
heavy = sorted({k.split(".")[0] for k in sys.modules if k.split(".")[0] in ("transformers", "safetensors", "export")})
print(json.dumps({"losses": losses, "logits": s.logits(ids, np.ones_like(ids)).shape, "heavy": heavy,
                  "torch_loaded": sys.modules.get("torch") is not None}))
"""


@pytest.mark.parametrize("torch_mode", ["blocked", "installed"])
def test_session_runs_without_torch(bundle, torch_mode):
    """blocked: torch cannot be imported at all. installed: torch is importable but must not be
    imported (onnxruntime's own import would otherwise pull it in: seconds and hundreds of MB)."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(NO_TORCH), str(bundle), torch_mode],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not result["torch_loaded"] and result["heavy"] == [], result
    assert result["logits"] == [4, 2] and all(np.isfinite(result["losses"]))
    assert result["losses"][-1] < result["losses"][0]


def test_bundle_with_a_non_torch_optimizer_is_refused(bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    raw = json.loads((copy / "manifest.json").read_text())
    raw["backend_extras"]["optimizer"]["adam_mode"] = 1  # ORT's default (HF) AdamW
    (copy / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="torch AdamW"):
        open_session(copy)

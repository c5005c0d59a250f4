"""The evaluator on an int8 tier's backbone: a client's model scored with the forward its bundle runs."""

from __future__ import annotations

import numpy as np
import pytest

from devices import AdapterPlan

PLAN = AdapterPlan(depth=2, ranks=(4, 4), mask_density=0.5, max_seq_len=16, batch_size=4, precision="int8")


@pytest.fixture(scope="module")
def int8_session(tmp_path_factory):
    pytest.importorskip("torch")
    from bundle_runtime import open_session
    from export import export_bundle

    out = tmp_path_factory.mktemp("int8-bundle")
    return open_session(
        export_bundle("tiny", 2, "unit8", PLAN, "torch", out, progress=lambda s: None).bundle_dir, threads=1
    )


def _client(session, seed=0):
    from fedhft.layout import init_trainable, mask_from_rows, rows_per_module

    m = session.manifest
    rng = np.random.default_rng(seed)
    state = {
        k: v + 0.05 * rng.standard_normal(v.shape).astype(np.float32)
        for k, v in init_trainable(m.plan, m.dims, seed).items()
    }
    rows = {s.b_name: rng.choice(s.rows, rows_per_module(m.plan, s.rows), replace=False) for s in m.mask_layout}
    ids = rng.integers(1000, 5000, size=(6, 16)).astype(np.int64)
    attn = np.ones_like(ids)
    attn[:, 12:] = 0
    return state, mask_from_rows(m.plan, m.dims, rows), ids, attn


def test_int8_evaluator_scores_what_the_int8_bundle_computes(int8_session):
    from simulate import Evaluator
    from simulate._evaluate import client_state

    state, mask, ids, attn = _client(int8_session)
    int8_session.set_state(state)
    int8_session.begin_round(mask, 1e-3)
    device = int8_session.logits(ids, attn)
    dense = client_state(int8_session.manifest.plan, int8_session.manifest.dims, state, mask)
    on_int8 = Evaluator("tiny", threads=1, precision="int8").logits(dense, ids, attn)
    on_fp32 = Evaluator("tiny", threads=1).logits(dense, ids, attn)
    int8_gap, fp32_gap = np.abs(on_int8 - device).max(), np.abs(on_fp32 - device).max()
    assert int8_gap < 1e-4, int8_gap  # float rounding of (W + dW) x against W x + B (A x)
    assert fp32_gap > 10 * int8_gap, (fp32_gap, int8_gap)  # the fp32 backbone is another model


def test_an_unknown_precision_is_refused_with_the_choices():
    from simulate import Evaluator

    with pytest.raises(ValueError, match=r"precision='fp16'.*\['fp32', 'int8'\]"):
        Evaluator("tiny", precision="fp16")

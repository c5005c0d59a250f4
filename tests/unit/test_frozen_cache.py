"""The torch session's frozen-layer cache (``EagerSession.cache_frozen``) changes no bit of training."""

from __future__ import annotations

import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from devices import AdapterPlan  # noqa: E402
from fedhft.layout import init_trainable, mask_from_rows, rows_per_module  # noqa: E402
from fedhft.protocol import Hyper, Task  # noqa: E402

SEQ, BATCH = 16, 8


def _bundle(tmp_path_factory, precision: str):
    from export import export_bundle

    plan = AdapterPlan(depth=2, ranks=(4, 8), mask_density=0.5, max_seq_len=SEQ, batch_size=BATCH, precision=precision)
    out = tmp_path_factory.mktemp(f"frozen-{precision}")
    return export_bundle("tiny:layers=4", 2, "unit", plan, "torch", out, progress=lambda s: None).bundle_dir


@pytest.fixture(scope="module", params=["int8", "fp32"])
def bundle(request, tmp_path_factory):
    return _bundle(tmp_path_factory, request.param)


def _encoded(n: int, seed: int):
    """Random token ids of random lengths (padded with 0), as a device's tokenizer would make them."""
    from edge_runtime import Encoded

    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, SEQ + 1, n)
    attn = (np.arange(SEQ)[None, :] < lengths[:, None]).astype(np.int64)
    ids = np.where(attn == 1, rng.integers(1000, 2000, (n, SEQ)), 0).astype(np.int64)
    return Encoded(ids, attn, rng.integers(0, 2, n).astype(np.int64))


def _task(session, round_: int) -> Task:
    m = session.manifest
    rng = np.random.default_rng(round_)
    rows = {s.b_name: rng.choice(s.rows, rows_per_module(m.plan, s.rows), replace=False) for s in m.mask_layout}
    return Task(
        "f",
        "c",
        round_,
        f"t{round_}",
        m.tier,
        m.backend,
        "b",
        "0" * 64,
        m.plan.to_dict(),
        Hyper(3e-2, 6, 0, BATCH, SEQ),
        time.time() + 300,
        init_trainable(m.plan, m.dims, round_),
        mask_from_rows(m.plan, m.dims, rows),
    )


def _rounds(session, data, rounds: int = 3) -> list:
    from edge_runtime import TrainBudget, train_round

    out = []
    for r in range(rounds):
        res = train_round(session, _task(session, r), data, TrainBudget())
        out.append(({k: v for k, v in res.metrics.items() if not k.endswith("_s") and "rss" not in k}, res.trained))
    return out


def test_pooled_from_the_frozen_part_is_the_full_forward(bundle):
    """Golden: the adapted layers run from ``hidden_below`` give the full forward's bits."""
    from bundle_runtime import open_session

    model = open_session(bundle, threads=1).model
    assert model.first_adapted == 2
    data = _encoded(8, 1)
    ids, attn = torch.as_tensor(data.input_ids), torch.as_tensor(data.attention_mask)
    mask = torch.ones(sum(rows for _, rows in model._mask_slices))
    with torch.no_grad():
        full = model.logits(ids, attn, mask)
        split = model.logits(ids, attn, mask, model.hidden_below(ids, attn))
    assert torch.equal(full, split)
    assert len(model.encoder.encoder.layer) == 4  # the layer list is restored


def test_cached_session_trains_bit_identically(bundle):
    """Three rounds of train_round (6 steps of 8 over 30 examples: batches of 8 and short ones,
    and an 11-example validation part scored before and after) with and without the cache."""
    from edge_runtime import PreparedData
    from bundle_runtime import open_session

    data = PreparedData(_encoded(30, 2), _encoded(11, 3))
    plain = open_session(bundle, threads=1)
    cached = open_session(bundle, threads=1)
    cached.cache_frozen(max_mb=64)
    want, got = _rounds(plain, data), _rounds(cached, data)
    for (m_want, s_want), (m_got, s_got) in zip(want, got):
        assert m_got == m_want
        assert all(np.array_equal(s_got[k], s_want[k]) for k in s_want)
    stats = cached.frozen_stats
    assert stats["hits"] > 0 and stats["misses"] > 0 and stats["mb"] > 0


def test_full_cache_stops_storing_and_stays_exact(bundle):
    from edge_runtime import PreparedData
    from bundle_runtime import open_session

    data = PreparedData(_encoded(30, 4), _encoded(5, 5))
    plain, cached = open_session(bundle, threads=1), open_session(bundle, threads=1)
    cached.cache_frozen(max_mb=0)
    assert [m for m, _ in _rounds(cached, data, 2)] == [m for m, _ in _rounds(plain, data, 2)]
    assert cached.frozen_stats["mb"] == 0 and cached.frozen_stats["hits"] == 0


def test_filled_cache_serves_every_training_batch_and_stays_exact(bundle):
    """Rows cached in batches of 8 (the last one filled up with copies) give the bits that the
    random training batches of 8 compute; only the validation part's batches miss, once each."""
    from edge_runtime import PreparedData
    from bundle_runtime import open_session

    data = PreparedData(_encoded(32, 6), _encoded(11, 7))
    plain, cached = open_session(bundle, threads=1), open_session(bundle, threads=1)
    cached.cache_frozen(max_mb=64)
    cached.cache_frozen_rows(data.train.input_ids[:29], data.train.attention_mask[:29], BATCH)
    cached.cache_frozen_rows(data.train.input_ids, data.train.attention_mask, BATCH)  # the 3 missing rows
    want, got = _rounds(plain, data), _rounds(cached, data)
    assert [m for m, _ in got] == [m for m, _ in want]
    assert all(np.array_equal(g[1][k], w[1][k]) for g, w in zip(got, want) for k in w[1])
    assert cached.frozen_stats["misses"] == 2  # the validation part's two batch shapes (8 and 3), first round

"""FlexLoRA's dense math (the truncated SVD of each site's average, the clients' B @ A) runs on one
BLAS thread, as FedHFT's, and the limit changes no bit of what it computes."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from fedhft.layout import ModelDims
from server.strategies import _base, _flexlora, get_strategy
from tests.unit.server.strategies._helpers import make_clients, run_round

#: Large enough that a multi-threaded BLAS would split the products.
DIMS = ModelDims(num_layers=3, hidden=96, intermediate=192, num_labels=3)


def _two_rounds() -> list:
    s = get_strategy("flexlora", dims=DIMS, seed=5)
    clients = make_clients(2)
    out = []
    for r in range(2):
        assignments, state = run_round(s, r, clients, lambda c: DIMS)
        out += [a.start_state for a in assignments.values()] + [state.global_state]
    return out + [s.preview(clients[0]).start_state]


def _numpy_blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas" and "numpy" in i["filepath"]]


def test_the_svd_and_the_products_run_on_one_blas_thread(monkeypatch):
    pytest.importorskip("threadpoolctl")
    seen = []
    real_svd, real_delta = _base.truncated_svd, _flexlora.lora_delta

    def svd(*args, **kw):
        seen.append(("svd", _numpy_blas_threads()))
        return real_svd(*args, **kw)

    def delta(*args, **kw):
        seen.append(("delta", _numpy_blas_threads()))
        return real_delta(*args, **kw)

    monkeypatch.setattr(_base, "truncated_svd", svd)
    monkeypatch.setattr(_flexlora, "lora_delta", delta)
    _two_rounds()
    assert {kind for kind, _ in seen} == {"svd", "delta"}
    assert all(threads and set(threads) == {1} for _, threads in seen), seen


def test_the_limit_changes_no_bit(monkeypatch):
    limited = _two_rounds()
    monkeypatch.setattr(_flexlora, "one_blas_thread", contextlib.nullcontext)
    free = _two_rounds()
    assert len(limited) == len(free)
    for got, want in zip(limited, free):
        assert got.keys() == want.keys()
        for name in want:
            assert got[name].dtype == want[name].dtype and np.array_equal(got[name], want[name]), name

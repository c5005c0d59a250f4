"""Client splits: Dirichlet label skew, natural keys, iid."""

from __future__ import annotations

import numpy as np
import pytest

from simulate import PartitionError
from simulate._partition import dirichlet, iid, label_histogram, natural, partition


def _labels(n=1000, k=4, seed=0):
    return np.random.default_rng(seed).integers(0, k, n)


def _check_disjoint_cover(parts, n):
    allidx = np.concatenate(parts)
    assert len(allidx) == n and len(np.unique(allidx)) == n


def test_dirichlet_is_deterministic_and_covers_everything():
    y = _labels()
    a, b = dirichlet(y, 10, 0.5, seed=3), dirichlet(y, 10, 0.5, seed=3)
    assert all(np.array_equal(x, z) for x, z in zip(a, b))
    _check_disjoint_cover(a, len(y))
    assert min(len(p) for p in a) >= 4
    c = dirichlet(y, 10, 0.5, seed=4)
    assert any(not np.array_equal(x, z) for x, z in zip(a, c))


def _skew(y, parts, k):
    """Mean over clients of the largest class share: 1/k when iid, 1 when one class per client."""
    hist = np.asarray(label_histogram(y, parts, k), float)
    return float(np.mean(hist.max(1) / hist.sum(1)))


def test_small_alpha_skews_labels_more_than_large_alpha():
    y = _labels(4000, 4)
    low, high = _skew(y, dirichlet(y, 8, 0.1, 0), 4), _skew(y, dirichlet(y, 8, 100.0, 0), 4)
    assert low > 0.6 > 0.35 > high  # iid would be 0.25


def test_dirichlet_proportions_follow_alpha_in_expectation():
    # With a large alpha every client gets about 1/clients of every class.
    y = _labels(6000, 3)
    hist = np.asarray(label_histogram(y, dirichlet(y, 6, 1000.0, 1), 3), float)
    share = hist / hist.sum(0, keepdims=True)
    assert np.allclose(share, 1 / 6, atol=0.03)


def test_dirichlet_tops_up_tiny_clients():
    y = np.asarray([0] * 30 + [1] * 30)
    parts = dirichlet(y, 10, 0.01, seed=0, min_size=4, max_tries=2)
    assert min(len(p) for p in parts) >= 4
    _check_disjoint_cover(parts, 60)


def test_natural_many_keys_keeps_keys_whole_and_balances():
    keys = [f"movie{i % 50}" for i in range(1000)]
    parts, groups = natural(keys, 8, seed=0)
    _check_disjoint_cover(parts, 1000)
    owners = {}
    for c, p in enumerate(parts):
        for i in p:
            owners.setdefault(keys[i], set()).add(c)
    assert all(len(o) == 1 for o in owners.values())  # no key split over clients
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 20
    assert len(groups) == 8


def test_natural_few_keys_forms_groups():
    keys = ["books"] * 40 + ["dvd"] * 40 + ["kitchen"] * 40 + ["electronics"] * 40
    parts, groups = natural(keys, 12, seed=0)
    _check_disjoint_cover(parts, 160)
    assert groups == ["books", "dvd", "electronics", "kitchen"] * 3
    for p, g in zip(parts, groups):
        assert {keys[i] for i in p} == {g}


def test_natural_without_keys_says_what_to_do():
    with pytest.raises(PartitionError, match="partition=dirichlet"):
        natural([None, None], 2, 0)


def test_iid_and_errors():
    parts = iid(100, 7, 0)
    _check_disjoint_cover(parts, 100)
    with pytest.raises(PartitionError, match="raise train_size"):
        dirichlet(np.zeros(10, int), 5, 1.0, 0)
    with pytest.raises(PartitionError, match="alpha"):
        dirichlet(_labels(), 5, 0.0, 0)
    with pytest.raises(PartitionError, match="use one of"):
        partition("shards", [0, 1], [None, None], 2, 1.0, 0)

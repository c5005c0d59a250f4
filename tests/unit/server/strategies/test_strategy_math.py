"""Golden values for the pure math in server.strategies._math / _base.Sums (hand-computed)."""

import numpy as np
import pytest

from server.strategies._base import Sums
from server.strategies._math import (
    count_sketch,
    explore_count,
    masked_row_average,
    mixture,
    pad_rank,
    select_rows,
    sparsify_membership,
    svd_refactor,
    truncate_rank,
    weighted_mean,
)


def test_weighted_mean_golden():
    out = weighted_mean([np.array([1.0, 2.0]), np.array([3.0, 4.0])], [1, 3])
    np.testing.assert_allclose(out, [2.5, 3.5])


def test_weighted_mean_rejects_bad_weights():
    with pytest.raises(ValueError, match="positive sum"):
        weighted_mean([np.ones(2)], [0])


def test_pad_and_truncate_rank_golden():
    a, b = np.array([[1.0, 2.0]]), np.array([[3.0], [4.0]])
    pa, pb = pad_rank(a, b, 3)
    np.testing.assert_array_equal(pa, [[1, 2], [0, 0], [0, 0]])
    np.testing.assert_array_equal(pb, [[3, 0, 0], [4, 0, 0]])
    np.testing.assert_array_equal(pb @ pa, b @ a)
    ta, tb = truncate_rank(np.array([[1.0, 2.0], [5.0, 6.0]]), np.array([[3.0, 7.0], [4.0, 8.0]]), 1)
    np.testing.assert_array_equal(ta, [[1, 2]])
    np.testing.assert_array_equal(tb, [[3], [4]])


def test_svd_refactor_golden_scale_and_truncation():
    delta = np.array([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    a, b = svd_refactor(delta, rank=1, scale=4.0)
    # Best rank-1 part is 3 * e0 e0^T; each factor carries sqrt(3 / 4) = 0.8660254.
    np.testing.assert_allclose(np.abs(a), [[0.8660254, 0, 0]], atol=1e-6)
    np.testing.assert_allclose(np.abs(b), [[0.8660254], [0]], atol=1e-6)
    np.testing.assert_allclose(4.0 * b @ a, [[3, 0, 0], [0, 0, 0]], atol=1e-6)
    a2, b2 = svd_refactor(delta, rank=2, scale=0.5)
    np.testing.assert_allclose(0.5 * b2 @ a2, delta, atol=1e-6)


def test_svd_refactor_zero_delta_keeps_trainable_init():
    fill = np.array([[0.1, 0.2], [0.3, 0.4]])
    a, b = svd_refactor(np.zeros((3, 2)), rank=2, scale=1.0, fill_a=fill)
    np.testing.assert_allclose(a, fill, atol=1e-7)
    np.testing.assert_array_equal(b, np.zeros((3, 2)))


def test_svd_refactor_rank_deficient_fills_only_missing_components():
    fill = np.array([[9.0, 9.0], [0.5, -0.5]])
    a, b = svd_refactor(np.array([[2.0, 0.0], [0.0, 0.0]]), rank=2, scale=2.0, fill_a=fill)
    np.testing.assert_allclose(np.abs(a[0]), [1, 0], atol=1e-6)  # sqrt(2 / 2) = 1
    np.testing.assert_allclose(a[1], [0.5, -0.5])
    np.testing.assert_allclose(b[:, 1], [0, 0])
    np.testing.assert_allclose(2.0 * b @ a, [[2, 0], [0, 0]], atol=1e-6)


def test_svd_refactor_with_an_a_row_norm_golden():
    delta = np.array([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    fill = np.array([[7.0, 7.0, 7.0], [0.1, 0.2, 0.3], [-0.3, 0.2, 0.1]])
    a, b = svd_refactor(delta, rank=3, scale=4.0, fill_a=fill, a_row_norm=0.5)
    # Components 3 and 1: A's rows are 0.5 e0 and 0.5 e1; B's columns 3 / (4 * 0.5) = 1.5 and 1 / (4 * 0.5) = 0.5.
    np.testing.assert_allclose(np.abs(a[:2]), [[0.5, 0, 0], [0, 0.5, 0]], atol=1e-6)
    np.testing.assert_allclose(np.abs(b[:, :2]), [[1.5, 0], [0, 0.5]], atol=1e-6)
    np.testing.assert_allclose(a[2], fill[2], atol=1e-7)  # the zero component keeps the fill row and B = 0
    np.testing.assert_array_equal(b[:, 2], [0, 0])
    np.testing.assert_allclose(4.0 * b @ a, delta, atol=1e-6)  # the same product as the balanced factors
    a_bal, b_bal = svd_refactor(delta, rank=3, scale=4.0, fill_a=fill)
    np.testing.assert_allclose(4.0 * b_bal @ a_bal, 4.0 * b @ a, atol=1e-6)


def test_masked_row_average_golden():
    v1 = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    v2 = np.array([[5.0, 5.0], [6.0, 6.0], [7.0, 7.0]])
    out = masked_row_average([v1, v2], [np.array([1, 1, 0]), np.array([0, 1, 0])], [1.0, 3.0], np.full((3, 2), 9.0))
    np.testing.assert_allclose(out, [[1, 1], [5, 5], [9, 9]])  # row 1: (2 + 3*6) / 4 = 5


def test_sums_grow_rank_golden():
    s = Sums()
    s.add("A", np.array([[1.0, 2.0]]), np.array([[1.0]]), full_axes=(0,))
    s.add("A", np.array([[3.0, 4.0], [5.0, 6.0]]), 3.0 * np.ones((2, 1)), full_axes=(0,))
    out = s.result("A", np.full((3, 2), 7.0))
    # component 0: (1*[1,2] + 3*[3,4]) / 4; component 1: only the second; component 2: previous.
    np.testing.assert_allclose(out, [[2.5, 3.5], [5, 6], [7, 7]])


def test_sums_rejects_changing_weight_axes():
    s = Sums()
    s.add("k", np.ones((2, 2)), np.ones((2, 1)), full_axes=(0,))
    with pytest.raises(ValueError, match="weight axes"):
        s.add("k", np.ones((2, 2)), 1.0, full_axes=())


def test_explore_count_golden():
    assert explore_count(4, 8, 0.2) == 1  # ceil(0.8)
    assert explore_count(4, 8, 0.5) == 2
    assert explore_count(8, 8, 0.5) == 0  # every row is selected anyway
    assert explore_count(4, 8, 0.0) == 0
    assert explore_count(4, 8, 1e-6) == 1  # any positive fraction explores at least one row


def test_select_rows_exploits_energy_and_explores_stalest():
    energy = np.array([0.0, 5.0, 3.0, 5.0, 0.0, 1.0])
    stale = np.array([-1, 0, 0, 0, -1, 2])
    rng = np.random.default_rng(0)
    assert select_rows(energy, stale, 3, 0, rng).tolist() == [1, 2, 3]
    picked = select_rows(energy, stale, 3, 1, rng).tolist()
    assert picked in ([0, 1, 3], [1, 3, 4])  # top-2 energy + one never-trained row


def test_select_rows_zero_energy_is_random_not_first_rows():
    seen = {tuple(select_rows(np.zeros(8), np.full(8, -1), 2, 0, np.random.default_rng(s))) for s in range(20)}
    assert len(seen) > 3


def test_count_sketch_is_linear_and_signed_unit_on_basis():
    e = np.zeros(50)
    e[7] = 1.0
    sk = count_sketch(e, 8, seed=3)
    assert np.abs(sk).sum() == pytest.approx(1.0)
    x, y = np.arange(50.0), np.ones(50)
    np.testing.assert_allclose(count_sketch(x + 2 * y, 8, 3), count_sketch(x, 8, 3) + 2 * count_sketch(y, 8, 3))


def test_mixture_and_sparsify_golden():
    states = [{"w": np.array([1.0, 0.0])}, {"w": np.array([0.0, 4.0])}]
    np.testing.assert_allclose(mixture(states, [0.25, 0.75])["w"], [0.25, 3.0])
    np.testing.assert_allclose(
        sparsify_membership(np.array([[0.9995, 0.0005], [0.4, 0.6]]), 1e-3), [[1, 0], [0.4, 0.6]]
    )


def _orthonormal(n, k, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, k)))
    return q


def test_truncated_svd_randomized_path_recovers_known_spectrum():
    from server.strategies._math import truncated_svd

    u, v = _orthonormal(300, 3, 0), _orthonormal(200, 3, 1)
    m = u @ np.diag([5.0, 3.0, 1.0]) @ v.T  # singular values 5, 3, 1 by construction
    uu, s, vt = truncated_svd(m, 2, seed=4)  # 300x200 > 64: randomized range finder
    np.testing.assert_allclose(s[:3], [5, 3, 1], atol=1e-8)
    a, b = svd_refactor(m, 2, scale=2.0, svd=(uu, s, vt))
    best2 = u[:, :2] @ np.diag([5.0, 3.0]) @ v[:, :2].T
    np.testing.assert_allclose(2.0 * b.astype(np.float64) @ a, best2, atol=1e-5)


def test_truncated_svd_of_zero_is_empty():
    from server.strategies._math import truncated_svd

    u, s, vt = truncated_svd(np.zeros((100, 90)), 4)
    assert u.shape == (100, 0) and s.shape == (0,) and vt.shape == (0, 90)


def test_count_sketch_of_selected_rows_equals_sketch_of_dense_rows():
    from server.strategies._math import count_sketch_hashes

    x = np.zeros((6, 5))
    x[[1, 4]] = np.arange(10.0).reshape(2, 5)
    bucket, sign = count_sketch_hashes(x.shape, 8, seed=11)
    np.testing.assert_allclose(
        count_sketch(x[[1, 4]], 8, 0, hashes=(bucket[[1, 4]], sign[[1, 4]])), count_sketch(x, 8, 11)
    )


def test_sums_add_rows_golden():
    s = Sums()
    s.add_rows("d", (3, 2), np.array([0, 1]), np.array([[1.0, 1.0], [2.0, 2.0]]), 1.0)
    s.add_rows("d", (3, 2), np.array([1]), np.array([[6.0, 6.0]]), 3.0)
    np.testing.assert_allclose(s.result("d", np.full((3, 2), 9.0)), [[1, 1], [5, 5], [9, 9]])  # (2 + 18) / 4


def test_svd_cache_keeps_one_factorization_per_distinct_dw(monkeypatch):
    """Clients alternating between two clusters' dW reuse two factorizations, not one per client."""
    import numpy as np

    import server.strategies._base as base

    calls = []
    monkeypatch.setattr(base, "truncated_svd", lambda dw, width, seed: calls.append(dw.sum()) or ("svd", dw.sum()))
    cache = base.SvdCache(seed=0, limit=4)
    a, b = np.ones((8, 8)), np.full((8, 8), 2.0)
    got = [cache.get("layer0.query", dw, 4) for dw in (a, b, a.copy(), b.copy(), a)]
    assert len(calls) == 2 and got[0] == got[2] == got[4] and got[1] == got[3]
    for i in range(5):  # the limit holds; the least recently used goes first
        cache.get("layer0.query", np.full((8, 8), 10.0 + i), 4)
    assert len(cache.entries) == 4 and len(calls) == 7

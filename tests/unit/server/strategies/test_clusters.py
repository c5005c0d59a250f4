"""FedHFT client clustering, the pure math (``server.strategies._clusters``): golden recoveries of
synthetic update directions, minimum-SSE partitions checked exhaustively, degenerate inputs,
stable labels."""

import itertools

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from server.strategies._clusters import (
    align_labels,
    distinct_count,
    exact_coordinates,
    fit_memberships,
    kmeans,
    principal_projection,
    unit_rows,
)


def directions(k: int, dim: int, seed: int) -> np.ndarray:
    """k random unit directions (nearly orthogonal in high dimension)."""
    return unit_rows(np.random.default_rng([seed, 1]).standard_normal((k, dim)))


def synthetic_updates(groups: list[int], dim: int, seed: int, common: float, noise: float) -> np.ndarray:
    """One update per client: a component shared by every client (the task itself) + its group's
    direction + noise. With ``common`` large, all updates have a high cosine to each other."""
    rng = np.random.default_rng([seed, 2])
    shared = directions(1, dim, seed + 100)[0]
    dirs = directions(max(groups) + 1, dim, seed)
    return np.array([common * shared + dirs[g] + noise * rng.standard_normal(dim) / np.sqrt(dim) for g in groups])


@pytest.mark.parametrize("k,per,dim", [(2, 2, 16), (3, 2, 64), (4, 2, 770), (4, 3, 32), (5, 4, 128)])
@pytest.mark.parametrize("seed", range(4))
def test_recovers_distinct_directions_exactly(k, per, dim, seed):
    groups = [g for _ in range(per) for g in range(k)]  # interleaved, like the benchmark's clients
    x = synthetic_updates(groups, dim, seed, common=2.0, noise=0.3)
    cos = unit_rows(x) @ unit_rows(x).T
    assert cos[np.triu_indices(len(groups), 1)].min() > 0.5  # every pair looks alike in raw cosine
    probs, means = fit_memberships(x, k, seed=seed)
    assert probs.shape == (len(groups), k) and means.shape == (k, dim)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert adjusted_rand_score(groups, probs.argmax(axis=1)) == 1.0
    assert probs.max(axis=1).min() > 0.99  # separated groups: confident memberships
    assert len(set(probs.argmax(axis=1))) == k  # no empty, no merged component


def test_result_does_not_depend_on_the_seed_or_the_row_order():
    groups = [0, 1, 2, 3, 0, 1, 2, 3]
    x = synthetic_updates(groups, 770, 0, common=2.0, noise=0.4)
    perm = np.random.default_rng(5).permutation(8)
    for seed in range(6):
        labels = fit_memberships(x, 4, seed)[0].argmax(axis=1)
        assert adjusted_rand_score(groups, labels) == 1.0
        shuffled = fit_memberships(x[perm], 4, seed)[0].argmax(axis=1)
        assert adjusted_rand_score(np.asarray(groups)[perm], shuffled) == 1.0


def sse(x, labels):
    return sum(((x[labels == c] - x[labels == c].mean(axis=0)) ** 2).sum() for c in set(labels.tolist()))


def all_partitions(n: int, k: int):
    """Every labelling of n points with exactly k non-empty clusters (up to renaming)."""
    for labels in itertools.product(range(k), repeat=n - 1):
        full = np.array((0,) + labels)
        if len(set(full.tolist())) == k and all(full[i] <= max(full[:i], default=-1) + 1 for i in range(n)):
            yield full


@pytest.mark.parametrize("n,k,seed", [(7, 3, 0), (8, 4, 1), (8, 4, 2), (8, 3, 3), (8, 4, 4)])
def test_kmeans_finds_the_minimum_sse_partition(n, k, seed):
    """Checked against every partition: Lloyd alone stops in worse fixed points on such data."""
    x = np.random.default_rng(seed).standard_normal((n, 5))
    best = min(sse(x, p) for p in all_partitions(n, k))
    labels, centers, inertia = kmeans(x, k, seed)
    assert inertia == pytest.approx(best, rel=1e-9)
    assert sse(x, labels) == pytest.approx(best, rel=1e-9)
    assert len(set(labels.tolist())) == k


def test_identical_clients_form_one_cluster():
    x = np.tile(np.random.default_rng(0).standard_normal(32), (6, 1))
    probs, means = fit_memberships(x, 4, seed=0)
    np.testing.assert_array_equal(probs, np.tile([1.0, 0, 0, 0], (6, 1)))
    assert np.isfinite(means).all()
    np.testing.assert_allclose(means[0], unit_rows(x[:1])[0])
    # The same direction at different lengths is one cluster too (directions are clustered) ...
    probs, _ = fit_memberships(x * np.arange(1, 7)[:, None], 4, seed=0)
    assert (probs[:, 0] == 1.0).all()
    # ... and so is a fleet whose updates are all zero, or a single client.
    assert (fit_memberships(np.zeros((5, 8)), 3, seed=0)[0][:, 0] == 1.0).all()
    assert fit_memberships(np.ones((1, 8)), 3, seed=0)[0].tolist() == [[1.0, 0.0, 0.0]]
    assert fit_memberships(np.zeros((0, 8)), 3, seed=0)[0].shape == (0, 3)


def test_fewer_distinct_clients_than_clusters_leaves_the_rest_empty():
    d = directions(2, 16, 0)
    x = np.array([d[0], d[1], d[0], d[1], d[0]])
    probs, means = fit_memberships(x, 4, seed=0)
    labels = probs.argmax(axis=1)
    assert adjusted_rand_score([0, 1, 0, 1, 0], labels) == 1.0
    np.testing.assert_array_equal(probs[:, 2:], 0.0)  # unused components: membership 0, no NaN
    np.testing.assert_array_equal(means[2:], 0.0)
    assert distinct_count(x) == 2 and distinct_count(x, limit=1) == 1


def test_labels_follow_the_previous_memberships():
    groups = [0, 1, 2, 0, 1, 2]
    x = synthetic_updates(groups, 64, 3, common=1.0, noise=0.2)
    previous = np.eye(3)[[2, 0, 1, 2, 0, 1]]  # group g was cluster (g + 2) % 3 last round
    probs, means = fit_memberships(x, 3, seed=0, previous=previous)
    assert probs.argmax(axis=1).tolist() == [2, 0, 1, 2, 0, 1]
    # the means follow the same labels
    for g, c in enumerate([2, 0, 1]):
        np.testing.assert_allclose(means[c], unit_rows(x)[np.asarray(groups) == g].mean(axis=0), atol=1e-6)
    # uniform previous memberships (warm-up) say nothing: any order is fine, nothing crashes
    uniform = fit_memberships(x, 3, seed=0, previous=np.full((6, 3), 1 / 3))[0]
    assert adjusted_rand_score(groups, uniform.argmax(axis=1)) == 1.0
    assert align_labels(np.eye(3), None).tolist() == [0, 1, 2]


def test_warm_start_means_are_used_and_a_better_fit_still_wins():
    groups = [0, 1, 0, 1, 0, 1]
    x = synthetic_updates(groups, 32, 1, common=1.0, noise=0.2)
    _, means = fit_memberships(x, 2, seed=0)
    again, _ = fit_memberships(x, 2, seed=1, means_init=means)
    assert adjusted_rand_score(groups, again.argmax(axis=1)) == 1.0
    bad_init = np.array([unit_rows(x)[0], unit_rows(x)[0] + 1e-3])  # both at one point
    probs, _ = fit_memberships(x, 2, seed=1, means_init=bad_init)
    assert adjusted_rand_score(groups, probs.argmax(axis=1)) == 1.0


def test_unnormalized_features_and_an_ambiguous_client_get_a_soft_membership():
    x = np.array([[0.0, 0], [0.1, 0], [4.0, 0], [4.1, 0], [2.05, 0]])
    probs, _ = fit_memberships(x, 2, seed=0, normalize=False)
    assert adjusted_rand_score([0, 0, 1, 1], probs[:4].argmax(axis=1)) == 1.0
    assert probs[4].min() > 0.05  # halfway between the two groups: not forced into one


def test_exact_coordinates_keep_all_pairwise_distances():
    x = np.random.default_rng(0).standard_normal((6, 40))
    z, center, basis = exact_coordinates(x)
    assert z.shape[1] <= 5
    dist = lambda a: ((a[:, None] - a[None]) ** 2).sum(-1)  # noqa: E731
    np.testing.assert_allclose(dist(z), dist(x), atol=1e-9)
    np.testing.assert_allclose((x - center) @ basis, z, atol=1e-9)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="num_clusters"):
        fit_memberships(np.ones((3, 2)), 0, seed=0)
    with pytest.raises(ValueError, match="2-D"):
        fit_memberships(np.ones(3), 2, seed=0)


@pytest.mark.parametrize("dim", [32, 770])
@pytest.mark.parametrize("seed", range(10))
def test_two_clients_per_cluster_with_noisy_updates(dim, seed):
    """The benchmark's shape (4 groups x 2 clients, 4 clusters) with noise as large as 0.8 of the
    group signal: every seed must find the groups (a single-start per-component-covariance GMM,
    this module's previous fit, misses some of these)."""
    groups = [0, 1, 2, 3, 0, 1, 2, 3]
    x = synthetic_updates(groups, dim, seed, common=2.0, noise=0.8)
    assert adjusted_rand_score(groups, fit_memberships(x, 4, seed)[0].argmax(axis=1)) == 1.0


def test_principal_projection_keeps_each_rows_length():
    z = np.random.default_rng(3).standard_normal((50, 30))
    z -= z.mean(axis=0)
    zp, basis, residual = principal_projection(z, 8)
    assert zp.shape == (50, 8) and basis.shape == (30, 8)
    np.testing.assert_allclose(basis.T @ basis, np.eye(8), atol=1e-10)
    np.testing.assert_allclose((zp * zp).sum(1) + residual, (z * z).sum(1), atol=1e-9)
    same, none, zero = principal_projection(z, 30)
    assert same is z and none is None and not zero.any()


def test_a_large_fleet_clustered_in_a_projection_gets_the_full_space_memberships(seed=0):
    """1,200 clients x 1024 dims (exact coordinates keep all 1024): the default fit runs in the top
    40 principal dimensions (k=4, eps=0.1); with the projection turned off it runs in all 1024. Both
    must find the groups, with the same memberships."""
    groups = [g for _ in range(300) for g in range(4)]
    x = synthetic_updates(groups, 1024, seed, common=2.0, noise=3.0)
    projected = fit_memberships(x, 4, seed, n_init=4)[0]
    full = fit_memberships(x, 4, seed, n_init=4, max_dims=10**6)[0]
    assert adjusted_rand_score(groups, projected.argmax(axis=1)) == 1.0
    assert adjusted_rand_score(groups, full.argmax(axis=1)) == 1.0
    np.testing.assert_allclose(projected[:, align_labels(projected, full)], full, atol=1e-3)

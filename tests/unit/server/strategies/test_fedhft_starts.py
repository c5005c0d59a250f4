"""FedHFT's start factors: the cached path (one mixture, energy and SVD per distinct membership)
gives what the dense SVD of each client's own mixture gives, and never a stale factorization."""

import numpy as np

from devices import AdapterPlan
from fedhft.layout import ModelDims
from server.strategies import ClientInfo, get_strategy
from server.strategies._threads import one_blas_thread
from tests.unit.server.strategies._helpers import DIMS, make_clients, run_round

PLAN = AdapterPlan(depth=1, ranks=(2,), mask_density=0.5, alpha=4.0)  # scale 2


def _dense_truncation(dw: np.ndarray, rank: int) -> np.ndarray:
    u, s, vt = np.linalg.svd(dw.astype(np.float64), full_matrices=False)
    return (u[:, :rank] * s[:rank]) @ vt[:rank]


def _set_states(s, key, states):
    for cluster, dw in zip(s.clusters, states):
        cluster[key] = np.asarray(dw, np.float32)


def test_start_factors_equal_the_dense_svd_of_each_clients_own_mixture():
    """Golden: two clusters with known states, three clients with soft memberships. Each client's
    scale * B @ A is the best rank-2 approximation of ITS mixture (Eckart-Young, by a dense SVD),
    whether it computed the factorization or reused another client's."""
    dims = ModelDims(num_layers=1, hidden=4, intermediate=4, num_labels=1)
    s = get_strategy("fedhft", dims=dims, num_clusters=2, explore=0.0, per_cluster="all")  # a mixture per client
    clients = [ClientInfo(f"c{i}", "t", PLAN) for i in range(3)]
    s.configure(0, clients)  # creates the sites
    c0 = np.diag([4.0, 3.0, 2.0, 1.0])
    c1 = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 5], [0, 0, 5, 0]], np.float64)
    _set_states(s, "layer0.query.delta", (c0, c1))
    s.client_ids, s._index = [c.client_id for c in clients], {c.client_id: i for i, c in enumerate(clients)}
    s.memberships = np.array([[1.0, 0.0], [0.25, 0.75], [0.25, 0.75]])
    for a in (s.configure(0, clients), s.configure(0, clients)):  # the second configure is all cache hits
        for c, m in zip(clients, s.memberships):
            st = a[c.client_id].start_state
            got = 2.0 * st["layer0.query.lora_B"].astype(np.float64) @ st["layer0.query.lora_A"]
            np.testing.assert_allclose(got, _dense_truncation(m[0] * c0 + m[1] * c1, 2), atol=1e-5)
    # c0 alone: rank-2 truncation keeps the two largest diagonal entries
    st = a["c0"].start_state
    np.testing.assert_allclose(
        2.0 * st["layer0.query.lora_B"] @ st["layer0.query.lora_A"], np.diag([4.0, 3.0, 0.0, 0.0]), atol=1e-5
    )


def test_randomized_path_at_a_larger_size_matches_the_dense_svd():
    """Sites above 64 x 64 take the randomized range finder: for a mixture of rank <= its width it
    is exact, so the start product equals the dense SVD's truncation to float32 rounding."""
    dims = ModelDims(num_layers=1, hidden=96, intermediate=96, num_labels=2)
    s = get_strategy("fedhft", dims=dims, num_clusters=2, explore=0.0, per_cluster="all")  # a mixture per client
    c = ClientInfo("c", "t", PLAN)
    s.configure(0, [c])
    rng = np.random.default_rng(3)
    states = [rng.standard_normal((96, 6)) @ rng.standard_normal((6, 96)) for _ in range(2)]  # rank 6 each
    _set_states(s, "layer0.query.delta", states)
    s.cluster_weights = np.array([0.3, 0.7])
    st = s.configure(0, [c])["c"].start_state
    got = 2.0 * st["layer0.query.lora_B"].astype(np.float64) @ st["layer0.query.lora_A"]
    want = _dense_truncation(0.3 * states[0] + 0.7 * states[1], 2)
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max())


def test_cached_rounds_equal_uncached_rounds_bit_for_bit():
    """Three rounds with soft memberships: a strategy whose start cache is emptied before every
    client assigns exactly what the cached one assigns."""
    clients = make_clients(3)
    dims_of = lambda c: DIMS  # noqa: E731
    shift = lambda c: 0.03 * (int(c.client_id[-1]) % 3)  # noqa: E731  (some memberships shared, some soft)
    cached = get_strategy("fedhft", dims=DIMS, num_clusters=2, warmup_rounds=1)
    fresh = get_strategy("fedhft", dims=DIMS, num_clusters=2, warmup_rounds=1)
    original = fresh._start_site

    def uncached(key, m, rank):
        fresh._starts.entries.clear()
        return original(key, m, rank)

    fresh._start_site = uncached
    for r in range(3):
        a1, st1 = run_round(cached, r, clients, dims_of, head_shift=shift)
        a2, st2 = run_round(fresh, r, clients, dims_of, head_shift=shift)
        for cid in a1:
            assert np.array_equal(a1[cid].mask, a2[cid].mask)
            for name, v in a1[cid].start_state.items():
                assert np.array_equal(v, a2[cid].start_state[name]), (r, cid, name)
        for x, y in zip(st1.cluster_states, st2.cluster_states):
            assert all(np.array_equal(x[k], y[k]) for k in x)
    distinct = len({m.tobytes() for m in cached.memberships})
    assert 2 < distinct < len(clients)  # soft memberships, some of them shared (cache hits)


def test_a_restored_state_is_never_served_from_the_cache():
    clients = make_clients(1)
    dims_of = lambda c: DIMS  # noqa: E731
    s = get_strategy("fedhft", dims=DIMS, num_clusters=2, warmup_rounds=1)
    for r in range(2):
        run_round(s, r, clients, dims_of)
    saved = s.state_dict()
    run_round(s, 2, clients, dims_of)
    s.configure(3, clients)  # fills the cache from the round-3 states
    s.load_state_dict(*saved)
    other = get_strategy("fedhft", dims=DIMS, num_clusters=2, warmup_rounds=1)
    other.load_state_dict(*saved)
    got, want = s.configure(2, clients), other.configure(2, clients)
    for cid in want:
        assert got[cid].start_state.keys() == want[cid].start_state.keys()
        for name, v in want[cid].start_state.items():
            assert np.array_equal(got[cid].start_state[name], v), (cid, name)


def test_one_blas_thread_limits_numpys_blas_inside_and_restores_it_after():
    from threadpoolctl import threadpool_info

    def numpy_blas_threads():  # numpy's own BLAS (the one the strategies' math runs on)
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas" and "numpy" in i["filepath"]]

    before = numpy_blas_threads()
    assert before, "numpy's BLAS was not found by threadpoolctl"
    with one_blas_thread():
        with one_blas_thread():  # re-entrant: the inner exit keeps the limit
            pass
        assert numpy_blas_threads() == [1] * len(before)
    assert numpy_blas_threads() == before

"""FedHFT's global_model="shared": one more state, aggregated from every client's change, is the global model."""

from __future__ import annotations

import numpy as np
import pytest

from server.strategies import get_strategy
from tests.unit.server.strategies._helpers import DIMS, make_clients, run_round
from tests.unit.server.strategies.test_strategy_fedhft import grouped_clients, run_head_round


def _same(a: dict, b: dict, atol=1e-6):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=atol, err_msg=k)


def test_with_one_cluster_the_shared_state_is_the_cluster_state():
    clients = make_clients(2)
    mix = get_strategy("fedhft", dims=DIMS, num_clusters=1)
    shared = get_strategy("fedhft", dims=DIMS, num_clusters=1, global_model="shared")
    for r in range(3):
        a1, st1 = run_round(mix, r, clients, lambda c: DIMS)
        a2, st2 = run_round(shared, r, clients, lambda c: DIMS)
        _same(st1.global_state, st2.global_state)
        for cid in a1:  # what clients are given does not change: they start from their clusters
            _same(a1[cid].start_state, a2[cid].start_state, atol=0)


def test_before_clustering_the_shared_state_is_the_mixture():
    clients = make_clients(2)
    mix = get_strategy("fedhft", dims=DIMS, num_clusters=2, warmup_rounds=3)
    shared = get_strategy("fedhft", dims=DIMS, num_clusters=2, warmup_rounds=3, global_model="shared")
    for r in range(2):  # memberships are uniform until the first refit: the clusters are one state
        _, st1 = run_round(mix, r, clients, lambda c: DIMS)
        _, st2 = run_round(shared, r, clients, lambda c: DIMS)
        _same(st1.global_state, st2.global_state)


def test_after_clustering_the_shared_head_is_the_weighted_mean_of_every_clients_change():
    clients, group_of = grouped_clients(2, 4)
    s = get_strategy("fedhft", dims=DIMS, num_clusters=2, warmup_rounds=1, global_model="shared")
    push = {0: np.float32(0.5), 1: np.float32(-0.5)}
    for r in range(2):
        run_head_round(s, r, clients, lambda c: np.full((DIMS.num_labels, DIMS.hidden), push[group_of[c.client_id]]))
    assert len({tuple(np.round(s.membership(c.client_id))) for c in clients}) == 2  # two clusters formed
    before = {k: v.copy() for k, v in s.shared.items()}
    asg = s.configure(2, clients)
    st = run_head_round(s, 2, clients, lambda c: np.full((DIMS.num_labels, DIMS.hidden), push[group_of[c.client_id]]))
    weights = np.array([c.num_examples for c in clients], dtype=np.float64)
    moves = [run_head_round.heads[c.client_id] - asg[c.client_id].start_state["head.weight"] for c in clients]
    want = before["head.weight"] + np.tensordot(weights / weights.sum(), np.array(moves, np.float64), axes=1)
    np.testing.assert_allclose(st.global_state["head.weight"], want, atol=1e-5)
    mixture_head = sum(w * c["head.weight"] for w, c in zip(st.cluster_weights, st.cluster_states))
    assert not np.allclose(st.global_state["head.weight"], mixture_head, atol=1e-3)  # not the cluster mixture


def test_the_shared_state_is_saved_and_restored_and_the_option_is_in_the_config():
    clients = make_clients(1)
    s = get_strategy("fedhft", dims=DIMS, num_clusters=2, warmup_rounds=1, global_model="shared")
    for r in range(2):
        run_round(s, r, clients, lambda c: DIMS)
    assert s.config()["global_model"] == "shared"
    assert "global_model" not in get_strategy("fedhft", dims=DIMS).config()  # the default saves what it did
    tensors, meta = s.state_dict()
    again = get_strategy("fedhft", dims=DIMS, num_clusters=2, warmup_rounds=1, global_model="shared")
    again.load_state_dict(tensors, meta)
    _same(again.current().global_state, s.current().global_state, atol=0)


def test_an_unknown_global_model_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"global_model must be one of \('mixture', 'shared'\)"):
        get_strategy("fedhft", dims=DIMS, global_model="average")

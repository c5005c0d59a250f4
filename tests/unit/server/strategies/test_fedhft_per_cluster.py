"""FedHFT's per_cluster: "head" (the default) keeps one adapter state for every client and a head per cluster;
"all" (the paper) keeps both per cluster."""

from __future__ import annotations

import numpy as np
import pytest

from fedhft.layout import lora_names
from server.strategies import get_strategy
from tests.unit.server.strategies._helpers import DIMS, make_clients, run_round
from tests.unit.server.strategies.test_strategy_fedhft import grouped_clients, run_head_round


def _deltas(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.endswith(".delta")}


def test_head_only_clusters_share_the_adapters_of_one_cluster_and_keep_their_own_heads():
    clients, group_of = grouped_clients(2, 4)
    push = {0: np.float32(0.5), 1: np.float32(-0.5)}
    change = lambda c: np.full((DIMS.num_labels, DIMS.hidden), push[group_of[c.client_id]])  # noqa: E731
    one = get_strategy("fedhft", dims=DIMS, num_clusters=1, warmup_rounds=1)
    heads = get_strategy("fedhft", dims=DIMS, num_clusters=2, warmup_rounds=1)  # per_cluster="head": the default
    for r in range(3):
        asg_one, asg_heads = one.configure(r, clients), heads.configure(r, clients)
        for c in clients:  # the adapter start (factors and mask) is the one shared state's, as with K=1
            for name, value in asg_one[c.client_id].start_state.items():
                if not name.startswith("head."):
                    np.testing.assert_allclose(asg_heads[c.client_id].start_state[name], value, atol=1e-6)
            np.testing.assert_array_equal(asg_heads[c.client_id].mask, asg_one[c.client_id].mask)
        run_head_round(one, r, clients, change)
        run_head_round(heads, r, clients, change)
    assert len({tuple(np.round(heads.membership(c.client_id))) for c in clients}) == 2  # two clusters formed
    for cluster in heads.clusters:
        for key, value in _deltas(one.clusters[0]).items():
            np.testing.assert_allclose(cluster[key], value, atol=1e-6, err_msg=key)
    assert not np.allclose(heads.clusters[0]["head.weight"], heads.clusters[1]["head.weight"], atol=1e-3)


def test_with_per_cluster_all_the_clusters_adapters_differ():
    clients, group_of = grouped_clients(2, 4)
    push = {0: np.float32(0.5), 1: np.float32(-0.5)}
    s = get_strategy("fedhft", dims=DIMS, num_clusters=2, warmup_rounds=1, per_cluster="all")
    for r in range(3):
        run_head_round(s, r, clients, lambda c: np.full((DIMS.num_labels, DIMS.hidden), push[group_of[c.client_id]]))
    a, b = _deltas(s.clusters[0]), _deltas(s.clusters[1])
    assert any(not np.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_per_cluster_is_in_the_config_and_the_state_round_trips():
    clients = make_clients(1)
    s = get_strategy("fedhft", dims=DIMS)
    run_round(s, 0, clients, lambda c: DIMS)
    tensors, meta = s.state_dict()
    assert meta["config"]["per_cluster"] == "head"
    again = get_strategy("fedhft", dims=DIMS)
    again.load_state_dict(tensors, meta)
    a_name, _ = lora_names(*next(iter(_sites(s))))
    np.testing.assert_array_equal(
        again.configure(1, clients)[clients[0].client_id].start_state[a_name],
        s.configure(1, clients)[clients[0].client_id].start_state[a_name],
    )
    with pytest.raises(ValueError, match="construct it with the saved config"):
        get_strategy("fedhft", dims=DIMS, per_cluster="all").load_state_dict(tensors, meta)


def test_a_state_saved_before_the_option_loads_as_per_cluster_all():
    old = get_strategy("fedhft", dims=DIMS, per_cluster="all")
    run_round(old, 0, make_clients(1), lambda c: DIMS)
    tensors, meta = old.state_dict()
    del meta["config"]["per_cluster"]  # as written before the option existed: every cluster had its adapters
    get_strategy("fedhft", dims=DIMS, per_cluster="all").load_state_dict(tensors, meta)
    with pytest.raises(ValueError, match="construct it with the saved config"):
        get_strategy("fedhft", dims=DIMS).load_state_dict(tensors, meta)


def _sites(s):
    for key in _deltas(s.clusters[0]):
        layer, module = key[len("layer") :].split(".", 1)
        yield int(layer), module.removesuffix(".delta")


def test_an_unknown_per_cluster_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"per_cluster must be one of \('all', 'head'\)"):
        get_strategy("fedhft", dims=DIMS, per_cluster="adapters")

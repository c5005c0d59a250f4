"""FedHFT's groups option: clusters fixed to groups the operator knows (client id -> group name), instead of
clusters fitted to the clients' head updates."""

from __future__ import annotations

import numpy as np
import pytest

from server.strategies import get_strategy
from tests.unit.server.strategies._helpers import DIMS
from tests.unit.server.strategies.test_strategy_fedhft import grouped_clients, run_head_round


def _alike(c):
    """Every client moves the head the same way: a fitted clustering has nothing to tell apart."""
    return np.full((DIMS.num_labels, DIMS.hidden), np.float32(0.1))


def test_from_warm_up_on_each_client_is_in_its_groups_cluster_whatever_its_updates():
    clients, group_of = grouped_clients(2, 3)
    groups = {c.client_id: ("kitchen", "books")[group_of[c.client_id]] for c in clients}
    s = get_strategy("fedhft", dims=DIMS, warmup_rounds=2, groups=groups)
    assert s.num_clusters == 2
    run_head_round(s, 0, clients, _alike)
    for c in clients:  # warm-up: one shared model
        np.testing.assert_allclose(s.membership(c.client_id), [0.5, 0.5])
    run_head_round(s, 1, clients, _alike)
    for c in clients:  # clusters in name order: books, kitchen
        expected = [1.0, 0.0] if groups[c.client_id] == "books" else [0.0, 1.0]
        np.testing.assert_array_equal(s.membership(c.client_id), expected)
    np.testing.assert_allclose(s.cluster_weights, [0.5, 0.5])


def test_a_client_outside_the_groups_gets_the_cluster_sizes():
    clients, group_of = grouped_clients(2, 3)
    groups = {c.client_id: str(group_of[c.client_id]) for c in clients[:4]}  # two in group 0, two in group 1
    s = get_strategy("fedhft", dims=DIMS, warmup_rounds=1, groups=groups)
    run_head_round(s, 0, clients, _alike)
    for c in clients[4:]:
        np.testing.assert_allclose(s.membership(c.client_id), [0.5, 0.5])
    np.testing.assert_array_equal(s.membership(clients[0].client_id), [1.0, 0.0])


def test_groups_give_each_group_its_own_head():
    clients, group_of = grouped_clients(2, 3)
    push = {0: np.float32(0.5), 1: np.float32(-0.5)}
    groups = {c.client_id: f"g{group_of[c.client_id]}" for c in clients}
    s = get_strategy("fedhft", dims=DIMS, warmup_rounds=1, groups=groups)
    for r in range(3):
        run_head_round(s, r, clients, lambda c: np.full((DIMS.num_labels, DIMS.hidden), push[group_of[c.client_id]]))
    gap = s.clusters[0]["head.weight"] - s.clusters[1]["head.weight"]
    assert np.all(gap > 0.5)  # g0 pushed its head up, g1 down, for the two rounds since warm-up


def test_groups_are_in_the_config_and_a_state_loads_only_with_the_same_groups():
    clients, group_of = grouped_clients(2, 2)
    groups = {c.client_id: str(group_of[c.client_id]) for c in clients}
    s = get_strategy("fedhft", dims=DIMS, warmup_rounds=1, groups=groups)
    run_head_round(s, 0, clients, _alike)
    tensors, meta = s.state_dict()
    assert meta["config"]["groups"] == dict(sorted(groups.items()))
    assert "num_clusters" in meta["config"] and "max_clusters" not in meta["config"]
    again = get_strategy("fedhft", dims=DIMS, warmup_rounds=1, groups=groups)
    again.load_state_dict(tensors, meta)
    np.testing.assert_array_equal(again.memberships, s.memberships)
    with pytest.raises(ValueError, match="construct it with the saved config"):
        get_strategy("fedhft", dims=DIMS, warmup_rounds=1, num_clusters=2).load_state_dict(tensors, meta)


@pytest.mark.parametrize(
    "options, problem",
    [
        ({"groups": {}}, "non-empty mapping"),
        ({"groups": {"dev-000": 3}}, "non-empty mapping"),
        ({"groups": ["a", "b"]}, "non-empty mapping"),
        ({"groups": {"dev-000": "a", "dev-001": "b"}, "num_clusters": 3}, "leave num_clusters out"),
        ({"groups": {"dev-000": "a", "dev-001": "b"}, "max_clusters": 3}, "max_clusters=3 does not apply"),
    ],
)
def test_bad_groups_are_refused_with_the_fix(options, problem):
    with pytest.raises(ValueError, match=problem):
        get_strategy("fedhft", dims=DIMS, **options)


def test_every_problem_is_named_at_once():
    with pytest.raises(ValueError) as err:
        get_strategy("fedhft", dims=DIMS, groups={"dev-000": "a"}, num_clusters=2, warmup_rounds=-1)
    assert "num_clusters=2" in str(err.value) and "warmup_rounds must be >= 0" in str(err.value)


def test_groups_equal_to_the_clusters_count_may_name_it():
    s = get_strategy("fedhft", dims=DIMS, groups={"dev-000": "a", "dev-001": "b"}, num_clusters=2)
    assert s.num_clusters == 2 and not s.auto_clusters

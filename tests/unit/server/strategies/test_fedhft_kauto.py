"""FedHFT's K chosen from the data (``num_clusters="auto"``): the BIC of the tied spherical mixture,
golden on hand-computable cases; well-separated synthetic groups recover their number, noise gives
one cluster; the strategy option is validated, deterministic and round-trips."""

import math

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from server.strategies import get_strategy
from server.strategies._clusters import fit_memberships, max_components, mixture_bic, tied_spherical_em
from tests.unit.server.strategies._helpers import DIMS
from tests.unit.server.strategies.test_clusters import synthetic_updates
from tests.unit.server.strategies.test_strategy_fedhft import grouped_clients, run_head_round


def used(probs: np.ndarray) -> int:
    return int((probs.sum(axis=0) > 1e-9).sum())


def test_mixture_bic_golden_one_component():
    # points 0 and 2 in 1-D: mean 1, squared distances 1 and 1, variance (1 + 1) / (2 * 1) = 1;
    # log L = 2 * (-1/2) - (2 * 1 / 2) * log(2 pi); p = 1 mean + 0 weights + 1 variance = 2.
    x = np.array([[0.0], [2.0]])
    resp, _, var = tied_spherical_em(x, np.zeros(2, int), 1)
    assert var == pytest.approx(1.0)
    expected = -2.0 * (-1.0 - math.log(2 * math.pi)) + 2 * math.log(2)
    assert mixture_bic(x, resp, var, np.zeros(2), dims=1) == pytest.approx(expected)


def test_mixture_bic_golden_two_components_and_the_choice_between_them():
    # 0, 0.2 | 10, 10.2: two components of weight 1/2, means 0.1 and 10.1, variance 0.04 / 4 = 0.01.
    x = np.array([[0.0], [0.2], [10.0], [10.2]])
    resp, _, var = tied_spherical_em(x, np.array([0, 0, 1, 1]), 2)
    assert var == pytest.approx(0.01)
    log_lik = 4 * (math.log(0.5) - 0.01 / 0.02) - 2 * math.log(2 * math.pi * 0.01)  # the far component adds ~e^-5000
    assert mixture_bic(x, resp, var, np.zeros(4), dims=1) == pytest.approx(-2 * log_lik + 4 * math.log(4))
    probs, _ = fit_memberships(x, 4, seed=0, normalize=False, choose_k=True)  # n // 2 = 2 components at most
    assert used(probs) == 2 and probs.shape == (4, 4)
    np.testing.assert_allclose(probs[:, :2].sum(axis=1), 1.0)


def test_max_components_golden():
    assert [max_components(n, 4) for n in (1, 2, 3, 5, 8, 30)] == [1, 1, 1, 2, 4, 4]


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("seed", range(3))
def test_choose_k_recovers_the_number_of_well_separated_groups(k, seed):
    groups = [i % k for i in range(24)]
    x = synthetic_updates(groups, 256, seed, common=2.0, noise=0.3)
    probs, means = fit_memberships(x, 5, seed=seed, choose_k=True)
    assert probs.shape == (24, 5) and means.shape == (5, 256)
    assert used(probs) == k
    if k > 1:
        assert adjusted_rand_score(groups, probs.argmax(axis=1)) == 1.0
    again, _ = fit_memberships(x, 5, seed=seed, choose_k=True)
    np.testing.assert_array_equal(probs, again)  # seeded: the same fit every time


@pytest.mark.parametrize("n", [6, 12, 30])
def test_choose_k_gives_one_cluster_for_structureless_updates(n):
    for seed in range(5):
        x = np.random.default_rng([seed, n]).standard_normal((n, 1024))
        probs, _ = fit_memberships(x, 4, seed=seed, choose_k=True)
        assert used(probs) == 1, seed


def test_fedhft_auto_clusters_as_many_as_the_data_has():
    """3 groups x 4 clients, head updates as in the fixed-K test; auto with max_clusters 5 keeps 5
    cluster states and uses 3, matching the groups."""
    clients, group_of = grouped_clients(3, 4)
    shape = (DIMS.num_labels, DIMS.hidden)
    rng = np.random.default_rng(0)
    common, dirs = rng.standard_normal(shape), rng.standard_normal((3, *shape))
    s = get_strategy("fedhft", dims=DIMS, num_clusters="auto", max_clusters=5, warmup_rounds=2)
    assert s.num_clusters == 5 and len(s.clusters) == 5
    for r in range(3):
        noise = {c.client_id: rng.standard_normal(shape) * 0.5 for c in clients}
        st = run_head_round(
            s, r, clients, lambda c: 0.01 * (2 * common + dirs[group_of[c.client_id]] + noise[c.client_id])
        )
    members = np.array([s.membership(c.client_id) for c in clients])
    assert members.shape == (12, 5) and used(members) == 3
    assert adjusted_rand_score([group_of[c.client_id] for c in clients], members.argmax(axis=1)) == 1.0
    assert np.count_nonzero(st.cluster_weights) == 3


def test_fedhft_auto_with_one_group_is_one_cluster():
    clients, _ = grouped_clients(1, 8)
    rng = np.random.default_rng(1)
    shape = (DIMS.num_labels, DIMS.hidden)
    common = rng.standard_normal(shape)
    s = get_strategy("fedhft", dims=DIMS, num_clusters="auto", warmup_rounds=1)
    for r in range(2):
        noise = {c.client_id: rng.standard_normal(shape) * 0.5 for c in clients}
        run_head_round(s, r, clients, lambda c: 0.01 * (2 * common + noise[c.client_id]))
    members = np.array([s.membership(c.client_id) for c in clients])
    assert members.shape == (8, 4) and used(members) == 1


def test_fedhft_auto_config_round_trips_and_differs_from_a_fixed_k():
    s = get_strategy("fedhft", dims=DIMS, num_clusters="auto", max_clusters=3)
    assert s.config()["num_clusters"] == "auto" and s.config()["max_clusters"] == 3
    tensors, meta = s.state_dict()
    again = get_strategy("fedhft", dims=DIMS, num_clusters="auto", max_clusters=3)
    again.load_state_dict(tensors, meta)
    assert again.auto_clusters and again.num_clusters == 3
    fixed = get_strategy("fedhft", dims=DIMS, num_clusters=3)
    assert "max_clusters" not in fixed.config()  # a fixed K saves the config it always did
    with pytest.raises(ValueError, match="construct it with the saved config"):
        fixed.load_state_dict(tensors, meta)


@pytest.mark.parametrize(
    "options,fix",
    [
        ({"num_clusters": "many"}, "whole number >= 1 or 'auto'"),
        ({"num_clusters": 0}, "whole number >= 1 or 'auto'"),
        ({"num_clusters": 2.5}, "whole number >= 1 or 'auto'"),
        ({"num_clusters": True}, "whole number >= 1 or 'auto'"),
        ({"num_clusters": "auto", "max_clusters": 1}, "for no clustering set num_clusters=1"),
        ({"num_clusters": "auto", "max_clusters": "4"}, "max_clusters must be a whole number >= 2"),
        ({"num_clusters": 3, "max_clusters": 4}, "applies only to num_clusters=auto"),
    ],
)
def test_bad_cluster_options_are_refused_with_the_fix(options, fix):
    with pytest.raises(ValueError, match="invalid fedhft config") as err:
        get_strategy("fedhft", dims=DIMS, **options)
    assert fix in str(err.value)

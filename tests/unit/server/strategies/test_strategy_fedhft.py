"""FedHFT specifics: independent cluster states (the reference's ``[{}] * K`` bug), clustering,
mixtures as start states, row coverage over rounds, untouched rows."""

import numpy as np
import pytest

from devices import AdapterPlan
from fedhft.layout import gather_update, rows_from_mask
from server.strategies import ClientInfo, get_strategy

from ._helpers import DIMS, PLANS, fake_train, make_clients, run_round


def fedhft(**cfg):
    return get_strategy("fedhft", dims=DIMS, **{"num_clusters": 3, "warmup_rounds": 1, **cfg})


def dims_of(_):
    return DIMS


def two_groups(c):
    """Label skew stand-in: half the clients push the head one way, half the other."""
    return 3.0 if int(c.client_id.rsplit("-", 1)[1]) % 2 == 0 else -3.0


def test_cluster_states_are_independent_objects():
    s = fedhft()
    clients = make_clients(2)
    run_round(s, 0, clients, dims_of)
    assert len({id(c) for c in s.clusters}) == 3  # not [{}] * K: three dicts
    keys = list(s.clusters[0])
    for k in keys:
        for i in range(3):
            for j in range(i + 1, 3):
                assert not np.shares_memory(s.clusters[i][k], s.clusters[j][k]), k
    # Writing into one cluster must not leak into the others (it would with [{}] * K).
    before = {k: s.clusters[1][k].copy() for k in keys}
    s.clusters[0][keys[0]] += 100.0
    s.clusters[0]["new-key"] = np.ones(1)
    assert "new-key" not in s.clusters[1] and "new-key" not in s.clusters[2]
    assert all(np.array_equal(s.clusters[1][k], before[k]) for k in keys)
    del s.clusters[0]["new-key"]
    # The same holds for returned states and for a state loaded back.
    st = s.current()
    assert st.cluster_states[0] is not st.cluster_states[1]
    assert not np.shares_memory(st.cluster_states[0][keys[0]], s.clusters[0][keys[0]])
    fresh = fedhft()
    fresh.load_state_dict(*s.state_dict())
    fresh.clusters[2][keys[0]] -= 5.0
    assert not np.array_equal(fresh.clusters[2][keys[0]], fresh.clusters[1][keys[0]])


def test_clusters_diverge_after_warmup_and_follow_the_groups():
    s = fedhft(num_clusters=2, warmup_rounds=1)
    clients = make_clients(3)
    for r in range(3):
        run_round(s, r, clients, dims_of, head_shift=two_groups)
    members = {c.client_id: s.membership(c.client_id) for c in clients}
    label = {cid: int(np.argmax(m)) for cid, m in members.items()}
    pos = {label[c.client_id] for c in clients if two_groups(c) > 0}
    neg = {label[c.client_id] for c in clients if two_groups(c) < 0}
    assert len(pos) == 1 and len(neg) == 1 and pos != neg
    st = s.current()
    assert not np.allclose(st.cluster_states[0]["head.weight"], st.cluster_states[1]["head.weight"])


def test_start_state_is_the_membership_mixture_and_unseen_clients_get_cluster_sizes():
    s = fedhft(num_clusters=2, warmup_rounds=1)
    clients = make_clients(3)
    for r in range(2):
        run_round(s, r, clients, dims_of, head_shift=two_groups)
    newcomer = ClientInfo("never-seen", "mid", PLANS["mid"])
    asg = s.configure(2, clients + [newcomer])
    heads = [c["head.weight"].astype(np.float64) for c in s.clusters]
    for c in clients + [newcomer]:
        m = s.membership(c.client_id)
        assert asg[c.client_id].membership is not None
        np.testing.assert_allclose(asg[c.client_id].membership, m)
        np.testing.assert_allclose(
            asg[c.client_id].start_state["head.weight"], m[0] * heads[0] + m[1] * heads[1], atol=1e-6
        )
    np.testing.assert_allclose(s.membership("never-seen"), s.cluster_weights)
    np.testing.assert_allclose(s.cluster_weights.sum(), 1.0)


def test_rows_nobody_trained_keep_their_value():
    s = fedhft()
    clients = [c for c in make_clients(1) if c.tier != "high"]  # low (density .25) + mid (.5)
    run_round(s, 0, clients, dims_of)
    before = s.current()
    asg, after = run_round(s, 1, clients, dims_of)
    uncovered_somewhere = False
    for key in before.cluster_states[0]:
        if not key.endswith(".delta"):
            continue
        b_name = key.replace(".delta", ".lora_B")
        covered = np.zeros(before.cluster_states[0][key].shape[0], bool)
        for a in asg.values():
            covered[rows_from_mask(a.plan, DIMS, a.mask).get(b_name, [])] = True
        uncovered_somewhere |= not covered.all()
        # a cluster none of this site's trainers belongs to stays put
        mass = sum(a.membership for a in asg.values() if b_name in a.start_state)
        for c, (cb, ca) in enumerate(zip(before.cluster_states, after.cluster_states)):
            np.testing.assert_array_equal(ca[key][~covered], cb[key][~covered], err_msg=key)
            if covered.any() and mass[c] > 0:
                assert not np.allclose(ca[key][covered], cb[key][covered]), key
    assert uncovered_somewhere


def test_every_row_gets_trained_over_rounds():
    s = fedhft(num_clusters=1, explore=0.2)
    client = [c for c in make_clients(1) if c.tier == "low"]  # 2 of 8 rows per round
    for r in range(8):
        run_round(s, r, client, dims_of)
    for key, last in s.last_trained.items():
        assert (last >= 0).all(), f"{key} has rows never trained: {np.flatnonzero(last < 0)}"


def test_round0_masks_are_random_not_the_first_rows():
    masks = set()
    for seed in range(6):
        s = fedhft(seed=seed)
        a = s.configure(0, [make_clients(1)[0]])["low-0"]
        masks.add(tuple(np.flatnonzero(a.mask)))
    assert len(masks) > 1


@pytest.mark.parametrize("residual_correction,changes", [(True, False), (False, True)])
def test_residual_correction_keeps_state_under_a_no_op_low_rank_client(residual_correction, changes):
    """A rank-1 client returning its start unchanged: with correction the rows it covers keep the
    state's higher-rank content; the reference rule overwrites them with its rank-1 truncation."""
    plan_hi = AdapterPlan(depth=1, ranks=(4,), mask_density=1.0)
    plan_lo = AdapterPlan(depth=1, ranks=(1,), mask_density=1.0)
    s = get_strategy("fedhft", dims=DIMS, num_clusters=1, residual_correction=residual_correction)
    hi, lo = ClientInfo("hi", "hi", plan_hi), ClientInfo("lo", "lo", plan_lo)
    run_round(s, 0, [hi], dims_of)  # gives layer 2 a rank-4 state
    before = s.current().global_state["layer2.query.delta"]
    asg = s.configure(1, [lo])
    a = asg["lo"]
    agg = s.aggregator(1)
    agg.add(lo, a, gather_update(a.plan, DIMS, a.start_state, a.start_state, a.mask), 1.0)
    after = agg.finish().global_state["layer2.query.delta"]
    assert np.linalg.matrix_rank(before, tol=1e-6) > 1
    assert (not np.allclose(after, before, atol=1e-5)) == changes


def test_aggregator_memory_does_not_grow_with_clients():
    s = fedhft(num_clusters=2)
    clients = [ClientInfo(f"c{i:03d}", "mid", PLANS["mid"], num_examples=1) for i in range(40)]
    asg = s.configure(0, clients)
    agg = s.aggregator(0)
    sizes = []
    for i, c in enumerate(clients):
        a = asg[c.client_id]
        trained = fake_train(a, DIMS, i)
        agg.add(c, a, gather_update(a.plan, DIMS, a.start_state, trained, a.mask), 1.0)
        sizes.append(sum(v.nbytes for sums in agg.sums for d in (sums.num, sums.den) for v in d.values()))
    assert sizes[-1] == sizes[0]  # running sums only; per-client memory is the 32-float sketch


# -- clustering on head updates ------------------------------------------------------------------
def grouped_clients(groups: int, per_group: int):
    """Clients of ``groups`` data groups, tiers interleaved across groups (like the simulator)."""
    tiers = list(PLANS)
    out, group_of = [], {}
    for i in range(groups * per_group):
        tier = tiers[i % len(tiers)]
        c = ClientInfo(f"dev-{i:03d}", tier, PLANS[tier], num_examples=10 + i)
        out.append(c)
        group_of[c.client_id] = i % groups
    return out, group_of


def run_head_round(s, round_idx, clients, head_change):
    """A round whose training moves the LoRA rows randomly and the head by ``head_change(client)``."""
    asg = s.configure(round_idx, clients)
    agg = s.aggregator(round_idx)
    heads = {}
    for c in clients:
        a = asg[c.client_id]
        trained = fake_train(a, DIMS, round_idx * 1000 + int(c.client_id[-3:]), scale=0.1)
        trained["head.weight"] = heads[c.client_id] = (a.start_state["head.weight"] + head_change(c)).astype(np.float32)
        trained["head.bias"] = a.start_state["head.bias"].copy()
        agg.add(c, a, gather_update(a.plan, DIMS, a.start_state, trained, a.mask), c.num_examples)
    run_head_round.heads = heads  # the trained heads of the last round, for inspection
    return agg.finish()


def test_clusters_recover_groups_from_small_head_updates():
    """4 groups x 2 clients over 3 tiers. Each round every client moves the head by a little: a
    change shared by all (the task) + its group's direction + per-round noise. Absolute heads stay
    near-identical; the update directions tell the groups apart, and the clusters must match them."""
    from sklearn.metrics import adjusted_rand_score

    clients, group_of = grouped_clients(4, 2)
    shape = (DIMS.num_labels, DIMS.hidden)
    rng = np.random.default_rng(0)
    common, dirs = rng.standard_normal(shape), rng.standard_normal((4, *shape))
    s = fedhft(num_clusters=4, warmup_rounds=2)
    for r in range(4):
        noise = {c.client_id: rng.standard_normal(shape) * 0.5 for c in clients}
        run_head_round(s, r, clients, lambda c: 0.01 * (2 * common + dirs[group_of[c.client_id]] + noise[c.client_id]))
        if r >= 1:  # fitted from warm-up round 2 (round index 1) on
            labels = [int(np.argmax(s.membership(c.client_id))) for c in clients]
            assert adjusted_rand_score([group_of[c.client_id] for c in clients], labels) == 1.0, (r, labels)
            assert min(s.membership(c.client_id).max() for c in clients) > 0.99
    # what the previous clustering looked at, the absolute trained heads, all look alike
    heads = np.array([h.ravel() / np.linalg.norm(h) for h in run_head_round.heads.values()])
    assert (heads @ heads.T).min() > 0.7
    st = s.current()  # the cluster states have diverged
    heads = [cs["head.weight"] for cs in st.cluster_states]
    assert all(not np.allclose(heads[i], heads[j]) for i in range(4) for j in range(i + 1, 4))
    np.testing.assert_allclose(st.cluster_weights, [0.25] * 4)


def test_identical_clients_form_one_cluster_and_nothing_breaks():
    clients, _ = grouped_clients(2, 3)
    delta = np.random.default_rng(1).standard_normal((DIMS.num_labels, DIMS.hidden)) * 0.01
    s = fedhft(num_clusters=3, warmup_rounds=1)
    for r in range(3):
        st = run_head_round(s, r, clients, lambda c: delta)
        members = np.array([s.membership(c.client_id) for c in clients])
        assert np.isfinite(members).all()
        np.testing.assert_array_equal(members, np.tile([1.0, 0.0, 0.0], (len(clients), 1)))
        np.testing.assert_array_equal(st.cluster_weights, [1.0, 0.0, 0.0])
        for key, v in st.global_state.items():  # the global model is that one cluster
            np.testing.assert_allclose(v, st.cluster_states[0][key], atol=1e-6, err_msg=key)
    # a client never seen gets the cluster sizes: the one cluster
    np.testing.assert_array_equal(s.membership("new"), [1.0, 0.0, 0.0])


def test_a_cluster_that_gains_members_starts_from_their_previous_model():
    """Round 0: two identical clients -> one cluster, the other unused. Round 1: two clients join
    with other updates: the unused cluster gets them and must start from the model they were
    trained from (the cluster-size mixture), not from its stale round-0 state."""
    clients, group_of = grouped_clients(2, 2)
    old = [c for c in clients if group_of[c.client_id] == 0]
    rng = np.random.default_rng(2)
    shape = (DIMS.num_labels, DIMS.hidden)
    dirs = rng.standard_normal((2, *shape))
    s = fedhft(num_clusters=2, warmup_rounds=1)
    run_head_round(s, 0, old, lambda c: 0.01 * dirs[0])
    assert s.cluster_weights.tolist() == [1.0, 0.0]
    stale = copy_of(s.clusters[1])
    st = run_head_round(s, 1, clients, lambda c: 0.05 * dirs[group_of[c.client_id]])
    assert st.cluster_weights.tolist() == [0.5, 0.5]
    assert [int(np.argmax(s.membership(c.client_id))) for c in clients] == [group_of[c.client_id] for c in clients]
    for key in st.cluster_states[0]:  # cluster 1 = what its members were given this round's update of
        np.testing.assert_allclose(st.cluster_states[1][key], st.cluster_states[0][key], atol=1e-6, err_msg=key)
    assert any(not np.allclose(stale[k], st.cluster_states[1][k]) for k in stale)
    st = run_head_round(s, 2, clients, lambda c: 0.05 * dirs[group_of[c.client_id]])
    assert not np.allclose(st.cluster_states[0]["head.weight"], st.cluster_states[1]["head.weight"])


def test_only_updates_from_the_shared_model_count_towards_the_clustering():
    """Once clustered, a client trains from its cluster's model; its updates then say how that
    model fits its data, not which data it has, and must not move it to another cluster."""
    from sklearn.metrics import adjusted_rand_score

    clients, group_of = grouped_clients(2, 3)
    shape = (DIMS.num_labels, DIMS.hidden)
    dirs = np.random.default_rng(3).standard_normal((2, *shape))
    s = fedhft(num_clusters=2, warmup_rounds=2)
    for r in range(2):
        run_head_round(s, r, clients, lambda c: 0.01 * dirs[group_of[c.client_id]])
    labels = [int(np.argmax(s.membership(c.client_id))) for c in clients]
    assert adjusted_rand_score([group_of[c.client_id] for c in clients], labels) == 1.0
    frozen = s.sketches.copy()
    for r in range(2, 6):  # everyone now pushes the head the other group's way
        run_head_round(s, r, clients, lambda c: 0.05 * dirs[1 - group_of[c.client_id]])
        assert [int(np.argmax(s.membership(c.client_id))) for c in clients] == labels
    np.testing.assert_array_equal(s.sketches, frozen)
    assert s.clustered == {c.client_id for c in clients}


def copy_of(state):
    return {k: np.array(v, copy=True) for k, v in state.items()}


def test_clustering_features_survive_a_restart_and_a_wrong_sketch_dim_is_refused():
    clients, _ = grouped_clients(2, 2)
    s = fedhft(num_clusters=2, warmup_rounds=1)
    run_round(s, 0, clients, dims_of, head_shift=two_groups)
    fresh = fedhft(num_clusters=2, warmup_rounds=1)
    fresh.load_state_dict(*s.state_dict())
    np.testing.assert_array_equal(fresh.sketches, s.sketches)
    np.testing.assert_array_equal(fresh.sketch_rounds, s.sketch_rounds)
    other = fedhft(num_clusters=2, warmup_rounds=1, sketch_dim=16)
    with pytest.raises(ValueError, match="sketch_dim"):
        other.load_state_dict(*s.state_dict())


def test_head_feature_is_exact_when_it_fits_and_a_seeded_sketch_when_not():
    s = fedhft(sketch_dim=64)
    change = np.random.default_rng(3).standard_normal(40)
    f = s.head_feature(change)
    np.testing.assert_allclose(f[:40], change / np.linalg.norm(change))
    np.testing.assert_array_equal(f[40:], 0.0)
    big = np.random.default_rng(4).standard_normal(1000)
    f1, f2 = s.head_feature(big), fedhft(sketch_dim=64).head_feature(big)
    assert f1.shape == (64,) and np.linalg.norm(f1) == pytest.approx(1.0)
    np.testing.assert_array_equal(f1, f2)  # derived from the seed: same on every server
    assert not np.array_equal(f1, fedhft(sketch_dim=64, seed=1).head_feature(big))


def test_unmasked_ablation_trains_every_row_and_round_trips():
    from fedhft.layout import rows_from_mask
    from server.strategies import get_strategy

    from ._helpers import DIMS, make_clients

    s = get_strategy("fedhft", dims=DIMS, seed=0, masked=False)
    clients = make_clients(1)
    for c in clients:
        a = s.configure(0, [c])[c.client_id]
        assert a.mask.min() == 1.0, c.tier  # the tier's density no longer limits the rows
        assert all(
            len(r) == DIMS.module_shape("query")[0]
            for n, r in rows_from_mask(a.plan, DIMS, a.mask).items()
            if ".query." in n
        )
    tensors, meta = s.state_dict()
    assert meta["config"]["masked"] is False
    masked = get_strategy("fedhft", dims=DIMS, seed=0)
    assert "masked" not in masked.state_dict()[1]["config"]  # the default keeps older states loadable

"""Every strategy, 3 rounds over 3 tiers of synthetic clients: state moves, order independence,
state_dict round trip, resume == uninterrupted, determinism."""

import json

import numpy as np
import pytest

from fedhft.layout import gather_update, rows_from_mask
from server.strategies import STRATEGIES, get_strategy

from ._helpers import DIMS, DIMS_B, PLANS, make_clients, run_round

NAMES = sorted(STRATEGIES)


def make(name, seed=0):
    cfg = {"dims": DIMS, "seed": seed}
    if name == "heterotune":
        cfg["backbone_dims"] = {"bert-a": DIMS, "bert-b": DIMS_B}
    if name == "fedhft":
        cfg.update(num_clusters=2, warmup_rounds=1)
    return get_strategy(name, **cfg)


def dims_of(c):
    return DIMS_B if c.backbone == "bert-b" else DIMS


def clients_for(name):
    return make_clients(2, two_backbones=name == "heterotune")


def run(strategy, clients, rounds, start=0, order=None):
    states = []
    for r in range(start, start + rounds):
        states.append(run_round(strategy, r, clients, dims_of, order=order)[1])
    return states


def flat(state):
    """All tensors of a StrategyState, cluster states included."""
    out = {"g/" + k: v for k, v in state.global_state.items()}
    for c, cs in enumerate(state.cluster_states):
        out.update({f"c{c}/{k}": v for k, v in cs.items()})
    return out


@pytest.mark.parametrize("name", NAMES)
def test_three_rounds_move_the_state(name):
    s = make(name)
    clients = clients_for(name)
    before = {}
    for r, st in enumerate(run(s, clients, 3)):
        now = flat(st)
        assert st.round_idx == r + 1
        assert all(np.all(np.isfinite(v)) for v in now.values())
        changed = [k for k in now if k in before and not np.allclose(now[k], before[k])]
        assert r == 0 or changed, f"round {r} changed nothing"
        before = now
    assert s.round_idx == 3
    # every tier gets a start state with exactly its plan's layout
    asg = s.configure(3, clients)
    for c in clients:
        plan = asg[c.client_id].plan
        assert plan == (PLANS["low"] if name == "fedavg-lora" else c.plan)


@pytest.mark.parametrize("name", NAMES)
def test_streaming_order_does_not_matter(name):
    clients = clients_for(name)
    a = run(make(name), clients, 3)[-1]
    b = run(make(name), clients, 3, order=lambda cs: list(reversed(cs)))[-1]
    fa, fb = flat(a), flat(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        np.testing.assert_allclose(fa[k], fb[k], rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_under_seed(name):
    clients = clients_for(name)
    s1, s2 = make(name, seed=7), make(name, seed=7)
    for x, y in zip(run(s1, clients, 3), run(s2, clients, 3)):
        fx, fy = flat(x), flat(y)
        assert all(np.array_equal(fx[k], fy[k]) for k in fx)
    a1, a2 = s1.configure(3, clients), s2.configure(3, clients)
    for cid in a1:
        assert np.array_equal(a1[cid].mask, a2[cid].mask)
        assert all(np.array_equal(a1[cid].start_state[k], a2[cid].start_state[k]) for k in a1[cid].start_state)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_and_resume_equals_uninterrupted(name):
    clients = clients_for(name)
    straight = make(name)
    final = run(straight, clients, 3)[-1]

    first = make(name)
    run(first, clients, 1)
    tensors, meta = first.state_dict()
    meta = json.loads(json.dumps(meta))  # what the server writes and reads back
    assert all(isinstance(v, np.ndarray) for v in tensors.values())
    resumed = make(name)
    resumed.load_state_dict({k: v.copy() for k, v in tensors.items()}, meta)
    t2, m2 = resumed.state_dict()
    assert m2 == meta and t2.keys() == tensors.keys()
    assert all(np.array_equal(t2[k], tensors[k]) for k in tensors)
    resumed_final = run(resumed, clients, 2, start=1)[-1]
    fa, fb = flat(final), flat(resumed_final)
    assert fa.keys() == fb.keys()
    for k in fa:
        np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)


@pytest.mark.parametrize("name", NAMES)
def test_load_refuses_other_strategy_or_config(name):
    s = make(name)
    run(s, clients_for(name), 1)
    tensors, meta = s.state_dict()
    other = "fedhft" if name != "fedhft" else "heterofl"
    with pytest.raises(ValueError, match="saved by strategy"):
        make(other).load_state_dict(tensors, meta)
    with pytest.raises(ValueError, match="config"):
        make(name, seed=99).load_state_dict(tensors, meta)


@pytest.mark.parametrize("name", NAMES)
def test_misuse_raises_with_the_fix(name):
    s = make(name)
    clients = clients_for(name)
    asg = s.configure(0, clients)
    with pytest.raises(ValueError, match="round 0"):
        s.configure(1, clients)
    agg = s.aggregator(0)
    c = clients[0]
    with pytest.raises(ValueError, match="missing"):
        agg.add(c, asg[c.client_id], {"head.bias": np.zeros(3, np.float32)}, 1.0)


def test_get_strategy_errors_list_the_choices():
    with pytest.raises(
        ValueError, match="known strategies: fedavg-lora, fedhft, flexlora, heterofl, heterotune, hetlora, legend"
    ):
        get_strategy("fedprox", dims=DIMS)
    with pytest.raises(ValueError, match="accepts"):
        get_strategy("fedhft", dims=DIMS, num_clsuters=3)


# -- "a client's update moves the aggregate by its weight share" -------------------------------------


def _one_mover_round(name, delta=0.5):
    """Round 0 where every client returns its start unchanged except ``mover``, whose B rows
    (its masked rows) move by ``delta``."""
    s = make(name)
    clients = make_clients(2)
    mover = clients[4]  # the second "mid" client
    asg = s.configure(0, clients)
    before = s.current()  # after configure: it creates the sites the clients need
    agg = s.aggregator(0)
    for c in clients:
        a = asg[c.client_id]
        trained = {k: v.copy() for k, v in a.start_state.items()}
        if c is mover:  # B moves on its masked rows only, as on a device
            for b_name, rows in rows_from_mask(a.plan, DIMS, a.mask).items():
                trained[b_name][rows] += np.float32(delta)
        agg.add(c, a, gather_update(a.plan, DIMS, a.start_state, trained, a.mask), c.num_examples)
    return s, clients, mover, asg, before, agg.finish()


def test_fedavg_single_mover_shifts_by_weight_share():
    s, clients, mover, asg, before, after = _one_mover_round("fedavg-lora")
    share = mover.num_examples / sum(c.num_examples for c in clients)
    for k, v in after.global_state.items():
        exp = before.global_state[k] + (share * 0.5 if k.endswith("lora_B") else 0.0)
        np.testing.assert_allclose(v, exp, atol=1e-6, err_msg=k)


def test_heterofl_single_mover_shifts_covered_elements_by_weight_share():
    s, clients, mover, asg, before, after = _one_mover_round("heterofl")
    for layer in (1, 2):
        key = f"layer{layer}.query.lora_B"
        r = mover.plan.ranks[layer - 1]
        covering = [
            c for c in clients if key in asg[c.client_id].start_state and asg[c.client_id].start_state[key].shape[1] > 0
        ]
        for comp in range(after.global_state[key].shape[1]):
            cov = [c for c in covering if asg[c.client_id].start_state[key].shape[1] > comp]
            share = mover.num_examples / sum(c.num_examples for c in cov) if comp < r else 0.0
            np.testing.assert_allclose(
                after.global_state[key][:, comp] - before.global_state[key][:, comp],
                share * 0.5 * np.sqrt(16.0 / r),
                atol=1e-5,
            )


def test_fedhft_single_mover_shifts_its_rows_by_weight_share_and_keeps_the_rest():
    s, clients, mover, asg, before, after = _one_mover_round("fedhft")
    a = asg[mover.client_id]
    for layer, rank in zip((1, 2), mover.plan.ranks):
        key, b_name = f"layer{layer}.query.delta", f"layer{layer}.query.lora_B"
        sel = rows_from_mask(a.plan, DIMS, a.mask)[b_name]
        change = np.zeros_like(before.cluster_states[0][key], dtype=np.float64)
        change[sel] = (16.0 / rank) * 0.5 * a.start_state[f"layer{layer}.query.lora_A"].sum(axis=0)
        cover_w = np.zeros(change.shape[0])
        for c in clients:
            ac = asg[c.client_id]
            if b_name in ac.start_state:
                cover_w[rows_from_mask(ac.plan, DIMS, ac.mask)[b_name]] += c.num_examples
        share = np.where(cover_w > 0, mover.num_examples / np.maximum(cover_w, 1), 0.0)[:, None]
        for cb, ca in zip(before.cluster_states, after.cluster_states):
            np.testing.assert_allclose(ca[key], cb[key] + share * change, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_state_survives_safetensors_and_json(name):
    """What the server does: tensors through safetensors, metadata through JSON."""
    st_numpy = pytest.importorskip("safetensors.numpy")
    clients = clients_for(name)
    s = make(name)
    run(s, clients, 2)
    tensors, meta = s.state_dict()
    blob = st_numpy.save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata={"m": json.dumps(meta)})
    back = make(name)
    back.load_state_dict(st_numpy.load(blob), json.loads(json.dumps(meta)))
    a, b = s.configure(2, clients), back.configure(2, clients)
    for cid in a:
        assert np.array_equal(a[cid].mask, b[cid].mask)
        for k in a[cid].start_state:
            assert np.array_equal(a[cid].start_state[k], b[cid].start_state[k]), (cid, k)


@pytest.mark.parametrize("name", NAMES)
def test_a_duplicate_update_is_refused(name):
    s = make(name)
    clients = clients_for(name)
    asg = s.configure(0, clients)
    agg = s.aggregator(0)
    c = clients[0]
    a = asg[c.client_id]
    update = gather_update(a.plan, dims_of(c), a.start_state, a.start_state, a.mask)
    agg.add(c, a, update, 1.0)
    with pytest.raises(ValueError, match="second update"):
        agg.add(c, a, update, 1.0)


@pytest.mark.parametrize("name", NAMES)
def test_preview_matches_configure(name):
    s = make(name)
    clients = clients_for(name)
    run(s, clients, 1)
    c = clients[-1]
    p, a = s.preview(c), s.configure(1, clients)[c.client_id]
    assert p.plan == a.plan and np.array_equal(p.mask, a.mask)
    assert all(np.array_equal(p.start_state[k], a.start_state[k]) for k in a.start_state)


@pytest.mark.parametrize("name", NAMES)
def test_finish_commits_once_per_round(name):
    s = make(name)
    clients = clients_for(name)
    asg = s.configure(0, clients)
    first, second = s.aggregator(0), s.aggregator(0)
    for agg in (first, second):
        c = clients[0]
        a = asg[c.client_id]
        agg.add(c, a, gather_update(a.plan, dims_of(c), a.start_state, a.start_state, a.mask), 1.0)
    first.finish()
    with pytest.raises(RuntimeError, match="already finished"):
        first.finish()
    with pytest.raises(ValueError, match="round 0"):
        second.finish()  # another aggregator of round 0 has committed


def test_heterofl_and_legend_coincide_under_a_shared_rank_profile():
    """The planner gives every tier the ranks of one shared profile (a layer has one shape on every device
    that adapts it), so LEGEND's zero padding never happens and its layer-wise mean is HeteroFL's
    element-wise mean: the two report the same numbers in the sweep. With tier-specific ranks in one layer
    (the helpers' PLANS) they differ, as the golden test of each shows."""
    from devices import AdapterPlan
    from server.strategies import ClientInfo

    profile = (2, 4, 4)  # bottom layer first
    shared = {
        t: AdapterPlan(depth=d, ranks=profile[-d:], mask_density=1.0) for t, d in (("lo", 1), ("mid", 2), ("hi", 3))
    }
    clients = [ClientInfo(f"{t}-{i}", t, p, num_examples=5 + i) for i in range(2) for t, p in shared.items()]
    same = [run(make(name), clients, 3) for name in ("heterofl", "legend")]
    for a, b in zip(*same):
        fa, fb = flat(a), flat(b)
        assert fa.keys() == fb.keys()
        for k in fa:
            np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)
    tiered = [flat(run(make(name), clients_for(name), 1)[0]) for name in ("heterofl", "legend")]
    assert any(not np.array_equal(tiered[0][k], tiered[1][k]) for k in tiered[0])

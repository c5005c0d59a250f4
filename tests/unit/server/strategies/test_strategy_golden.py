"""Golden values per strategy: tiny dims, trained tensors written literally, expected
aggregates computed by hand (the arithmetic is in the comments)."""

import dataclasses

import numpy as np
import pytest

from devices import AdapterPlan
from fedhft.layout import ModelDims, gather_update, mask_from_rows
from server.strategies import ClientInfo, get_strategy

D2 = ModelDims(num_layers=2, hidden=2, intermediate=2, num_labels=1)


def trained_update(assignment, dims, overrides):
    """The update a device would upload if training ended at start + ``overrides``."""
    trained = {k: v.copy() for k, v in assignment.start_state.items()}
    trained.update({k: np.asarray(v, np.float32) for k, v in overrides.items()})
    return gather_update(assignment.plan, dims, assignment.start_state, trained, assignment.mask)


def one_round(strategy, dims, clients_and_overrides, round_idx=0):
    clients = [c for c, _ in clients_and_overrides]
    asg = strategy.configure(round_idx, clients)
    agg = strategy.aggregator(round_idx)
    for c, ov in clients_and_overrides:
        agg.add(c, asg[c.client_id], trained_update(asg[c.client_id], dims, ov), c.num_examples)
    return agg.finish()


def test_fedavg_golden_weighted_average_and_cheapest_plan():
    plan = AdapterPlan(depth=1, ranks=(1,), mask_density=1.0, alpha=1.0)
    bigger = AdapterPlan(depth=2, ranks=(2, 2), mask_density=0.5)
    c1, c2 = ClientInfo("c1", "low", plan, num_examples=1), ClientInfo("c2", "high", bigger, num_examples=3)
    s = get_strategy("fedavg-lora", dims=D2)
    assert s.configure(0, [c1, c2])["c2"].plan == plan  # everybody trains the cheapest plan
    st = one_round(
        s,
        D2,
        [
            (
                c1,
                {
                    "layer1.query.lora_A": [[1, 2]],
                    "layer1.query.lora_B": [[1], [0]],
                    "head.weight": [[1, 1]],
                    "head.bias": [1],
                },
            ),
            (
                c2,
                {
                    "layer1.query.lora_A": [[3, 4]],
                    "layer1.query.lora_B": [[3], [4]],
                    "head.weight": [[5, 5]],
                    "head.bias": [-1],
                },
            ),
        ],
    )
    g = st.global_state
    np.testing.assert_allclose(g["layer1.query.lora_A"], [[2.5, 3.5]])  # (1*[1,2] + 3*[3,4]) / 4
    np.testing.assert_allclose(g["layer1.query.lora_B"], [[2.5], [3.0]])
    np.testing.assert_allclose(g["head.weight"], [[4, 4]])
    np.testing.assert_allclose(g["head.bias"], [-0.5])
    nxt = s.configure(1, [c1])["c1"].start_state
    np.testing.assert_allclose(nxt["layer1.query.lora_A"], [[2.5, 3.5]])


# Two clients with weight 1: c1 rank 1 on layer 1 only; c2 rank 2 on layers 0 and 1.
# alpha = rank, so the LoRA scale is 1 and scale folding is the identity.
P1 = AdapterPlan(depth=1, ranks=(1,), mask_density=1.0, alpha=1.0)
P2 = AdapterPlan(depth=2, ranks=(2, 2), mask_density=1.0, alpha=2.0)
C1, C2 = ClientInfo("c1", "t1", P1, num_examples=1), ClientInfo("c2", "t2", P2, num_examples=1)
OV1 = {"layer1.query.lora_A": [[2, 4]], "layer1.query.lora_B": [[1], [3]]}
OV2 = {
    "layer1.query.lora_A": [[4, 6], [8, 10]],
    "layer1.query.lora_B": [[5, 7], [9, 11]],
    "layer0.query.lora_A": [[1, 1], [1, 1]],
    "layer0.query.lora_B": [[2, 2], [2, 2]],
}

HETERO_EXPECTED = {
    # zero-padding: c1 counts as 0 in component 1 ((0+8)/2 = 4) and, lacking layer 0, as 0 there.
    "hetlora": ([[3, 5], [4, 5]], [[3, 3.5], [6, 5.5]], [[0.5, 0.5], [0.5, 0.5]], [[1, 1], [1, 1]]),
    # nested sub-blocks: component 1 is covered by c2 alone; layer 0 only by c2.
    "heterofl": ([[3, 5], [8, 10]], [[3, 7], [6, 11]], [[1, 1], [1, 1]], [[2, 2], [2, 2]]),
    # layer-wise: zero-padding within layer 1, layer 0 averaged over its only trainer c2.
    "legend": ([[3, 5], [4, 5]], [[3, 3.5], [6, 5.5]], [[1, 1], [1, 1]], [[2, 2], [2, 2]]),
}


@pytest.mark.parametrize("name", sorted(HETERO_EXPECTED))
def test_heterogeneous_rank_golden(name):
    s = get_strategy(name, dims=D2)
    g = one_round(s, D2, [(C1, OV1), (C2, OV2)]).global_state
    a1, b1, a0, b0 = HETERO_EXPECTED[name]
    np.testing.assert_allclose(g["layer1.query.lora_A"], a1)
    np.testing.assert_allclose(g["layer1.query.lora_B"], b1)
    np.testing.assert_allclose(g["layer0.query.lora_A"], a0)
    np.testing.assert_allclose(g["layer0.query.lora_B"], b0)
    start = s.configure(1, [C1])["c1"].start_state  # truncated back to c1's rank 1
    np.testing.assert_allclose(start["layer1.query.lora_A"], [a1[0]])
    np.testing.assert_allclose(start["layer1.query.lora_B"], [[b1[0][0]], [b1[1][0]]])


def test_heterofl_scale_folding_golden():
    # c1: rank 1, alpha 4 -> scale 4, factors folded by sqrt(4) = 2; c2: rank 2, alpha 2 -> scale 1.
    p1 = AdapterPlan(depth=1, ranks=(1,), mask_density=1.0, alpha=4.0)
    p2 = AdapterPlan(depth=1, ranks=(2,), mask_density=1.0, alpha=2.0)
    c1, c2 = ClientInfo("c1", "t1", p1), ClientInfo("c2", "t2", p2)
    s = get_strategy("heterofl", dims=D2)
    g = one_round(
        s,
        D2,
        [
            (c1, {"layer1.query.lora_A": [[1, 1]], "layer1.query.lora_B": [[1], [1]]}),
            (c2, {"layer1.query.lora_A": [[4, 4], [6, 6]], "layer1.query.lora_B": [[3, 5], [7, 9]]}),
        ],
    ).global_state
    np.testing.assert_allclose(g["layer1.query.lora_A"], [[3, 3], [6, 6]])  # ([2,2] + [4,4]) / 2
    np.testing.assert_allclose(g["layer1.query.lora_B"], [[2.5, 5], [4.5, 9]])  # ([2] + [3]) / 2, ([2] + [7]) / 2
    start = s.configure(1, [c1])["c1"].start_state  # unfolded: / 2
    np.testing.assert_allclose(start["layer1.query.lora_A"], [[1.5, 1.5]])
    np.testing.assert_allclose(start["layer1.query.lora_B"], [[1.25], [2.25]])


def test_flexlora_golden_average_of_products_and_svd():
    p1 = AdapterPlan(depth=1, ranks=(1,), mask_density=1.0, alpha=1.0)
    p2 = AdapterPlan(depth=1, ranks=(2,), mask_density=1.0, alpha=2.0)
    c1, c2 = ClientInfo("c1", "t1", p1, num_examples=1), ClientInfo("c2", "t2", p2, num_examples=3)
    s = get_strategy("flexlora", dims=D2)
    g = one_round(
        s,
        D2,
        [
            (c1, {"layer1.query.lora_A": [[2, 4]], "layer1.query.lora_B": [[1], [3]]}),  # dW = [[2,4],[6,12]]
            (c2, {"layer1.query.lora_A": [[4, 6], [8, 10]], "layer1.query.lora_B": [[5, 7], [9, 11]]}),
            # [[76,100],[124,164]]
        ],
    ).global_state
    expected = np.array([[57.5, 76.0], [94.5, 126.0]])  # ([[2,4],[6,12]] + 3*[[76,100],[124,164]]) / 4
    np.testing.assert_allclose(g["layer1.query.delta"], expected)
    asg = s.configure(1, [c1, c2])
    st2 = asg["c2"].start_state
    np.testing.assert_allclose(1.0 * st2["layer1.query.lora_B"] @ st2["layer1.query.lora_A"], expected, rtol=1e-5)
    st1 = asg["c1"].start_state
    product = 1.0 * st1["layer1.query.lora_B"] @ st1["layer1.query.lora_A"]
    # 2x2 singular values from ||M||_F^2 = s1^2 + s2^2 = 33888.5 and |det M| = s1 s2 = 63.
    f, det = 33888.5, 63.0
    s1 = np.sqrt((f + np.sqrt(f * f - 4 * det * det)) / 2)
    s2 = np.sqrt((f - np.sqrt(f * f - 4 * det * det)) / 2)
    assert np.linalg.norm(product) == pytest.approx(s1, rel=1e-5)
    assert np.linalg.norm(expected - product) == pytest.approx(s2, rel=1e-3)


def _fedhft_round0(strategy, dims, plan, rows_by_client, overrides, weights):
    clients = [ClientInfo(cid, "t", plan, num_examples=w) for cid, w in weights.items()]
    asg = strategy.configure(0, clients)
    agg = strategy.aggregator(0)
    for c in clients:
        rows = {"layer0.query.lora_B": rows_by_client[c.client_id], "layer0.value.lora_B": rows_by_client[c.client_id]}
        a = dataclasses.replace(asg[c.client_id], mask=mask_from_rows(plan, dims, rows))
        agg.add(c, a, trained_update(a, dims, overrides[c.client_id]), c.num_examples)
    return agg.finish()


@pytest.mark.parametrize("residual_correction", [True, False])
def test_fedhft_golden_masked_row_average(residual_correction):
    dims = ModelDims(num_layers=1, hidden=4, intermediate=4, num_labels=1)
    plan = AdapterPlan(depth=1, ranks=(2,), mask_density=0.5, alpha=2.0)  # scale 1
    s = get_strategy("fedhft", dims=dims, num_clusters=2, warmup_rounds=5, residual_correction=residual_correction)
    eye = [[1, 0, 0, 0], [0, 1, 0, 0]]  # trained A: dW row i = [B_i0, B_i1, 0, 0]
    st = _fedhft_round0(
        s,
        dims,
        plan,
        {"c1": [0, 1], "c2": [1, 2]},
        {
            "c1": {
                "layer0.query.lora_A": eye,
                "layer0.query.lora_B": [[1, 2], [3, 4], [0, 0], [0, 0]],
                "head.weight": [[1, 1, 1, 1]],
            },
            "c2": {
                "layer0.query.lora_A": eye,
                "layer0.query.lora_B": [[0, 0], [5, 6], [7, 8], [0, 0]],
                "head.weight": [[5, 5, 5, 5]],
            },
        },
        {"c1": 1, "c2": 3},
    )
    # row 0: c1 only; row 1: (1*[3,4] + 3*[5,6]) / 4 = [4.5, 5.5]; row 2: c2 only; row 3: nobody -> previous 0.
    expected = [[1, 2, 0, 0], [4.5, 5.5, 0, 0], [7, 8, 0, 0], [0, 0, 0, 0]]
    assert len(st.cluster_states) == 2
    for cluster in st.cluster_states:  # warm-up: uniform membership, both clusters see the same
        np.testing.assert_allclose(cluster["layer0.query.delta"], expected, atol=1e-6)
        np.testing.assert_allclose(cluster["head.weight"], [[4, 4, 4, 4]])  # (1 + 3*5) / 4
    np.testing.assert_allclose(st.global_state["layer0.query.delta"], expected, atol=1e-6)


def test_fedhft_mask_follows_row_energy_of_start_dw():
    dims = ModelDims(num_layers=1, hidden=4, intermediate=4, num_labels=1)
    plan = AdapterPlan(depth=1, ranks=(2,), mask_density=0.5, alpha=2.0)
    s = get_strategy("fedhft", dims=dims, num_clusters=2, explore=0.0)
    c = ClientInfo("c", "t", plan)
    s.configure(0, [c])  # creates the sites
    dw = np.array([[0, 0, 0, 0], [3, 0, 0, 0], [1, 0, 0, 0], [2, 0, 0, 0]], np.float32)  # energies 0, 9, 1, 4
    for cluster in s.clusters:
        cluster["layer0.query.delta"] = dw.copy()
    a = s.configure(0, [c])["c"]
    assert np.flatnonzero(a.mask[:4]).tolist() == [1, 3]  # top-2 energy rows of the query B
    st = a.start_state
    np.testing.assert_allclose(st["layer0.query.lora_B"] @ st["layer0.query.lora_A"], dw, atol=1e-6)


def test_heterotune_golden_shared_and_specific_branches():
    da = ModelDims(num_layers=2, hidden=2, intermediate=2, num_labels=1)
    db = ModelDims(num_layers=3, hidden=2, intermediate=2, num_labels=2)
    plan = AdapterPlan(depth=1, ranks=(2,), mask_density=1.0, alpha=2.0)  # scale 1
    ca, cb = ClientInfo("ca", "t", plan, backbone="a"), ClientInfo("cb", "t", plan, backbone="b")
    s = get_strategy("heterotune", dims=da, backbone_dims={"a": da, "b": db}, shared_rank=1)
    asg = s.configure(0, [ca, cb])
    agg = s.aggregator(0)
    agg.add(
        ca,
        asg["ca"],
        trained_update(
            asg["ca"],
            da,
            {"layer1.query.lora_A": [[1, 1], [2, 2]], "layer1.query.lora_B": [[1, 3], [1, 3]], "head.weight": [[1, 1]]},
        ),
        1,
    )
    agg.add(
        cb,
        asg["cb"],
        trained_update(
            asg["cb"],
            db,
            {
                "layer2.query.lora_A": [[3, 3], [4, 4]],
                "layer2.query.lora_B": [[5, 7], [5, 7]],
                "head.weight": [[2, 2], [3, 3]],
            },
        ),
        1,
    )
    g = agg.finish().global_state
    # component 0 of each backbone's top layer is shared: ([1,1] + [3,3]) / 2, ([1] + [5]) / 2.
    np.testing.assert_allclose(g["shared/top0.query.2x2.lora_A"], [[2, 2]])
    np.testing.assert_allclose(g["shared/top0.query.2x2.lora_B"], [[3], [3]])
    np.testing.assert_allclose(g["bb/a/layer1.query.lora_A"], [[2, 2]])  # component 1: own backbone only
    np.testing.assert_allclose(g["bb/b/layer2.query.lora_B"], [[7], [7]])
    np.testing.assert_allclose(g["bb/a/head.weight"], [[1, 1]])
    np.testing.assert_allclose(g["bb/b/head.weight"], [[2, 2], [3, 3]])
    start = s.configure(1, [ca])["ca"].start_state
    np.testing.assert_allclose(start["layer1.query.lora_A"], [[2, 2], [2, 2]])
    np.testing.assert_allclose(start["layer1.query.lora_B"], [[3, 3], [3, 3]])


def test_hetlora_sparsity_weighted_golden():
    s = get_strategy("hetlora", dims=D2, sparsity_weighted=True)
    g = one_round(s, D2, [(C1, OV1), (C2, OV2)]).global_state
    # layer-1 norms: ||[[2,4],[6,12]]||_F = sqrt(200); ||[[76,100],[124,164]]||_F = sqrt(58048)
    n1, n2 = np.sqrt(200.0), np.sqrt(58048.0)
    np.testing.assert_allclose(
        g["layer1.query.lora_A"],
        [
            [(2 * n1 + 4 * n2) / (n1 + n2), (4 * n1 + 6 * n2) / (n1 + n2)],
            [8 * n2 / (n1 + n2), 10 * n2 / (n1 + n2)],  # c1 pads component 1 with 0
        ],
        rtol=1e-6,
    )
    # layer 0: c1 lacks it, its norm there is 0, so c2's factors stand alone
    np.testing.assert_allclose(g["layer0.query.lora_A"], [[1, 1], [1, 1]])


def test_fedhft_streaming_equals_batch_masked_row_average():
    """The streaming aggregator vs the batch formula (masked_row_average over trained dW)."""
    from server.strategies._math import masked_row_average, weighted_mean
    from fedhft.layout import rows_from_mask, scatter_update

    from ._helpers import DIMS, fake_train, make_clients

    s = get_strategy("fedhft", dims=DIMS, num_clusters=2, residual_correction=False)
    clients = make_clients(2)
    asg = s.configure(0, clients)
    before = s.current().cluster_states[0]
    agg = s.aggregator(0)
    trained_all = {}
    for i, c in enumerate(clients):
        a = asg[c.client_id]
        trained_all[c.client_id] = fake_train(a, DIMS, i)
        agg.add(c, a, gather_update(a.plan, DIMS, a.start_state, trained_all[c.client_id], a.mask), c.num_examples)
    after = agg.finish().cluster_states[0]
    for layer in range(3):
        key, b = f"layer{layer}.query", f"layer{layer}.query.lora_B"
        vals, masks, ws = [], [], []
        for c in clients:
            a = asg[c.client_id]
            if b not in a.start_state:
                continue
            t = scatter_update(
                a.plan,
                DIMS,
                a.start_state,
                gather_update(a.plan, DIMS, a.start_state, trained_all[c.client_id], a.mask),
                a.mask,
            )
            rank = t[b].shape[1]
            vals.append(a.plan.alpha / rank * t[b].astype(np.float64) @ t[f"layer{layer}.query.lora_A"])
            m = np.zeros(t[b].shape[0])
            m[rows_from_mask(a.plan, DIMS, a.mask)[b]] = 1
            masks.append(m)
            ws.append(c.num_examples)
        expected = masked_row_average(vals, masks, ws, before[key + ".delta"])
        np.testing.assert_allclose(after[key + ".delta"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        after["head.weight"],
        weighted_mean([trained_all[c.client_id]["head.weight"] for c in clients], [c.num_examples for c in clients]),
        rtol=1e-5,
    )

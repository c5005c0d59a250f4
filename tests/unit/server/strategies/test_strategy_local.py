"""Local-only: each client continues from its own trained state; nothing is averaged."""

import numpy as np

from server.strategies import get_strategy

from ._helpers import DIMS, fake_train, make_clients, run_round


def test_each_client_continues_from_its_own_state_and_round_zero_matches_the_others():
    s = get_strategy("local-only", dims=DIMS, seed=3)
    clients = make_clients(2)
    first = s.configure(0, clients)
    fedavg = get_strategy("fedavg-lora", dims=DIMS, seed=3).configure(0, clients)  # trains the low plan
    for c in clients:
        assert first[c.client_id].mask.min() == 1.0 and first[c.client_id].plan == c.plan
        if c.tier == "low":  # round 0: the same seeded adapter init as FedAvg-LoRA's round 0
            for name, value in first[c.client_id].start_state.items():
                np.testing.assert_array_equal(value, fedavg[c.client_id].start_state[name], err_msg=name)
    assignments, _ = run_round(s, 0, clients, lambda c: DIMS)
    nxt = s.configure(1, clients)
    for i, c in enumerate(clients):
        trained = fake_train(assignments[c.client_id], DIMS, 0 * 1000 + sum(map(ord, c.client_id)))
        for name, value in trained.items():
            np.testing.assert_allclose(nxt[c.client_id].start_state[name], value, rtol=1e-6, atol=1e-7)
    a, b = clients[0].client_id, clients[3].client_id  # same tier, different data: never averaged
    assert not np.allclose(nxt[a].start_state["head.weight"], nxt[b].start_state["head.weight"])


def test_state_dict_round_trip_keeps_every_client():
    s = get_strategy("local-only", dims=DIMS, seed=1)
    clients = make_clients(1)
    run_round(s, 0, clients, lambda c: DIMS)
    tensors, meta = s.state_dict()
    t = get_strategy("local-only", dims=DIMS, seed=1)
    t.load_state_dict(tensors, meta)
    for c in clients:
        for name, value in s.configure(1, [c])[c.client_id].start_state.items():
            np.testing.assert_array_equal(value, t.configure(1, [c])[c.client_id].start_state[name])

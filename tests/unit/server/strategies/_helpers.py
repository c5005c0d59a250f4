"""Synthetic fleet for the strategy tests: small dims, three tiers, fake local training."""

from __future__ import annotations

import numpy as np

from devices import AdapterPlan
from fedhft.layout import ModelDims, gather_update, rows_from_mask

DIMS = ModelDims(num_layers=3, hidden=8, intermediate=16, num_labels=3)
DIMS_B = ModelDims(num_layers=4, hidden=8, intermediate=16, num_labels=2)  # a second backbone

PLANS = {
    "low": AdapterPlan(depth=1, ranks=(2,), mask_density=0.25),
    "mid": AdapterPlan(depth=2, ranks=(2, 4), mask_density=0.5),
    "high": AdapterPlan(depth=3, ranks=(2, 4, 4), mask_density=1.0, targets="qv+ffn", alpha=8.0),
}


def make_clients(n_per_tier: int = 2, two_backbones: bool = False):
    from server.strategies import ClientInfo

    clients = []
    for i in range(n_per_tier):
        for j, tier in enumerate(PLANS):
            backbone = "bert-b" if two_backbones and (i + j) % 2 else "bert-a"
            clients.append(ClientInfo(f"{tier}-{i}", tier, PLANS[tier], backbone, num_examples=10 * (j + 1) + i))
    return clients


def fake_train(assignment, dims: ModelDims, seed: int, scale: float = 0.1, head_shift: float = 0.0):
    """A trained state: start + noise, B changed only on masked rows (as a device would)."""
    rng = np.random.default_rng(seed)
    rows = rows_from_mask(assignment.plan, dims, assignment.mask)
    trained = {}
    for name, value in assignment.start_state.items():
        noise = (rng.standard_normal(value.shape) * scale).astype(np.float32)
        if name in rows:
            keep = np.zeros(value.shape[0], bool)
            keep[rows[name]] = True
            noise[~keep] = 0.0
        trained[name] = value + noise
    trained["head.weight"] = trained["head.weight"] + np.float32(head_shift)
    return trained


def client_seed(round_idx: int, client_id: str) -> int:
    return round_idx * 1000 + sum(map(ord, client_id))


def run_round(strategy, round_idx, clients, dims_of, order=None, head_shift=None):
    """configure -> fake training -> streaming aggregation (in ``order``) -> finish."""
    assignments = strategy.configure(round_idx, clients)
    agg = strategy.aggregator(round_idx)
    updates = {}
    for c in clients:
        a = assignments[c.client_id]
        shift = head_shift(c) if head_shift else 0.0
        trained = fake_train(a, dims_of(c), client_seed(round_idx, c.client_id), head_shift=shift)
        updates[c.client_id] = gather_update(a.plan, dims_of(c), a.start_state, trained, a.mask)
    for c in order(clients) if order else clients:
        agg.add(c, assignments[c.client_id], updates[c.client_id], c.num_examples)
    return assignments, agg.finish()

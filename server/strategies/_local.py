"""Local-only training: the reference a federated method must beat on personalized accuracy.

Each client trains alone: it starts from the pretrained model with the same seeded adapter
init as the other strategies' round 0, and every later round continues from its own last
trained state. Nothing is averaged. The committed "global" state is that initial adapter (what
a new client would start from), since local-only has no shared model.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from fedhft.layout import ModelDims, adapted_modules, full_mask, lora_names

from server.strategies._base import Aggregator, ClientAssignment, ClientInfo, Strategy, StrategyState, copy_state
from server.strategies._math import init_a_rows, init_head

_PREFIX = "clients/"


class LocalOnly(Strategy):
    name = "local-only"

    def __init__(self, dims: ModelDims, *, seed: int = 0, backbone_dims: Mapping[str, ModelDims] | None = None):
        super().__init__(dims, seed=seed, backbone_dims=backbone_dims)
        self.clients: dict[str, dict[str, np.ndarray]] = {}

    def initial(self, client: ClientInfo) -> dict[str, np.ndarray]:
        """The client's round-0 adapter: seeded A rows per site, B = 0, seeded head."""
        plan, dims = client.plan, self.dims_for(client)
        state: dict[str, np.ndarray] = {}
        for layer, module, rank in adapted_modules(plan, dims):
            out_f, in_f = dims.module_shape(module)
            a_name, b_name = lora_names(layer, module)
            state[a_name] = init_a_rows(self.seed, f"layer{layer}.{module}", 0, rank, in_f)
            state[b_name] = np.zeros((out_f, rank), np.float32)
        state.update(init_head(self.seed, "head", dims.num_labels, dims.hidden))
        return state

    def assign(self, round_idx: int, client: ClientInfo, rng: np.random.Generator) -> ClientAssignment:
        start = self.initial(client)
        own = self.clients.get(client.client_id)
        if own is not None and {k: v.shape for k, v in own.items()} == {k: v.shape for k, v in start.items()}:
            start = copy_state(own)  # a client whose plan changed (new tier) starts over
        return ClientAssignment(client.plan, start, full_mask(client.plan, self.dims_for(client)))

    def aggregator(self, round_idx: int) -> Aggregator:
        self._check_round(round_idx)
        return LocalOnlyAggregator(self, round_idx)

    def current(self) -> StrategyState:
        """Global = the initial head (no shared model); each client is its own "cluster" (sorted
        by client id), so the per-client models are committed and resumable like cluster states."""
        head = init_head(self.seed, "head", self.dims.num_labels, self.dims.hidden)
        own = [copy_state(self.clients[c]) for c in sorted(self.clients)]
        return StrategyState(self.round_idx, head, self.dims, cluster_states=own)

    def _tensors(self) -> dict[str, np.ndarray]:
        return {f"{_PREFIX}{cid}/{name}": v for cid, state in sorted(self.clients.items()) for name, v in state.items()}

    def _load_tensors(self, tensors: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        self.clients = {}
        for key, value in tensors.items():
            cid, _, name = key[len(_PREFIX) :].partition("/")
            self.clients.setdefault(cid, {})[name] = np.array(value, dtype=np.float32)


class LocalOnlyAggregator(Aggregator):
    """Keeps each client's trained state; O(clients) memory, as the method needs."""

    def __init__(self, strategy: LocalOnly, round_idx: int):
        self.s, self.round_idx, self.trained = strategy, round_idx, {}

    def add(
        self, client: ClientInfo, assignment: ClientAssignment, update: Mapping[str, np.ndarray], weight: float
    ) -> None:
        trained, _ = self._intake(client.client_id, assignment, self.s.dims_for(client), update)
        self.trained[client.client_id] = {k: np.asarray(v, np.float32) for k, v in trained.items()}

    def finish(self) -> StrategyState:
        self._close(self.s, self.round_idx)
        self.s.clients.update(self.trained)
        self.s.round_idx += 1
        return self.s.current()

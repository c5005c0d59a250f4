"""FlexLoRA (Bai et al. 2024): the server keeps the dense weight delta dW = (alpha/r) B @ A of
every site; it averages the clients' dW (over the clients that trained the site, weighted) and
hands each client the rank-r truncated SVD of the average, B = U_r sqrt(S_r / s),
A = sqrt(S_r / s) V_r^T with s = alpha / r, so that s * B @ A is exactly the truncation.
Its dense math runs on one BLAS thread, as FedHFT's (``_threads``: the same bits, no collapse
under load)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from fedhft.layout import ModelDims, adapted_modules, full_mask, lora_names

from server.strategies._base import (
    Aggregator,
    ClientAssignment,
    ClientInfo,
    GlobalStateStrategy,
    StrategyState,
    SvdCache,
    Sums,
)
from server.strategies._math import init_a_rows, init_head, lora_delta, svd_refactor
from server.strategies._threads import OneBlasThreadPlanning, one_blas_thread


class FlexLoRA(OneBlasThreadPlanning, GlobalStateStrategy):
    name = "flexlora"

    def __init__(self, dims: ModelDims, *, seed: int = 0, backbone_dims: Mapping[str, ModelDims] | None = None):
        super().__init__(dims, seed=seed, backbone_dims=backbone_dims)
        self._svd = SvdCache(self.seed)  # all clients of a round share each site's dW

    def _ensure(self, key: str, out_f: int, in_f: int, dims: ModelDims) -> None:
        if key + ".delta" not in self.state:
            self.state[key + ".delta"] = np.zeros((out_f, in_f), np.float32)
        if "head.weight" not in self.state:
            self.state.update(init_head(self.seed, "head", dims.num_labels, dims.hidden))

    def assign(self, round_idx: int, client: ClientInfo, rng: np.random.Generator) -> ClientAssignment:
        plan, dims = client.plan, self.dims_for(client)
        start = {}
        for layer, module, rank in adapted_modules(plan, dims):
            out_f, in_f = dims.module_shape(module)
            key = f"layer{layer}.{module}"
            self._ensure(key, out_f, in_f, dims)
            dw = self.state[key + ".delta"].astype(np.float64)
            a_name, b_name = lora_names(layer, module)
            fill = init_a_rows(self.seed, key, 0, rank, in_f)
            start[a_name], start[b_name] = svd_refactor(
                dw, rank, plan.alpha / rank, fill, svd=self._svd.get(key, dw, rank)
            )
        start["head.weight"], start["head.bias"] = self.state["head.weight"].copy(), self.state["head.bias"].copy()
        return ClientAssignment(plan, start, full_mask(plan, dims))

    def aggregator(self, round_idx: int) -> Aggregator:
        self._check_round(round_idx)
        return FlexLoRAAggregator(self, round_idx)

    def _load_tensors(self, tensors: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        super()._load_tensors(tensors, meta)
        self._svd = SvdCache(self.seed)


class FlexLoRAAggregator(Aggregator):
    def __init__(self, strategy: FlexLoRA, round_idx: int):
        self.s, self.round_idx, self.sums = strategy, round_idx, Sums()

    def add(
        self, client: ClientInfo, assignment: ClientAssignment, update: Mapping[str, np.ndarray], weight: float
    ) -> None:
        with one_blas_thread():
            self._add(client, assignment, update, weight)

    def _add(
        self, client: ClientInfo, assignment: ClientAssignment, update: Mapping[str, np.ndarray], weight: float
    ) -> None:
        plan, dims = assignment.plan, self.s.dims_for(client)
        trained, rows = self._intake(client.client_id, assignment, dims, update)
        for layer, module, rank in adapted_modules(plan, dims):
            a_name, b_name = lora_names(layer, module)
            dw = lora_delta(trained[a_name], trained[b_name], plan.alpha / rank)
            cover = np.zeros(dw.shape[0])
            cover[rows[b_name]] = 1.0  # all rows under FlexLoRA's full mask
            self.sums.add(f"layer{layer}.{module}.delta", dw, float(weight) * cover[:, None], full_axes=(0,))
        self.sums.add("head.weight", trained["head.weight"], float(weight))
        self.sums.add("head.bias", trained["head.bias"], float(weight))

    def finish(self) -> StrategyState:
        self._close(self.s, self.round_idx)
        st = self.s
        st.state, st._svd = self.sums.fold(st.state), SvdCache(st.seed)
        st.round_idx += 1
        return st.current()

"""Strategies whose global state is LoRA factors (FedAvg-LoRA, HetLoRA, HeteroFL, LEGEND,
HeteroTune): one machinery, parametrized by how a client's rank components map onto global
factors (``segments``) and by which elements count in the average (``count_padding``).

Global factors are stored scale-folded: ``A_g = sqrt(alpha/r) * A``, ``B_g = sqrt(alpha/r) * B``,
so that ``B_g @ A_g`` is the client's real weight delta whatever its rank. Without folding, the
same component means ``alpha/2`` times its product for a rank-2 client and ``alpha/8`` times for a
rank-8 one, and averaging raw factors across ranks would mix different scales.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from fedhft.layout import ModelDims, adapted_modules, full_mask, lora_names

from server.strategies._base import (
    Aggregator,
    ClientAssignment,
    ClientInfo,
    GlobalStateStrategy,
    StrategyState,
    Sums,
)
from server.strategies._math import init_a_rows, init_head, zero_pad


@dataclass(frozen=True)
class Segment:
    """Client rank components ``[lo, hi)`` of one site live at global components
    ``[g_lo, g_lo + hi - lo)`` of the factors stored under ``key``."""

    key: str
    lo: int
    hi: int
    g_lo: int = 0

    @property
    def g_hi(self) -> int:
        return self.g_lo + self.hi - self.lo


class FactorStrategy(GlobalStateStrategy):
    #: zeros beyond a client's rank count in the average (HetLoRA's zero-padding) instead of
    #: averaging each component over the clients that have it (HeteroFL).
    count_padding = False
    #: a client without a site counts as all-zero factors there (HetLoRA has no notion of depth).
    pad_missing_layers = False
    #: store factors scale-folded (see module doc); FedAvg's single plan has one scale, so not needed.
    fold_scale = True
    #: HetLoRA's sparsity-weighted aggregation: a client's weight at a site is also multiplied by
    #: the Frobenius norm of its dW there, so near-empty (e.g. freshly padded) updates count less.
    sparsity_weighted = False

    # -- hooks ---------------------------------------------------------------------------------
    def plan_for(self, client: ClientInfo):
        return client.plan

    def segments(self, client: ClientInfo, dims: ModelDims, layer: int, module: str, rank: int) -> list[Segment]:
        return [Segment(f"layer{layer}.{module}", 0, rank, 0)]

    def head_key(self, client: ClientInfo) -> str:
        return "head"

    # -- state -----------------------------------------------------------------------------------
    def _ensure_site(self, key: str, rank: int, out_f: int, in_f: int) -> None:
        """Create or grow a global site to at least ``rank`` components: new A rows get their
        seeded init (they depend only on (seed, key, component)), new B columns are 0."""
        a_key, b_key = key + ".lora_A", key + ".lora_B"
        a = self.state.get(a_key, np.zeros((0, in_f), np.float32))
        if a.shape[1] != in_f or (b_key in self.state and self.state[b_key].shape[0] != out_f):
            raise ValueError(
                f"site {key} has shape {self.state[b_key].shape[0]}x{a.shape[1]}, a client needs {out_f}x{in_f}"
            )
        cur = a.shape[0]
        if rank > cur:
            self.state[a_key] = np.concatenate([a, init_a_rows(self.seed, key, cur, rank, in_f)])
            self.state[b_key] = zero_pad(self.state.get(b_key, np.zeros((out_f, 0), np.float32)), (out_f, rank))

    def _ensure_head(self, key: str, dims: ModelDims) -> None:
        if key + ".weight" not in self.state:
            head = init_head(self.seed, key, dims.num_labels, dims.hidden)
            self.state[key + ".weight"], self.state[key + ".bias"] = head["head.weight"], head["head.bias"]

    def site_keys(self) -> list[str]:
        return sorted(k[: -len(".lora_A")] for k in self.state if k.endswith(".lora_A"))

    def _root(self, plan, rank: int) -> float:
        return float(np.sqrt(plan.alpha / rank)) if self.fold_scale else 1.0

    # -- API -------------------------------------------------------------------------------------
    def assign(self, round_idx: int, client: ClientInfo, rng: np.random.Generator) -> ClientAssignment:
        plan, dims = self.plan_for(client), self.dims_for(client)
        start: dict[str, np.ndarray] = {}
        for layer, module, rank in adapted_modules(plan, dims):
            out_f, in_f = dims.module_shape(module)
            a, b = np.zeros((rank, in_f), np.float32), np.zeros((out_f, rank), np.float32)
            for seg in self.segments(client, dims, layer, module, rank):
                self._ensure_site(seg.key, seg.g_hi, out_f, in_f)
                a[seg.lo : seg.hi] = self.state[seg.key + ".lora_A"][seg.g_lo : seg.g_hi]
                b[:, seg.lo : seg.hi] = self.state[seg.key + ".lora_B"][:, seg.g_lo : seg.g_hi]
            root = self._root(plan, rank)
            a_name, b_name = lora_names(layer, module)
            start[a_name], start[b_name] = a / np.float32(root), b / np.float32(root)
        hk = self.head_key(client)
        self._ensure_head(hk, dims)
        start["head.weight"], start["head.bias"] = self.state[hk + ".weight"].copy(), self.state[hk + ".bias"].copy()
        return ClientAssignment(plan, start, full_mask(plan, dims))

    def aggregator(self, round_idx: int) -> Aggregator:
        self._check_round(round_idx)
        return FactorAggregator(self, round_idx)


class FactorAggregator(Aggregator):
    """Per element of every global factor: sum of w * value and of w over the clients that count
    there; the result is their ratio, elements nobody counted keep their value."""

    def __init__(self, strategy: FactorStrategy, round_idx: int):
        self.s = strategy
        self.round_idx = round_idx
        self.sums = Sums()

    def add(
        self, client: ClientInfo, assignment: ClientAssignment, update: Mapping[str, np.ndarray], weight: float
    ) -> None:
        st, plan, dims = self.s, assignment.plan, self.s.dims_for(client)
        trained, rows = self._intake(client.client_id, assignment, dims, update)
        w, touched = float(weight), set()
        for layer, module, rank in adapted_modules(plan, dims):
            a_name, b_name = lora_names(layer, module)
            root = st._root(plan, rank)
            a, b = trained[a_name] * root, trained[b_name] * root
            row_cover = np.zeros(b.shape[0])
            row_cover[rows[b_name]] = 1.0
            w_site = w * float(np.linalg.norm(b.astype(np.float64) @ a)) if st.sparsity_weighted else w
            for seg in st.segments(client, dims, layer, module, rank):
                touched.add(seg.key)
                self._add_segment(seg, a, b, row_cover, w_site)
        if st.pad_missing_layers and not st.sparsity_weighted:  # a missing layer's norm is 0
            for key in set(st.site_keys()) - touched:
                r, in_f = st.state[key + ".lora_A"].shape
                out_f = st.state[key + ".lora_B"].shape[0]
                self._add_segment(Segment(key, 0, 0, 0), np.zeros((0, in_f)), np.zeros((out_f, 0)), np.ones(out_f), w)
        hk = st.head_key(client)
        self.sums.add(hk + ".weight", trained["head.weight"], w)
        self.sums.add(hk + ".bias", trained["head.bias"], w)

    def _add_segment(self, seg: Segment, a: np.ndarray, b: np.ndarray, row_cover: np.ndarray, w: float) -> None:
        """Place the segment's components at their global position (zeros elsewhere) and count
        either all global components (zero-padding) or only the segment's."""
        global_rank = self.s.state[seg.key + ".lora_A"].shape[0]
        va = np.zeros((global_rank, a.shape[1]))
        vb = np.zeros((b.shape[0], global_rank))
        va[seg.g_lo : seg.g_hi] = a[seg.lo : seg.hi]
        vb[:, seg.g_lo : seg.g_hi] = b[:, seg.lo : seg.hi]
        comp = np.zeros(global_rank)
        if self.s.count_padding:
            comp[:] = 1.0
        else:
            comp[seg.g_lo : seg.g_hi] = 1.0
        self.sums.add(seg.key + ".lora_A", va, w * comp[:, None], full_axes=(0,))
        self.sums.add(seg.key + ".lora_B", vb, w * row_cover[:, None] * comp[None, :], full_axes=(0, 1))

    def finish(self) -> StrategyState:
        self._close(self.s, self.round_idx)
        st = self.s
        st.state = self.sums.fold(st.state)
        st.round_idx += 1
        return st.current()

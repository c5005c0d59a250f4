"""HetLoRA (Cho et al. 2024): clients keep their tier ranks; the server zero-pads every client's
factors to the global (max) rank, takes the weighted average, and each client gets the first r
components back (truncation).

Zero-padding means a rank-r client counts as 0 in components r..R-1 (the dilution of high-rank
components that HetLoRA accepts). HetLoRA has no notion of depth; with ``pad_missing_layers``
(default) a client that does not adapt a layer counts as rank 0 there, the literal "pad to the
max"; LEGEND's layer-wise average is the alternative. ``sparsity_weighted`` turns on the
paper's sparsity-weighted aggregation (weights x ||dW_k||_F per site; a layer a client lacks then
has norm 0 and does not count). Not implemented: the paper's local rank self-pruning.
"""

from __future__ import annotations

from typing import Any, Mapping

from fedhft.layout import ModelDims

from server.strategies._factor import FactorStrategy


class HetLoRA(FactorStrategy):
    name = "hetlora"
    count_padding = True

    def __init__(
        self,
        dims: ModelDims,
        *,
        seed: int = 0,
        pad_missing_layers: bool = True,
        sparsity_weighted: bool = False,
        backbone_dims: Mapping[str, ModelDims] | None = None,
    ):
        super().__init__(dims, seed=seed, backbone_dims=backbone_dims)
        self.pad_missing_layers = bool(pad_missing_layers)
        self.sparsity_weighted = bool(sparsity_weighted)

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "pad_missing_layers": self.pad_missing_layers,
            "sparsity_weighted": self.sparsity_weighted,
        }

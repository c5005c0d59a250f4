"""HeteroTune (Jia et al. 2024) cross-model aggregation, our deployable reading of it.

Clients may run different backbones (``ClientInfo.backbone``; shapes from ``backbone_dims``).
Each LoRA site is a two-branch adapter split along its rank components:

* shared branch = the first ``shared_rank`` components, aggregated across ALL backbones at the
  sites that match: same module, same position counted from the output layer (top0 = last layer),
  same (out, in) shape. Counting from the output follows LEGEND's observation that the layers
  near the output carry the task; backbones of different depths still align there;
* model-specific branch = the remaining components, aggregated only within the backbone;
* the head is per backbone.

Every element is averaged over the clients that have it (no zero-padding dilution). The paper
distils knowledge between models through a shared adapter; here the shared branch is plainly
averaged, which needs no public data on the server and no extra device compute.
"""

from __future__ import annotations

from typing import Any, Mapping

from fedhft.layout import ModelDims

from server.strategies._base import ClientInfo
from server.strategies._factor import FactorStrategy, Segment


class HeteroTune(FactorStrategy):
    name = "heterotune"
    count_padding = False

    def __init__(
        self,
        dims: ModelDims,
        *,
        seed: int = 0,
        shared_rank: int = 2,
        backbone_dims: Mapping[str, ModelDims] | None = None,
    ):
        if shared_rank < 1:
            raise ValueError(f"shared_rank must be >= 1, got {shared_rank}")
        super().__init__(dims, seed=seed, backbone_dims=backbone_dims)
        self.shared_rank = int(shared_rank)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "shared_rank": self.shared_rank}

    def segments(self, client: ClientInfo, dims: ModelDims, layer: int, module: str, rank: int) -> list[Segment]:
        out_f, in_f = dims.module_shape(module)
        top = dims.num_layers - 1 - layer
        shared = min(rank, self.shared_rank)
        segs = [Segment(f"shared/top{top}.{module}.{out_f}x{in_f}", 0, shared, 0)]
        if rank > shared:
            segs.append(Segment(f"bb/{client.backbone}/layer{layer}.{module}", shared, rank, 0))
        return segs

    def head_key(self, client: ClientInfo) -> str:
        return f"bb/{client.backbone}/head"

"""Weight-only int8 storage for the frozen backbone.

Per-output-channel symmetric int8 (scale = max|w| / 127 per row). The math stays fp32: each
forward dequantizes. This is the only int8 form that all three training backends accept
(ORT's dynamic/QDQ quantization and ExecuTorch's int8 kernels break the gradient build:
docs/DESIGN-NOTES.md), and it is what makes a low-tier bundle ~3-4x smaller.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

#: Embedding tables with at least this many rows are stored int8 (smaller ones, positions and token
#: types, are not worth a scale per row and stay fp32).
EMBEDDING_INT8_MIN_ROWS = 1025


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: returns (int8 weight, fp32 scale per row)."""
    w = weight.detach().to(torch.float32)
    scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


class Int8Linear(nn.Module):
    """A frozen linear layer whose weight is stored int8 with one fp32 scale per output row."""

    def __init__(self, out_features: int, in_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        q = cls(linear.out_features, linear.in_features, linear.bias is not None)
        q.weight_int8.copy_(quantize_rows(linear.weight)[0])
        q.weight_scale.copy_(quantize_rows(linear.weight)[1])
        if linear.bias is not None:
            q.bias.copy_(linear.bias.detach())
        return q

    def dequantized_weight(self) -> torch.Tensor:
        return self.weight_int8.to(torch.float32) * self.weight_scale[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantized_weight(), self.bias)


class Int8Embedding(nn.Module):
    """A frozen embedding table stored int8 per row; only the looked-up rows are dequantized."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.register_buffer("weight_int8", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(num_embeddings))

    @classmethod
    def from_embedding(cls, emb: nn.Embedding) -> "Int8Embedding":
        q = cls(emb.num_embeddings, emb.embedding_dim, emb.padding_idx)
        w8, scale = quantize_rows(emb.weight)
        q.weight_int8.copy_(w8)
        q.weight_scale.copy_(scale)
        return q

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # Gather the int8 rows first: dequantizing the whole table would cost vocab x dim floats per step.
        rows = F.embedding(ids, self.weight_int8).to(torch.float32)
        return rows * F.embedding(ids, self.weight_scale[:, None])


def quantize_frozen(module: nn.Module, skip: set[int] | None = None) -> int:
    """Replace every nn.Linear / nn.Embedding below ``module`` (except ids in ``skip``) by its
    int8 twin. Returns the number of weights converted."""
    skip = skip or set()
    count = 0
    for name, child in list(module.named_children()):
        if id(child) in skip:
            continue
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear.from_linear(child))
            count += child.weight.numel()
        elif isinstance(child, nn.Embedding) and child.num_embeddings >= EMBEDDING_INT8_MIN_ROWS:
            setattr(module, name, Int8Embedding.from_embedding(child))
            count += child.weight.numel()
        else:
            count += quantize_frozen(child, skip)
    return count

"""PyTorch eager session: the reference backend (Jetson with CUDA, or any device with torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedhft.manifest import Manifest
from bundle_runtime.sessions._base import ADAM_BETAS, ADAM_EPS, WEIGHT_DECAY, check_mask, check_state


def _import_runtime(bundle_dir: Path | None = None) -> None:
    """torch, and the transformers model code that opening ``bundle_dir`` imports.

    transformers imports lazily: ``import transformers`` is cheap, and the first ``AutoModel`` pulls
    in modeling_utils with its quantizer integrations (~130 MB here), then the architecture's module.
    """
    import torch  # noqa: F401
    import transformers.modeling_utils  # noqa: F401

    from bundle_runtime._torch_bundle import model_class

    if bundle_dir is not None:
        model_class(bundle_dir)


class EagerSession:
    """A session over an in-memory AdapterModel (the parity reference, and the torch bundle's engine)."""

    def __init__(self, model, manifest: Manifest, device: str = "cpu", bundle_dir: Path | None = None):
        import torch

        self._torch = torch
        self.bundle_dir, self.manifest, self.device = bundle_dir, manifest, device
        self.model = model.to(device)
        self._mask = torch.ones(manifest.mask_length, device=device)
        self._opt = None
        self._frozen: _FrozenCache | None = None

    def set_state(self, tensors: dict[str, np.ndarray]) -> None:
        check_state(self.manifest, tensors)
        self.model.set_trainable(tensors)

    def get_state(self) -> dict[str, np.ndarray]:
        return self.model.get_trainable()

    def begin_round(self, mask: np.ndarray, lr: float) -> None:
        self._mask = self._torch.as_tensor(check_mask(self.manifest, mask), device=self.device)
        params = [p for _, p in self.model.trainable()]
        self._opt = self._torch.optim.AdamW(params, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=WEIGHT_DECAY)

    def cache_frozen(self, max_mb: float) -> None:
        """Trade memory for time, for a host with no memory budget (an in-process engine): the
        frozen int8 weights are dequantized once instead of at every forward, and each example's
        hidden states below the lowest adapted layer (which no adapter changes) are kept, up to
        ``max_mb``, and reused instead of running the frozen layers again. Results stay bit-identical:
        see ``_FrozenCache``."""
        from bundle_runtime._quant import Int8Linear

        _replace_modules(self.model.encoder, Int8Linear, _dequantized_linear)
        if self.model.first_adapted > 0:
            self._frozen = _FrozenCache(self.model, max_mb, self.device)

    def cache_frozen_rows(self, input_ids, attention_mask, batch_size: int) -> None:
        """Fill ``cache_frozen``'s cache with these examples as batches of ``batch_size`` compute
        them: one pass over a client's training rows instead of one per round (no-op without it)."""
        if self._frozen is not None:
            self._frozen.fill(np.asarray(input_ids, np.int64), np.asarray(attention_mask, np.int64), int(batch_size))

    @property
    def frozen_stats(self) -> dict[str, float]:
        """Hits and misses of ``cache_frozen``'s cache, in batches, and its size in MB."""
        f = self._frozen
        return {"hits": f.hits, "misses": f.misses, "mb": f.bytes / 2**20} if f else {}

    def _tensors(self, *arrays):
        return [self._torch.as_tensor(np.ascontiguousarray(a, dtype=np.int64), device=self.device) for a in arrays]

    def train_step(self, input_ids, attention_mask, labels) -> float:
        if self._opt is None:
            raise RuntimeError("call begin_round(mask, lr) before train_step")
        ids, attn, y = self._tensors(input_ids, attention_mask, labels)
        self._opt.zero_grad(set_to_none=True)
        if self._frozen is None:
            loss, _ = self.model(ids, attn, y, self._mask)
        else:  # what AdapterModel.forward computes, from the cached frozen part
            below = self._frozen.below(input_ids, attention_mask, ids, attn)
            loss = self._torch.nn.functional.cross_entropy(self.model.logits(ids, attn, self._mask, below), y)
        loss.backward()
        self._opt.step()
        return float(loss.detach())

    def logits(self, input_ids, attention_mask) -> np.ndarray:
        ids, attn = self._tensors(input_ids, attention_mask)
        with self._torch.no_grad():
            below = None if self._frozen is None else self._frozen.below(input_ids, attention_mask, ids, attn)
            return self.model.logits(ids, attn, self._mask, below).float().cpu().numpy()


class _FrozenCache:
    """Hidden states entering the lowest adapted layer, per (example's token ids, batch shape).

    Why it is exact: at one batch shape, each example's rows come out of every layer with the same
    bits whatever the other examples of the batch and its position in it (each op works row by row,
    with kernels chosen by shape only; tests/unit/test_frozen_cache.py checks it), so a row computed
    once in a batch of shape (B, S) is what any later batch of that shape would compute. Batches of
    another shape compute their own rows. A batch with any row missing runs the frozen layers whole."""

    def __init__(self, model, max_mb: float, device: str = "cpu"):
        self.model, self.max_bytes, self.device = model, int(max_mb * 2**20), device
        self.rows: dict[bytes, object] = {}
        self.bytes = self.hits = self.misses = 0

    @staticmethod
    def _keys(ids_np: np.ndarray, attn_np: np.ndarray, batch: int) -> list[bytes]:
        shape = np.asarray([batch, ids_np.shape[1]], np.int64).tobytes()
        return [shape + ids_np[i].tobytes() + attn_np[i].tobytes() for i in range(len(ids_np))]

    def below(self, input_ids, attention_mask, ids, attn):
        """The hidden states entering the lowest adapted layer for this batch (tensors ``ids``, ``attn``)."""
        import torch

        ids_np = np.ascontiguousarray(input_ids, dtype=np.int64)
        attn_np = np.ascontiguousarray(attention_mask, dtype=np.int64)
        keys = self._keys(ids_np, attn_np, len(ids_np))
        found = [self.rows.get(k) for k in keys]
        if all(f is not None for f in found):
            self.hits += 1
            return torch.stack(found)
        self.misses += 1
        with torch.no_grad():
            hidden = self.model.hidden_below(ids, attn)
        self._store(keys, hidden)
        return hidden

    def fill(self, ids_np: np.ndarray, attn_np: np.ndarray, batch: int) -> None:
        """Cache the rows not cached yet, computed in batches of shape (batch, seq); a short last
        batch is filled up with copies of its first row, whose results are dropped."""
        import torch

        keys = self._keys(ids_np, attn_np, batch)
        todo = np.asarray([i for i, k in enumerate(keys) if k not in self.rows], np.int64)
        for start in range(0, len(todo), batch):
            rows = todo[start : start + batch]
            if self.bytes + len(rows) * self._row_bytes(ids_np) > self.max_bytes:
                return
            padded = np.concatenate([rows, np.full(batch - len(rows), rows[0], np.int64)])
            with torch.no_grad():
                ids, attn = (torch.as_tensor(a[padded], device=self.device) for a in (ids_np, attn_np))
                hidden = self.model.hidden_below(ids, attn)
            self._store([keys[i] for i in rows], hidden[: len(rows)])

    def _row_bytes(self, ids_np: np.ndarray) -> int:
        return int(ids_np.shape[1]) * int(self.model.dims.hidden) * 4

    def _store(self, keys: list[bytes], hidden) -> None:
        for key, row in zip(keys, hidden):
            if key not in self.rows and self.bytes + row.nbytes <= self.max_bytes:
                self.rows[key] = row.clone()
                self.bytes += row.nbytes


def _dequantized_linear(layer):
    """A plain frozen nn.Linear holding an Int8Linear's dequantized weight: the same F.linear on
    the same values, without dequantizing at every call."""
    from torch import nn

    plain = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    plain.weight.data = layer.dequantized_weight()
    if layer.bias is not None:
        plain.bias.data = layer.bias.detach().clone()
    return plain.requires_grad_(False).to(layer.weight_int8.device)


def _replace_modules(module, kind: type, make) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, kind):
            setattr(module, name, make(child))
        else:
            _replace_modules(child, kind, make)


class TorchSession(EagerSession):
    def __init__(self, bundle_dir: Path, manifest: Manifest, device: str | None = None, threads: int | None = None):
        import torch

        from bundle_runtime._torch_bundle import load_bundle_model

        if threads:
            torch.set_num_threads(threads)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        super().__init__(load_bundle_model(bundle_dir, manifest, device), manifest, device, Path(bundle_dir))

"""PyTorch eager session: the reference backend (Jetson with CUDA, or any device with torch)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fedhft.manifest import Manifest
from edge_runtime.sessions._base import ADAM_BETAS, ADAM_EPS, WEIGHT_DECAY, check_mask, check_state


def _import_runtime(bundle_dir: Path | None = None) -> None:
    """torch, and the transformers model code that opening ``bundle_dir`` imports.

    transformers imports lazily: ``import transformers`` is cheap, and the first ``AutoModel`` pulls
    in modeling_utils with its quantizer integrations (~130 MB here), then the architecture's module.
    """
    import torch  # noqa: F401
    import transformers.modeling_utils  # noqa: F401

    from export._torch_backend import model_class

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

    def set_state(self, tensors: dict[str, np.ndarray]) -> None:
        check_state(self.manifest, tensors)
        self.model.set_trainable(tensors)

    def get_state(self) -> dict[str, np.ndarray]:
        return self.model.get_trainable()

    def begin_round(self, mask: np.ndarray, lr: float) -> None:
        self._mask = self._torch.as_tensor(check_mask(self.manifest, mask), device=self.device)
        params = [p for _, p in self.model.trainable()]
        self._opt = self._torch.optim.AdamW(params, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=WEIGHT_DECAY)

    def _tensors(self, *arrays):
        return [self._torch.as_tensor(np.ascontiguousarray(a, dtype=np.int64), device=self.device) for a in arrays]

    def train_step(self, input_ids, attention_mask, labels) -> float:
        if self._opt is None:
            raise RuntimeError("call begin_round(mask, lr) before train_step")
        ids, attn, y = self._tensors(input_ids, attention_mask, labels)
        self._opt.zero_grad(set_to_none=True)
        loss, _ = self.model(ids, attn, y, self._mask)
        loss.backward()
        self._opt.step()
        return float(loss.detach())

    def logits(self, input_ids, attention_mask) -> np.ndarray:
        ids, attn = self._tensors(input_ids, attention_mask)
        with self._torch.no_grad():
            return self.model.logits(ids, attn, self._mask).float().cpu().numpy()


class TorchSession(EagerSession):
    def __init__(self, bundle_dir: Path, manifest: Manifest, device: str | None = None, threads: int | None = None):
        import torch

        from export._torch_backend import load_bundle_model

        if threads:
            torch.set_num_threads(threads)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        super().__init__(load_bundle_model(bundle_dir, manifest, device), manifest, device, Path(bundle_dir))

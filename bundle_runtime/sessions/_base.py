"""The one interface every backend's training session implements."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from fedhft.manifest import Manifest

# AdamW as torch defines it; ORT must be told adam_mode=0 to match (its default is the HF variant).
# The values live in fedhft.manifest, which writes them into every bundle's manifest.
from fedhft.manifest import ADAM_BETAS, ADAM_EPS, WEIGHT_DECAY  # noqa: F401  (re-exported to the sessions)


@runtime_checkable
class TrainingSession(Protocol):
    manifest: Manifest
    bundle_dir: Path

    def set_state(self, tensors: dict[str, np.ndarray]) -> None:
        """Load trainable tensors (canonical names, float32)."""

    def get_state(self) -> dict[str, np.ndarray]:
        """Copies of the trainable tensors (canonical names, float32)."""

    def begin_round(self, mask: np.ndarray, lr: float) -> None:
        """Set the round's mask and start a FRESH optimizer (no moments leak across mask changes)."""

    def train_step(self, input_ids: np.ndarray, attention_mask: np.ndarray, labels: np.ndarray) -> float:
        """One optimizer step on one batch (int64 arrays); returns the loss before the step."""

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Eval forward with the current weights and mask: [batch, num_labels] float32."""


def check_state(manifest: Manifest, tensors: dict[str, np.ndarray]) -> None:
    """Raise ValueError naming every tensor that does not fit the bundle's layout."""
    problems = []
    for spec in manifest.trainable:
        if spec.name not in tensors:
            problems.append(f"{spec.name} missing")
        elif tuple(np.shape(tensors[spec.name])) != tuple(spec.shape):
            problems.append(f"{spec.name} has shape {tuple(np.shape(tensors[spec.name]))}, bundle needs {spec.shape}")
    extra = sorted(set(tensors) - {s.name for s in manifest.trainable})
    if extra:
        problems.append(f"unknown tensors {extra[:5]}")
    if problems:
        raise ValueError("state does not fit the bundle: " + "; ".join(problems))


def check_mask(manifest: Manifest, mask: np.ndarray) -> np.ndarray:
    mask = np.ascontiguousarray(mask, dtype=np.float32)
    if mask.shape != (manifest.mask_length,):
        raise ValueError(f"mask has shape {mask.shape}, the bundle needs ({manifest.mask_length},)")
    if not np.all((mask == 0.0) | (mask == 1.0)):
        raise ValueError("mask must hold only 0.0 and 1.0")
    return mask

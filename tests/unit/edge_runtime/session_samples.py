"""A token batch and alternating row masks, shared by the ORT and ExecuTorch session tests."""

from __future__ import annotations

import numpy as np

from fedhft.layout import mask_from_rows, mask_layout


def token_batch(seed=0, batch=4, seq=12):
    """(input ids, attention mask, labels) of a random batch."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 2000, size=(batch, seq), dtype=np.int64)
    return ids, np.ones_like(ids), (np.arange(batch) % 2).astype(np.int64)


def half_mask(manifest, parity):
    """Every other row of each B (even rows for parity 0, odd for 1)."""
    rows = {s.b_name: np.arange(parity, s.rows, 2) for s in mask_layout(manifest.plan, manifest.dims)}
    return mask_from_rows(manifest.plan, manifest.dims, rows)

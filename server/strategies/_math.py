"""Pure array math shared by the strategies: arrays in, arrays out, no state, no I/O.

Conventions: a LoRA site has ``A`` ``[r, in]`` and ``B`` ``[out, r]``; its dense weight delta is
``dW = scale * B @ A`` with ``scale = alpha / r`` (``[out, in]``).
"""

from __future__ import annotations

import math
import zlib
from typing import Mapping, Sequence

import numpy as np


def stable_hash(text: str) -> int:
    """A process-independent 32-bit hash (Python's ``hash`` is salted per process)."""
    return zlib.crc32(text.encode("utf-8"))


def weighted_mean(arrays: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """sum_i w_i x_i / sum_i w_i, computed in float64 (FedAvg's core)."""
    if len(arrays) != len(weights) or not arrays:
        raise ValueError(f"need one weight per array and at least one array, got {len(arrays)} and {len(weights)}")
    w = np.asarray(weights, dtype=np.float64)
    if np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be >= 0 with a positive sum, got {w.tolist()}")
    acc = sum(wi * np.asarray(x, dtype=np.float64) for wi, x in zip(w, arrays))
    return acc / w.sum()


def zero_pad(arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``arr`` in the top-left corner of a zero array of ``shape`` (each dim >= arr's)."""
    if any(s < a for s, a in zip(shape, arr.shape)) or len(shape) != arr.ndim:
        raise ValueError(f"cannot pad shape {arr.shape} to {shape}")
    out = np.zeros(shape, dtype=arr.dtype)
    out[tuple(slice(0, a) for a in arr.shape)] = arr
    return out


def pad_rank(a: np.ndarray, b: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad LoRA factors to ``rank`` components (HetLoRA): B @ A is unchanged."""
    return zero_pad(a, (rank, a.shape[1])), zero_pad(b, (b.shape[0], rank))


def truncate_rank(a: np.ndarray, b: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``rank`` components of LoRA factors (copies)."""
    if rank > a.shape[0]:
        raise ValueError(f"cannot truncate rank {a.shape[0]} factors to a larger rank {rank}")
    return a[:rank].copy(), b[:, :rank].copy()


def lora_delta(a: np.ndarray, b: np.ndarray, scale: float) -> np.ndarray:
    """Dense dW = scale * B @ A in float64."""
    return scale * (np.asarray(b, dtype=np.float64) @ np.asarray(a, dtype=np.float64))


def truncated_svd(delta: np.ndarray, rank: int, seed: int = 0, oversample: int = 8, power_iters: int = 3):
    """(U, S, Vt) with at least the top ``rank`` singular triplets of ``delta``.

    Small matrices (or ranks close to the size) get the exact SVD. Large ones get a seeded
    randomized range finder (Halko et al. 2011) with power iterations: O(out*in*(rank+p)) instead
    of O(out*in*min(out,in)), and exact whenever rank(delta) <= rank + oversample (e.g. an average
    of few low-rank products). An all-zero delta (round 0) needs no factorization at all.
    """
    delta = np.asarray(delta, dtype=np.float64)
    out_f, in_f = delta.shape
    if not delta.any():
        return np.zeros((out_f, 0)), np.zeros(0), np.zeros((0, in_f))
    width = rank + oversample
    if min(out_f, in_f) <= max(64, 2 * width):
        return np.linalg.svd(delta, full_matrices=False)
    omega = np.random.default_rng([seed, out_f, in_f, rank]).standard_normal((in_f, width))
    q, _ = np.linalg.qr(delta @ omega)
    for _ in range(power_iters):  # re-orthonormalize each pass: plain powers lose the tail in rounding
        z, _ = np.linalg.qr(delta.T @ q)
        q, _ = np.linalg.qr(delta @ z)
    u_small, s, vt = np.linalg.svd(q.T @ delta, full_matrices=False)
    return q @ u_small, s, vt


def svd_width(rank: int) -> int:
    """How many triplets to compute for a client of ``rank``: a fixed bucket (32, 64, ...), so a
    client's factors depend only on its own rank, never on which ranks were asked for first."""
    return max(32, 1 << (max(rank, 1) - 1).bit_length())


def svd_refactor(
    delta: np.ndarray,
    rank: int,
    scale: float,
    fill_a: np.ndarray | None = None,
    svd=None,
    a_row_norm: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Best rank-``rank`` factors of ``delta``: B = U_r sqrt(S_r/scale), A = sqrt(S_r/scale) V_r^T.

    So that ``scale * B @ A`` is the truncated SVD of ``delta``. Components whose singular value
    is zero (all of them when delta = 0, e.g. round 0) would give A = B = 0, a saddle where
    neither factor gets a gradient: those rows of A take ``fill_a``'s rows (a fixed random init)
    and their B columns stay 0, which keeps the product exact and the adapter trainable.
    ``svd`` = a precomputed (U, S, Vt) of delta with at least ``rank`` triplets (cache across ranks);
    with it, ``delta`` itself is not needed (None).
    ``a_row_norm``: A = a_row_norm V_r^T and B = U_r S_r / (scale a_row_norm) instead, the same product.
    Balanced factors of a small delta are small, and a small A makes every step on B move the product
    little; rows of A at a fresh init's norm keep B's steps as effective as a fresh LoRA's.
    """
    u, s, vt = svd if svd is not None else truncated_svd(delta, svd_width(rank))
    out_f, in_f = u.shape[0], vt.shape[1]
    a = np.zeros((rank, in_f), dtype=np.float64)
    b = np.zeros((out_f, rank), dtype=np.float64)
    tol = (s[0] if s.size else 0.0) * max(out_f, in_f) * np.finfo(np.float32).eps
    for j in range(rank):
        if j < s.size and s[j] > tol and s[j] > 0:
            if a_row_norm is None:
                root = np.sqrt(s[j] / scale)
                b[:, j] = u[:, j] * root
                a[j] = vt[j] * root
            else:
                b[:, j] = u[:, j] * (s[j] / (scale * a_row_norm))
                a[j] = vt[j] * a_row_norm
        elif fill_a is not None:
            a[j] = fill_a[j]
    return a.astype(np.float32), b.astype(np.float32)


def masked_row_average(
    values: Sequence[np.ndarray], row_masks: Sequence[np.ndarray], weights: Sequence[float], previous: np.ndarray
) -> np.ndarray:
    """Per row: the weighted mean over the values whose row mask covers it; uncovered rows keep ``previous``.

    The batch form of what the FedHFT aggregator accumulates in streaming fashion.
    """
    num = np.zeros(previous.shape, dtype=np.float64)
    den = np.zeros((previous.shape[0], 1), dtype=np.float64)
    for v, m, w in zip(values, row_masks, weights):
        cover = w * np.asarray(m, dtype=np.float64).reshape(-1, 1)
        num += cover * v
        den += cover
    return ratio_or_previous(num, den, previous)


def ratio_or_previous(num: np.ndarray, den: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """num / den where den > 0 (den broadcasts against num), else ``previous``; float32 result."""
    den_full = np.broadcast_to(den, num.shape)
    out = np.array(previous, dtype=np.float64, copy=True)
    covered = den_full > 0
    out[covered] = num[covered] / den_full[covered]
    return out.astype(np.float32)


def explore_count(k: int, rows: int, fraction: float) -> int:
    """How many of ``k`` selected rows are exploration picks: ceil(fraction * k), at least 1 when
    fraction > 0 and some rows are left out (so every row is eventually trained)."""
    if fraction <= 0 or k >= rows:
        return 0
    return int(min(k, max(1, np.ceil(fraction * k - 1e-9))))


def select_rows(
    energy: np.ndarray, last_trained: np.ndarray, k: int, n_explore: int, rng: np.random.Generator
) -> np.ndarray:
    """FedHFT row choice: ``k - n_explore`` rows of largest positive energy (ties by index), the
    rest from the other rows, least recently trained first (random among equals).

    Rows with zero energy are never 'exploited' (at round 0 all are zero, so the choice is
    random), and the stalest-first exploration bounds how long any row can go untrained.
    """
    rows = energy.shape[0]
    k = int(min(max(k, 0), rows))
    n_explore = int(min(max(n_explore, 0), k))
    positive = np.flatnonzero(energy > 0)
    ranked = positive[np.lexsort((positive, -energy[positive]))]
    exploit = ranked[: k - n_explore]
    rest = np.setdiff1d(np.arange(rows), exploit)
    tiebreak = rng.permutation(rest.size)
    stalest = rest[np.lexsort((tiebreak, last_trained[rest]))]
    chosen = np.concatenate([exploit, stalest[: k - exploit.size]])
    return np.sort(chosen.astype(np.int64))


def count_sketch_hashes(shape: tuple[int, ...], dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Bucket (uint16) and sign (int8) of every element, for ``count_sketch``; compact enough to
    keep per site so that sketching only the rows a client trained needs no regeneration."""
    if dim > 2**16:
        raise ValueError(f"sketch dim must be <= 65536, got {dim}")
    size = int(np.prod(shape))
    rng = np.random.default_rng(seed)
    bucket = rng.integers(0, dim, size=size).astype(np.uint16).reshape(shape)
    sign = (rng.integers(0, 2, size=size) * 2 - 1).astype(np.int8).reshape(shape)
    return bucket, sign


def count_sketch(x: np.ndarray, dim: int, seed: int, hashes=None) -> np.ndarray:
    """A seeded CountSketch of ``x`` into ``dim`` buckets: a sparse random projection (preserves
    inner products in expectation) that needs no dense projection matrix."""
    x = np.asarray(x, dtype=np.float64)
    bucket, sign = hashes if hashes is not None else count_sketch_hashes(x.shape, dim, seed)
    return np.bincount(bucket.ravel(), weights=(sign * x).ravel(), minlength=dim)


def gaussian_sketch(x: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """A seeded dense Gaussian random projection (for small inputs such as the head)."""
    flat = np.asarray(x, dtype=np.float64).ravel()
    proj = np.random.default_rng(seed).standard_normal((dim, flat.size)) / np.sqrt(dim)
    return proj @ flat


def unit(v: np.ndarray) -> np.ndarray:
    # Not np.linalg.norm: BLAS's nrm2 sums in a kernel-dependent order, so its last bit (and then
    # FedHFT's clusters) changed with the CPU. A correctly rounded sum is the same bits everywhere.
    n = math.sqrt(math.fsum(np.square(np.asarray(v, dtype=np.float64)).ravel()))
    return v / n if n > 0 else v


def mixture(states: Sequence[Mapping[str, np.ndarray]], weights: Sequence[float], keys=None) -> dict[str, np.ndarray]:
    """sum_c w_c * state_c for every key (the weights are used as given, not renormalized)."""
    keys = list(states[0]) if keys is None else list(keys)
    out = {}
    for key in keys:
        acc = np.zeros(states[0][key].shape, dtype=np.float64)
        for w, st in zip(weights, states):
            if w:
                acc += float(w) * st[key]
        out[key] = acc.astype(np.float32)
    return out


def sparsify_membership(m: np.ndarray, floor: float) -> np.ndarray:
    """Zero memberships below ``floor`` and renormalize each row: a client with a 1e-30 share of a
    cluster must not alone decide that cluster's value of the rows only it covered."""
    m = np.where(np.asarray(m, np.float64) < floor, 0.0, m)
    total = m.sum(axis=-1, keepdims=True)
    return np.where(total > 0, m / np.where(total > 0, total, 1.0), 1.0 / m.shape[-1])


#: The expected norm of a row of ``init_a_rows``: ``in`` entries of variance 1/(3 in).
INIT_A_ROW_NORM = float(np.sqrt(1.0 / 3.0))


def init_a_rows(seed: int, key: str, start: int, stop: int, in_features: int) -> np.ndarray:
    """Rows ``start..stop`` of a site's seeded A init, kaiming-uniform +-1/sqrt(in) like
    ``fedhft.layout.init_trainable``; row j depends only on (seed, key, j), so growing a site's
    rank later never changes the rows already handed out."""
    bound = 1.0 / np.sqrt(in_features)
    rows = [
        np.random.default_rng([seed, stable_hash(key), j]).uniform(-bound, bound, size=in_features)
        for j in range(start, stop)
    ]
    return np.asarray(rows, dtype=np.float32).reshape(stop - start, in_features)


def init_head(seed: int, key: str, num_labels: int, hidden: int) -> dict[str, np.ndarray]:
    """Seeded head init, N(0, 0.02) weight and zero bias, as in ``init_trainable``."""
    rng = np.random.default_rng([seed, stable_hash(key)])
    return {
        "head.weight": (rng.standard_normal((num_labels, hidden)) * 0.02).astype(np.float32),
        "head.bias": np.zeros(num_labels, dtype=np.float32),
    }

"""The evaluator's reuse (the last state's logits, the frozen layers below the lowest nonzero delta)
changes no bit of the logits."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

LAYERS = 4


def _state(rng, layers, hidden: int, labels: int = 3) -> tuple:
    deltas = {
        (layer, m): (0.05 * rng.standard_normal((hidden, hidden))).astype(np.float32)
        for layer in layers
        for m in ("query", "value")
    }
    return deltas, rng.standard_normal((labels, hidden)).astype(np.float32), np.zeros(labels, np.float32)


def _full_forward(ev, state, ids, attn, batch):
    """Reference: merge the deltas into the weights and run every layer (no reuse)."""
    deltas, head_w, head_b = state
    ev._load(deltas)
    out = []
    with torch.inference_mode():
        for s in range(0, len(ids), batch):
            i, a = torch.as_tensor(ids[s : s + batch]), torch.as_tensor(attn[s : s + batch])
            hidden = ev.encoder(input_ids=i, attention_mask=a).last_hidden_state
            m = a.to(hidden.dtype).unsqueeze(-1)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
            out.append((pooled @ torch.as_tensor(head_w).T + torch.as_tensor(head_b)).numpy())
    return np.concatenate(out)


def test_reused_logits_are_the_full_forwards_bits():
    from simulate import Evaluator

    ev = Evaluator(f"tiny:layers={LAYERS}", threads=1, device="cpu")
    hidden = ev.encoder.config.hidden_size
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 2000, (10, 12)).astype(np.int64)
    attn = (np.arange(12)[None, :] < rng.integers(3, 13, 10)[:, None]).astype(np.int64)
    top = _state(rng, [2, 3], hidden)
    zeros_below = ({**top[0], (0, "query"): np.zeros((hidden, hidden), np.float32)}, top[1], top[2])
    states = [
        top,
        _state(rng, range(LAYERS), hidden),
        _state(rng, [3], hidden),
        top,
        zeros_below,
        ({}, top[1], top[2]),
        top,
    ]
    reference = Evaluator(f"tiny:layers={LAYERS}", threads=1, device="cpu")
    for state in states:
        got = ev.logits(state, ids, attn, batch=4)
        assert np.array_equal(got, _full_forward(reference, state, ids, attn, 4))
    assert ev._below is not None  # the frozen-prefix path ran

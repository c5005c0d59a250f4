"""The merged-weights evaluation computes the same function as the devices' LoRA model."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def test_merged_dense_state_matches_the_adapter_model():
    from devices import AdapterPlan
    from bundle_runtime import build_adapter_model
    from export import load_encoder, resolve_model
    from fedhft.layout import adapted_modules, full_mask, init_trainable, lora_names
    from simulate import Evaluator
    from simulate._evaluate import dense_state

    plan = AdapterPlan(depth=2, ranks=(4, 8), mask_density=1.0, max_seq_len=16, batch_size=4)
    model = build_adapter_model(load_encoder(resolve_model("tiny")), plan, 3)
    rng = np.random.default_rng(0)
    state = init_trainable(plan, model.dims, 0)
    state = {k: (v + 0.05 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in state.items()}
    model.set_trainable(state)
    ids = rng.integers(1000, 2000, size=(5, 12)).astype(np.int64)
    attn = np.ones_like(ids)
    attn[1, 6:] = 0
    with torch.no_grad():
        want = model.logits(
            torch.as_tensor(ids), torch.as_tensor(attn), torch.as_tensor(full_mask(plan, model.dims))
        ).numpy()
    # The server's fedhft form: dense dW = alpha/r * B @ A per site, plus the head.
    dense = {"head.weight": state["head.weight"], "head.bias": state["head.bias"]}
    for layer, module, rank in adapted_modules(plan, model.dims):
        a, b = lora_names(layer, module)
        dense[f"layer{layer}.{module}.delta"] = (plan.alpha / rank) * state[b] @ state[a]
    ev = Evaluator("tiny")
    got = ev.logits(dense_state(dense, ev.num_layers), ids, attn)
    assert np.allclose(got, want, atol=1e-4)
    # a second state replaces the first (the merge is undone, not stacked)
    zero = dense_state({**{k: 0 * v for k, v in dense.items()}}, ev.num_layers)
    assert np.allclose(ev.logits(zero, ids, attn), 0.0)
    assert np.allclose(ev.logits(dense_state(dense, ev.num_layers), ids, attn), want, atol=1e-4)

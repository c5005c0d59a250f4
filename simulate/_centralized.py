"""Centralized LoRA on the pooled training data: the upper bound the federated runs are compared to.

Same model family as the devices (``export`` builds the eager masked-adapter model for a plan), full
mask, AdamW, the same tokenization and the same test set; one process, no federation.
"""

from __future__ import annotations

import time

import numpy as np

from devices import AdapterPlan
from simulate._evaluate import EncodedSet


def train_centralized(
    model: str,
    plan: AdapterPlan,
    num_labels: int,
    train: EncodedSet,
    test: EncodedSet,
    steps: int,
    lr: float,
    seed: int = 0,
    eval_batch: int = 64,
    threads: int | None = None,
    lr_decay: float = 1.0,
    decay_every: int = 0,
) -> dict:
    """Train ``steps`` AdamW steps of batch ``plan.batch_size`` on ``train``; accuracy on ``test``.
    With ``decay_every`` > 0 the rate is multiplied by ``lr_decay`` after every ``decay_every`` steps."""
    import torch

    from bundle_runtime import build_adapter_model
    from export import load_encoder, resolve_model
    from fedhft.layout import full_mask, init_trainable
    from fedhft.manifest import ADAM_BETAS, ADAM_EPS, WEIGHT_DECAY

    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    m = build_adapter_model(load_encoder(resolve_model(model)), plan, num_labels)
    m.set_trainable(init_trainable(plan, m.dims, seed))
    mask = torch.as_tensor(full_mask(plan, m.dims))
    params = [p for _, p in m.trainable()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=WEIGHT_DECAY)
    rng = np.random.default_rng(seed)
    order, pos, losses = rng.permutation(len(train.labels)), 0, []
    for step in range(steps):
        if decay_every and step and step % decay_every == 0:
            for group in opt.param_groups:
                group["lr"] *= lr_decay
        if pos + plan.batch_size > len(order):
            order, pos = rng.permutation(len(train.labels)), 0
        idx = order[pos : pos + plan.batch_size]
        pos += plan.batch_size
        loss, _ = m(
            torch.as_tensor(train.input_ids[idx]),
            torch.as_tensor(train.attention_mask[idx]),
            torch.as_tensor(train.labels[idx]),
            mask,
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    pred = _predictions(m, test, mask, eval_batch)
    return {
        "accuracy": float((pred == test.labels).mean()),
        "steps": steps,
        "lr": lr,
        "lr_decay": lr_decay if decay_every else 1.0,
        "decay_every": decay_every,
        "lr_final": opt.param_groups[0]["lr"],
        "loss_first": losses[0] if losses else None,
        "loss_last": float(np.mean(losses[-10:])) if losses else None,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _predictions(m, test: EncodedSet, mask, eval_batch: int) -> np.ndarray:
    """The predicted label of every example of ``test``, ``eval_batch`` examples at a time."""
    import torch

    preds = []
    with torch.inference_mode():
        for s in range(0, len(test.labels), eval_batch):
            logits = m.logits(
                torch.as_tensor(test.input_ids[s : s + eval_batch]),
                torch.as_tensor(test.attention_mask[s : s + eval_batch]),
                mask,
            )
            preds.append(logits.argmax(-1).numpy())
    return np.concatenate(preds)

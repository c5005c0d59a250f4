"""The ExecuTorch bundle's own optimizer: an ``adamw_step`` method in the same .pte as ``forward``.

Android's ``TrainingModule`` ships only SGD, so without this an app would have to write AdamW
itself to train like the rest of the fleet. The method is a pure function over flat tensors in the
manifest's trainable (canonical) order:

    inputs  (params[n], grads[n], exp_avg[n], exp_avg_sq[n], step int64[1], lr float64[1])
    outputs (params[n], exp_avg[n], exp_avg_sq[n])

and does exactly what ``torch.optim.AdamW`` does on CPU (single-tensor path), op for op: decoupled
weight decay, ``exp_avg.lerp_(g, 1 - beta1)``, ``exp_avg_sq * beta2 + (1 - beta2) * g * g``, the bias
corrections in float64 (torch computes them as Python floats), then
``p + (-lr / bc1) * exp_avg / (sqrt(exp_avg_sq) / sqrt(bc2) + eps)``. The hyperparameters are baked in
from ``fedhft.manifest`` (the values the manifest states); ``lr`` is an input because the server sends
one per round.
"""

from __future__ import annotations

import torch
from torch import nn

from fedhft.manifest import ADAM_BETAS, ADAM_EPS, WEIGHT_DECAY

METHOD = "adamw_step"
GROUPS_IN = ("params", "grads", "exp_avg", "exp_avg_sq")
GROUPS_OUT = ("params", "exp_avg", "exp_avg_sq")


class AdamWStep(nn.Module):
    """One torch.optim.AdamW step over ``n`` tensors as a pure function (see the module docstring)."""

    def __init__(self, n: int, betas=ADAM_BETAS, eps: float = ADAM_EPS, weight_decay: float = WEIGHT_DECAY):
        super().__init__()
        self.n, self.beta1, self.beta2 = n, float(betas[0]), float(betas[1])
        self.eps, self.weight_decay = float(eps), float(weight_decay)

    def forward(self, *flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = self.n
        params, grads, exp_avg, exp_avg_sq = (flat[i * n : (i + 1) * n] for i in range(4))
        step, lr = flat[4 * n].to(torch.float64), flat[4 * n + 1].to(torch.float64)
        # float64 like torch's Python-float scalars, then float32 as its kernels receive them.
        step_size = (lr / (1.0 - torch.pow(self.beta1, step))).to(torch.float32)
        bc2_sqrt = torch.sqrt(1.0 - torch.pow(self.beta2, step)).to(torch.float32)
        decay = (1.0 - lr * self.weight_decay).to(torch.float32)
        new_p, new_m, new_v = [], [], []
        for p, g, m, v in zip(params, grads, exp_avg, exp_avg_sq):
            m = torch.lerp(m, g, 1.0 - self.beta1)
            v = v * self.beta2 + (1.0 - self.beta2) * g * g
            denom = torch.sqrt(v) / bc2_sqrt + self.eps
            new_p.append(p * decay + (-step_size) * m / denom)
            new_m.append(m)
            new_v.append(v)
        return (*new_p, *new_m, *new_v)


def example_inputs(shapes: list[tuple[int, ...]], lr: float = 1e-3) -> tuple[torch.Tensor, ...]:
    # Distinct tensors per group: export would take aliased example inputs for one input.
    groups = [torch.zeros(s, dtype=torch.float32) for _ in GROUPS_IN for s in shapes]
    return (*groups, torch.ones(1, dtype=torch.int64), torch.tensor([lr], dtype=torch.float64))


def export_program(shapes: list[tuple[int, ...]]):
    """The ATen ExportedProgram of the step for tensors of these shapes (static: the trainable layout)."""
    return torch.export.export(AdamWStep(len(shapes)), example_inputs(shapes), strict=False)


def method_spec(n: int) -> dict:
    """The manifest's description of the method (``backend_extras.optimizer_method``)."""

    def groups(names):
        return [
            {"name": g, "offset": i * n, "count": n, "order": "trainable", "dtype": "float32"}
            for i, g in enumerate(names)
        ]

    return {
        "name": METHOD,
        "implements": "optimizer",
        "count": n,
        "inputs": [
            *groups(GROUPS_IN),
            {"name": "step", "offset": 4 * n, "count": 1, "dtype": "int64", "shape": [1]},
            {"name": "lr", "offset": 4 * n + 1, "count": 1, "dtype": "float64", "shape": [1]},
        ],
        "outputs": groups(GROUPS_OUT),
        "hyperparameters": {"betas": list(ADAM_BETAS), "eps": ADAM_EPS, "weight_decay": WEIGHT_DECAY},
        "state": {"exp_avg": "zeros", "exp_avg_sq": "zeros", "first_step": 1, "reset": "each_round"},
        "apply": "write outputs.params into the program's parameters; feed outputs.exp_avg and "
        "outputs.exp_avg_sq to the next step",
    }

"""Strategies by name."""

from __future__ import annotations

import inspect

from server.strategies._base import Strategy
from server.strategies._fedavg import FedAvgLoRA
from server.strategies._fedhft import FedHFT
from server.strategies._flexlora import FlexLoRA
from server.strategies._heterofl import HeteroFL
from server.strategies._heterotune import HeteroTune
from server.strategies._hetlora import HetLoRA
from server.strategies._legend import Legend
from server.strategies._local import LocalOnly

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (FedAvgLoRA, HetLoRA, FlexLoRA, HeteroFL, Legend, FedHFT, HeteroTune, LocalOnly)
}


def get_strategy(name: str, **cfg) -> Strategy:
    """``get_strategy("fedhft", dims=ModelDims(...), seed=0, num_clusters=3)``."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; known strategies: {', '.join(sorted(STRATEGIES))}")
    cls = STRATEGIES[name]
    params = inspect.signature(cls.__init__).parameters
    unknown = sorted(set(cfg) - set(params) - {"self"})
    if unknown:
        accepted = sorted(p for p in params if p != "self")
        raise ValueError(f"strategy {name!r} does not accept {unknown}; it accepts {accepted}")
    if "dims" not in cfg:
        raise ValueError(f"strategy {name!r} needs dims=ModelDims(...) (the backbone's shape)")
    return cls(**cfg)


__all__ = ["STRATEGIES", "get_strategy"]

"""Federated aggregation strategies: the Strategy API and the pure array math of each method.

Pure numpy: no I/O, no MQTT, no torch. See ``_base`` for the API contract (configure ->
streaming aggregator -> state, ``state_dict``/``load_state_dict`` to persist and resume).
"""

from server.strategies._base import (
    Aggregator,
    ClientAssignment,
    ClientInfo,
    Strategy,
    StrategyState,
)
from server.strategies._fedavg import FedAvgLoRA, cheapest_plan
from server.strategies._fedhft import FedHFT
from server.strategies._flexlora import FlexLoRA
from server.strategies._heterofl import HeteroFL
from server.strategies._heterotune import HeteroTune
from server.strategies._hetlora import HetLoRA
from server.strategies._legend import Legend
from server.strategies._local import LocalOnly
from server.strategies._registry import STRATEGIES, get_strategy

__all__ = [
    "Aggregator",
    "ClientAssignment",
    "ClientInfo",
    "FedAvgLoRA",
    "FedHFT",
    "FlexLoRA",
    "HeteroFL",
    "HeteroTune",
    "HetLoRA",
    "Legend",
    "LocalOnly",
    "STRATEGIES",
    "Strategy",
    "StrategyState",
    "cheapest_plan",
    "get_strategy",
]

"""Edge runtime: budgeted on-device training of tier bundles, talking MQTT 5 to the fleet's server.

Heavy dependencies (torch, onnxruntime, executorch, paho, tokenizers) are imported lazily, so
importing this package is cheap and works on a device that has only one backend installed.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "AgentConfig": "edge_runtime._config",
    "EdgeAgent": "edge_runtime._agent",
    "ConfigError": "edge_runtime._agent",
    "run_agent": "edge_runtime._agent",
    "outcome_of": "edge_runtime._agent",
    "available_backends": "edge_runtime._agent",
    "train_round": "edge_runtime._trainer",
    "TrainBudget": "edge_runtime._trainer",
    "RoundResult": "edge_runtime._trainer",
    "Stopped": "edge_runtime._trainer",
    "evaluate": "edge_runtime._trainer",
    "ShardScore": "edge_runtime._trainer",
    "score_shard": "edge_runtime._trainer",
    "balanced_accuracy": "edge_runtime._trainer",
    "majority_accuracy": "edge_runtime._trainer",
    "PreparedData": "edge_runtime._trainer",
    "TrainingData": "edge_runtime._trainer",
    "LocalSets": "edge_runtime._trainer",
    "round_shape": "edge_runtime._trainer",
    "Encoded": "edge_runtime._data",
    "OverBudget": "edge_runtime._budget",
    "LowBattery": "edge_runtime._budget",
    "DeadlineMissed": "edge_runtime._budget",
    "SimulatedBattery": "edge_runtime._budget",
    "SystemBattery": "edge_runtime._budget",
    "RssWatcher": "edge_runtime._budget",
    "DeadlineGuard": "edge_runtime._budget",
    "choose_shape": "edge_runtime._budget",
    "check_battery": "edge_runtime._budget",
    "rss_mb": "edge_runtime._budget",
    "DataOptions": "edge_runtime._data",
    "DataError": "edge_runtime._data",
    "DataSource": "edge_runtime._data",
    "load_examples": "edge_runtime._data",
    "load_tokenizer": "edge_runtime._data",
    "tokenize": "edge_runtime._data",
    "MqttLink": "edge_runtime._mqtt",
    "MqttOptions": "edge_runtime._mqtt",
    "PublishFailed": "edge_runtime._mqtt",
    "StateStore": "edge_runtime._checkpoint",
    "EventLog": "edge_runtime._log",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'edge_runtime' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__():
    return __all__

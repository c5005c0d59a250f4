"""``fedhft simulate``: a real federated run on one machine (broker + `fedhft server` + N `fedhft edge`
processes), evaluated on a held-out test set, with a report and plots.

Orchestrates through subprocesses only: it imports neither ``server`` nor ``edge_runtime``.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "SimConfig": "fedhft.simulate._config", "load_sim_config": "fedhft.simulate._config",
    "run_simulation": "fedhft.simulate._run", "SimResult": "fedhft.simulate._run",
    "SimulationError": "fedhft.simulate._fleet", "load_dataset": "fedhft.simulate._datasets",
    "DatasetError": "fedhft.simulate._datasets", "PartitionError": "fedhft.simulate._partition",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fedhft.simulate' has no attribute {name!r}")

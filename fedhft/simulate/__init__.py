"""``fedhft simulate``: a real federated run on one machine (broker + `fedhft server` + N `fedhft edge`
processes, or the in-process engine), evaluated on a held-out test set, with a report and plots.

Besides ``run_simulation``, the building blocks a benchmark composes its own runs from are public
here (datasets, bundles, centralized training, evaluation of a server's states, RESULTS.md).
"""
from __future__ import annotations

import importlib

_LAZY = {
    "SimConfig": "fedhft.simulate._config", "load_sim_config": "fedhft.simulate._config",
    "run_simulation": "fedhft.simulate._run", "SimResult": "fedhft.simulate._run",
    "SimulationError": "fedhft.simulate._fleet", "load_dataset": "fedhft.simulate._datasets",
    "DatasetError": "fedhft.simulate._datasets", "PartitionError": "fedhft.simulate._partition",
    # building blocks of the benchmarks
    "AMAZON_DOMAINS": "fedhft.simulate._datasets", "Dataset": "fedhft.simulate._datasets",
    "Example": "fedhft.simulate._datasets", "find_data_root": "fedhft.simulate._datasets",
    "dataset_of": "fedhft.simulate._prepare", "subsample": "fedhft.simulate._prepare",
    "fit_plan": "fedhft.simulate._bundles", "model_identity": "fedhft.simulate._bundles",
    "train_centralized": "fedhft.simulate._centralized",
    "EncodedSet": "fedhft.simulate._evaluate", "encode_examples": "fedhft.simulate._evaluate",
    "Evaluator": "fedhft.simulate._evaluate", "global_state": "fedhft.simulate._evaluate",
    "cluster_states": "fedhft.simulate._evaluate", "memberships": "fedhft.simulate._evaluate",
    "mix": "fedhft.simulate._evaluate",
    "InProcessEngine": "fedhft.simulate._inprocess", "devices_for": "fedhft.simulate._inprocess",
    "update_results_md": "fedhft.simulate._results_md",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fedhft.simulate' has no attribute {name!r}")

"""``fedhft simulate``: a real federated run on one machine (broker + `fedhft server` + N `fedhft edge`
processes, or the in-process engine), evaluated on a held-out test set, with a report and plots.

Besides ``run_simulation``, the building blocks a benchmark composes its own runs from are public
here (datasets, bundles, centralized training, evaluation of a server's states, RESULTS.md).
"""

from __future__ import annotations

import importlib

_LAZY = {
    "SimConfig": "simulate._config",
    "load_sim_config": "simulate._config",
    "run_simulation": "simulate._run",
    "preflight": "simulate._preflight",
    "SimResult": "simulate._run",
    "SimulationError": "simulate._fleet",
    "load_dataset": "simulate._datasets",
    "DatasetError": "simulate._datasets",
    "PartitionError": "simulate._partition",
    # building blocks of the benchmarks
    "AMAZON_DOMAINS": "simulate._datasets",
    "Dataset": "simulate._datasets",
    "Example": "simulate._datasets",
    "find_data_root": "simulate._datasets",
    "dataset_of": "simulate._prepare",
    "subsample": "simulate._prepare",
    "fit_plan": "simulate._bundles",
    "model_identity": "simulate._bundles",
    "train_centralized": "simulate._centralized",
    "EncodedSet": "simulate._evaluate",
    "encode_examples": "simulate._evaluate",
    "Evaluator": "simulate._evaluate",
    "global_state": "simulate._evaluate",
    "cluster_states": "simulate._evaluate",
    "memberships": "simulate._evaluate",
    "mix": "simulate._evaluate",
    "InProcessEngine": "simulate._inprocess",
    "devices_for": "simulate._inprocess",
    "update_results_md": "simulate._results_md",
    "host_info": "simulate._host",
    "host_label": "simulate._host",
    "parse_cpuinfo": "simulate._host",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'simulate' has no attribute {name!r}")

"""Everything a simulation can check before it creates its folder or starts a process.

``SimConfig`` checks each setting alone; this checks them against the installation: strategy and
strategy options (the server's constructors), catalog tiers, installed backends, the dataset
file, the model and the output folder. Every problem is collected and raised once, as a
``ConfigError``, so a bad run leaves nothing behind and costs seconds, not a broker start.
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

from fedhft.config import ConfigError
from simulate._config import SimConfig

#: Keyword arguments that the server passes to every strategy itself (server/_coordinator.py build_strategy).
SERVER_SET_OPTIONS = ("dims", "seed", "backbone_dims")
#: The module each training backend needs on this machine (edge_runtime/_agent.py _RUNTIME_MODULES).
BACKEND_MODULES = {"torch": "torch", "ort": "onnxruntime", "executorch": "executorch"}


def strategy_problems(name: str, options: dict) -> list[str]:
    """Unknown strategy, or options its constructor does not take (like ``get_strategy``, without dims)."""
    from server.strategies import STRATEGIES

    if name not in STRATEGIES:
        return [f"strategy={name!r}: unknown strategy; known: {', '.join(sorted(STRATEGIES))}"]
    params = inspect.signature(STRATEGIES[name].__init__).parameters
    accepted = sorted(p for p in params if p != "self" and p not in SERVER_SET_OPTIONS)
    out = []
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        out.append(
            f"strategy_options: strategy {name!r} does not accept {unknown}; it accepts {accepted}"
            + (
                f" ({', '.join(SERVER_SET_OPTIONS)} are set by the server)"
                if set(unknown) & set(SERVER_SET_OPTIONS)
                else ""
            )
        )
    return out


def tier_backend_problems(cfg: SimConfig) -> list[str]:
    """Tiers not in the catalog, per-tier backends for tiers the run lacks, backends not installed."""
    from devices import load_catalog

    catalog = load_catalog()
    out = []
    unknown = sorted(set(cfg.tiers) - set(catalog))
    if unknown:
        out.append(f"tiers: unknown {unknown}; use catalog tiers {sorted(catalog)} (fedhft devices list)")
    stray = sorted(set(cfg.backends) - set(cfg.tiers))
    if stray:
        out.append(f"backends: {stray} are not tiers of this run {list(cfg.tiers)}; key backends by those tiers")
    missing: dict[str, list[str]] = {}
    for tier in cfg.tiers:
        if tier not in catalog:
            continue
        backend = cfg.tier_backend(tier, catalog[tier].default_backend)
        module = BACKEND_MODULES.get(backend)
        if module and importlib.util.find_spec(module) is None:
            missing.setdefault(backend, []).append(tier)
    for backend, tiers in sorted(missing.items()):
        out.append(
            f"backend {backend!r} of tiers {tiers} is not installed here (no {BACKEND_MODULES[backend]} "
            f"module): install it, or pick another with backends={{{tiers[0]}: torch}} or backend=torch"
        )
    return out


def dataset_problems(cfg: SimConfig) -> list[str]:
    """Load the dataset (and test file) once, as the run will, and split it over the clients without
    writing anything: a missing file, a bad format or too few examples per client is named here."""
    from simulate._datasets import DatasetError
    from simulate._partition import PartitionError, partition
    from simulate._prepare import _balanced_subsample, dataset_of, subsample

    try:
        ds = dataset_of(cfg)
    except (DatasetError, OSError) as exc:
        return [f"dataset: {exc}"]
    kind = cfg.partition if cfg.partition != "auto" else ("natural" if ds.natural_key else "dirichlet")
    train = (
        _balanced_subsample(ds.train, cfg.train_size, cfg.seed)
        if kind == "natural"
        else subsample(ds.train, cfg.train_size, cfg.seed, 11)
    )
    try:
        partition(kind, [e.label for e in train], [e.key for e in train], cfg.clients, cfg.alpha, cfg.seed)
    except PartitionError as exc:
        return [f"partition: {exc}"]
    if cfg.concept_groups > ds.num_labels:
        return [
            f"concept_groups={cfg.concept_groups}: {ds.name} has {ds.num_labels} labels, so at most "
            f"{ds.num_labels} groups can each name a text's label differently"
        ]
    return []


def model_problems(model: str) -> list[str]:
    """A model path that is not a usable model folder (minilm and tiny need no check, nor torch)."""
    if model in ("minilm", "sentence-transformers/all-MiniLM-L6-v2") or model == "tiny" or model.startswith("tiny:"):
        return []
    from export import resolve_model

    try:
        resolve_model(model)
    except (OSError, ValueError, ImportError) as exc:
        return [f"model: {exc}"]
    return []


def out_problems(run_dir: Path) -> list[str]:
    if (run_dir / "fleet").exists() or (run_dir / "server").exists():
        return [
            f"out={run_dir}: that folder already holds a run (fleet/ or server/ exists); pass a new out=DIR, "
            "or delete that folder first"
        ]
    if run_dir.exists() and not run_dir.is_dir():
        return [f"out={run_dir}: exists and is not a folder; pass a new out=DIR"]
    return []


def fleet_problems(cfg: SimConfig) -> list[str]:
    if cfg.fleet_dir and not Path(cfg.fleet_dir).expanduser().is_dir():
        return [f"fleet_dir={cfg.fleet_dir}: no such folder; create it with `fedhft server fleet-init`"]
    return []


def preflight(cfg: SimConfig, run_dir: Path) -> None:
    """Raise ``ConfigError`` listing every problem of ``cfg`` on this machine; create nothing."""
    problems = (
        strategy_problems(cfg.strategy, dict(cfg.strategy_options))
        + tier_backend_problems(cfg)
        + dataset_problems(cfg)
        + model_problems(cfg.model)
        + out_problems(run_dir)
        + fleet_problems(cfg)
    )
    if problems:
        raise ConfigError(problems, "the simulation settings")

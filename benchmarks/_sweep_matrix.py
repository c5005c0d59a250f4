"""The sweep's matrix: its settings, sizings, strategies and FedHFT variants, and the run config each
(setting, strategy, seed, rate) makes. Definitions, and the settings a command line defines (``--define``):
the sweep, its report and ``fedhft bench select`` read them; no runs here."""

from __future__ import annotations

import json
import re
from pathlib import Path

STRATEGIES = ("fedavg-lora", "hetlora", "flexlora", "heterofl", "legend", "heterotune", "fedhft", "local-only")
#: Dirichlet alpha = 10 / num_classes is the reference code's default (git-disl/FedHFT).
SETTINGS = {
    "sst2-a5.0": {"dataset": "sst2", "partition": "dirichlet", "alpha": 5.0},
    "sst2-a0.3": {"dataset": "sst2", "partition": "dirichlet", "alpha": 0.3},
    "agnews-a2.5": {"dataset": "agnews", "partition": "dirichlet", "alpha": 2.5},
    "agnews-a0.3": {"dataset": "agnews", "partition": "dirichlet", "alpha": 0.3},
    "mrpc-a5.0": {"dataset": "mrpc", "partition": "dirichlet", "alpha": 5.0},
    "amazon-natural": {"dataset": "amazon", "partition": "natural"},
}
COMMON = {
    "engine": "inprocess",
    "tiers": ["android-mid", "rpi5", "jetson-orin-nano"],
    "backend": "torch",
    "memory_budget": "off",
    "battery": None,
    "progress": False,
    "train_pool": "eval",
}
FULL = {
    "model": "minilm",
    "clients": 30,
    "rounds": 15,
    "warmup_rounds": 5,
    "local_steps": 4,
    "max_seq_len": 32,
    "batch_size": 8,
    "train_size": 3000,
    "test_size": 500,
    "lr_decay": 0.9,
}
QUICK = {
    "model": "tiny",
    "clients": 4,
    "rounds": 3,
    "warmup_rounds": 1,
    "local_steps": 2,
    "max_seq_len": 16,
    "batch_size": 8,
    "train_size": 160,
    "test_size": 60,
}
LRS = {"full": (3e-3, 1e-2, 3e-2), "quick": (2e-2,)}
#: Overrides of these keys change what a run measures, so they join the sizing that keys the run logs (a
#: resumed sweep never mixes two sizings' rows). ``model`` stays out: an override gives the path of the same
#: weights on another machine (benchmarks/gpu_sweep.sh).
SIZING_KEYS = (set(FULL) | {"local_epochs"}) - {"model"}
#: Sentence pairs need more tokens than single sentences (android-mid's plan allows 64).
SETTING_SIZING = {"mrpc-a5.0": {"max_seq_len": 64}}
#: With --tune-per-dataset, each dataset's rates are tuned at its reference partition. By default every dataset
#: takes the rates tuned once at TUNE_ONCE: per-dataset tuning costs 72 more runs (~5 h on 2 cores), see RESULTS.md.
TUNE_SETTING = {"sst2": "sst2-a5.0", "agnews": "agnews-a2.5", "mrpc": "mrpc-a5.0", "amazon": "amazon-natural"}
TUNE_ONCE = "sst2-a5.0"
#: The FedHFT ablations run (at FedHFT's tuned lr) on the strongly non-IID settings, where clustering should matter.
ABLATION_SETTINGS = ("sst2-a0.3", "agnews-a0.3")
#: One run at the reference code's defaults: FedHFT against the best baseline, 50 clients x 20 rounds.
REFERENCE = {"setting": "sst2-a5.0", "seed": 0, "clients": 50, "rounds": 20, "train_size": 5000}
#: FedHFT ablations, run like strategies (tuned on the same grid): name -> SimConfig settings.
VARIANTS = {
    # a candidate, not an ablation: the global model aggregated over every client (see FedHFT's global_model)
    "fedhft-shared": {"strategy": "fedhft", "strategy_options": {"global_model": "shared"}},
    "fedhft-nomask": {"strategy": "fedhft", "strategy_options": {"masked": False}},
    "fedhft-k1": {"strategy": "fedhft", "strategy_options": {"num_clusters": 1}},
    "fedhft-k3": {"strategy": "fedhft", "strategy_options": {"num_clusters": 3}},
    # the default before 2026-12-06 (since then K is chosen by BIC, up to 4, every refit, and the clusters
    # share the adapters): its options are pinned, so that a new run under this name is the method of its rows
    "fedhft-k2": {"strategy": "fedhft", "strategy_options": {"num_clusters": 2, "per_cluster": "all"}},
    "fedhft-noexplore": {"strategy": "fedhft", "strategy_options": {"explore": 0.0}},
    "fedhft-warmup2": {"strategy": "fedhft", "warmup_rounds": 2},
    # the default before 2026-12-05: a client's row = its untruncated start mixture + its change (K=2, a full
    # state per cluster, as then)
    "fedhft-residual": {
        "strategy": "fedhft",
        "strategy_options": {"residual_correction": True, "num_clusters": 2, "per_cluster": "all"},
    },
    # the default before 2026-12-06 (since then the clusters share the adapters and keep a head each)
    "fedhft-allclusters": {"strategy": "fedhft", "strategy_options": {"per_cluster": "all"}},
    # the clusters fixed to the true domains (the natural partition's keys): what clustering could give at best
    "fedhft-domains": {"strategy": "fedhft", "strategy_options": {"groups": "partition"}},
}
#: Variants that run on other settings than ABLATION_SETTINGS (they need what those settings have).
VARIANT_SETTINGS = {"fedhft-domains": ("amazon-natural",)}
TUNE_SEED = 100
SIGNIFICANCE = 0.05


#: What a setting fixes: its data, and how the data is split over the clients. An override of one of them
#: (``dataset=...``) would run every setting on other data under its built-in name, and a resumed sweep would
#: take that name's logged rows for it; a new setting is defined instead (``--define``).
SETTING_KEYS = (
    "dataset",
    "test_dataset",
    "text_column",
    "text_pair_column",
    "label_column",
    "label_map",
    "data_encoding",
    "natural_key",
    "partition",
    "alpha",
    "concept_groups",
)
DEFINE_EXAMPLE = '{"mydata-a0.5": {"dataset": "path/to/file.tsv", "partition": "dirichlet", "alpha": 0.5}}'
#: Settings defined on the command line (``--define``), also in SETTINGS while the command runs.
DEFINED: dict[str, dict] = {}


def parse_definitions(text: str | None) -> tuple[dict[str, dict], list[str]]:
    """``--define``'s JSON object {name: {SETTING_KEYS key: value}} -> (definitions, every problem). A
    definition names its ``dataset``; its name is a new one, usable in file names."""
    if not text:
        return {}, []
    try:
        defs = json.loads(text)
    except ValueError as exc:
        return {}, [f"--define is not JSON ({exc}): give an object, e.g. '{DEFINE_EXAMPLE}'"]
    if not isinstance(defs, dict) or not all(isinstance(v, dict) for v in defs.values()):
        return {}, [f"--define: give a JSON object of objects, e.g. '{DEFINE_EXAMPLE}'"]
    problems = []
    for name, spec in defs.items():
        if name in SETTINGS:
            problems.append(f"--define {name!r}: a built-in setting has that name; choose another")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            problems.append(f"--define {name!r}: use letters, digits, '.', '_' and '-' (it names files)")
        unknown = sorted(set(spec) - set(SETTING_KEYS))
        if unknown:
            problems.append(
                f"--define {name!r}: unknown keys {unknown}; a setting sets some of {list(SETTING_KEYS)} "
                "(sizing keys are key=value overrides of every run)"
            )
        if "dataset" not in spec:
            problems.append(f"--define {name!r}: name its dataset (a built-in dataset or a file path)")
    return ({} if problems else defs), problems


def setting_override_problems(overrides) -> list[str]:
    """A problem per key=value override that would change what a setting is (see SETTING_KEYS)."""
    keys = sorted({item.partition("=")[0].strip() for item in overrides} & set(SETTING_KEYS))
    return [
        f"{key}= would change every setting's data under its built-in name (and a resumed run would reuse "
        f"that name's logged rows): define a setting instead, e.g. --define '{DEFINE_EXAMPLE}' --settings mydata-a0.5"
        for key in keys
    ]


def define_settings(defs: dict[str, dict]) -> None:
    """Make ``defs`` (checked by parse_definitions) settings of this process, beside the built-in ones."""
    DEFINED.update(defs)
    SETTINGS.update(defs)


def forget_definitions() -> None:
    """Undo define_settings: a command that defined settings leaves the process's settings as it found them."""
    for name in DEFINED:
        SETTINGS.pop(name, None)
    DEFINED.clear()


def definition_field(setting: str) -> dict:
    """What a logged row or bound of ``setting`` carries of its definition: ``setting_def``, or nothing
    for a built-in setting (rows from before definitions existed read the same)."""
    return {"setting_def": definition(setting)} if setting in DEFINED else {}


def definition(setting: str) -> str | None:
    """A defined setting's definition as logged with its rows and bounds (None for a built-in): a name
    defined again with other data never takes the rows of the first."""
    return json.dumps(DEFINED[setting], sort_keys=True) if setting in DEFINED else None


def sim_config(setting: dict, strategy: str, seed: int, lr: float, sizing: dict, run_dir: Path, overrides, **extra):
    """A run's SimConfig; ``strategy_options`` in ``extra`` are added to a variant's own options."""
    from fedhft.config import load_config
    from simulate import SimConfig

    options = {**VARIANTS.get(strategy, {}).get("strategy_options", {}), **extra.pop("strategy_options", {})}
    base = {
        **COMMON,
        **sizing,
        **setting,
        "strategy": strategy,
        "seed": seed,
        "lr": lr,
        "out": str(run_dir),
        **VARIANTS.get(strategy, {}),
        **extra,
        **({"strategy_options": options} if options else {}),
    }
    items = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in base.items()]
    return load_config(SimConfig, None, items + list(overrides))


def tune_setting(setting: str, per_dataset: bool) -> str:
    """Where ``setting``'s learning rates are tuned: its dataset's TUNE_SETTING, or TUNE_ONCE for all. A
    defined setting on other data than a built-in dataset (another file, other columns, a concept shift)
    is tuned on its own tuning half: a rate tuned on SST-2 says little about it."""
    dataset = SETTINGS[setting]["dataset"]
    if setting in DEFINED and (
        dataset not in TUNE_SETTING or set(DEFINED[setting]) - {"dataset", "partition", "alpha"}
    ):
        return setting
    return TUNE_SETTING[dataset] if per_dataset else TUNE_ONCE


def runs_variant(variant: str, setting: str, quick: bool = False) -> bool:
    """Whether the sweep runs ``variant`` on ``setting``: its own settings, else the ABLATION_SETTINGS and
    the settings the command line defines (every setting in quick mode, except where a variant names its own)."""
    if variant in VARIANT_SETTINGS:
        return setting in VARIANT_SETTINGS[variant]
    return quick or setting in ABLATION_SETTINGS or setting in DEFINED

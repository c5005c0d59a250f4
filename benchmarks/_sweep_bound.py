"""The sweep's centralized LoRA bound: per dataset, its rate is chosen on held-out examples of the tuning
half (never the test set) from the grid and, while the grid's lowest rate wins or no rate beats the
held-out majority label, rates below it; then one bound per seed, shared by the settings of one dataset.
``sweep`` is the running ``benchmarks.sweep.Sweep`` (its ``args``, ``sizing`` and ``out``)."""

from __future__ import annotations

import json

import numpy as np

from benchmarks._sweep_matrix import (
    SETTING_SIZING,
    SETTINGS,
    TUNE_SEED,
    definition,
    definition_field,
    sim_config,
    tune_setting,
)
from simulate import host_info

#: Cap on the centralized bound's steps: none, so it takes as many steps as a federated run's clients
#: together (a 600-step cap until 2026-12-07 left the bound below some federated runs).
CENTRAL_MAX_STEPS: int | None = None


def held_out_floor(cfg) -> float:
    """The training majority label's accuracy on the examples that score the bound's rate (``cfg`` a
    tuning run)."""
    from benchmarks.accuracy import bound_split, label_prior_accuracy

    _, train, scored = bound_split(cfg, CENTRAL_HELD_OUT)
    return label_prior_accuracy(train, scored)


def centralized_bound(cfg, held_out: int = 0) -> dict:
    """The accuracy benchmark's centralized LoRA bound on this run's pool, at most CENTRAL_MAX_STEPS
    (scored on the test set, or with ``held_out`` on pool examples outside its training subset)."""
    from benchmarks.accuracy import centralized

    return centralized(cfg, CENTRAL_MAX_STEPS, held_out)


def _current_bound(entry: dict | None, setting: str) -> bool:
    """Whether a logged bound of ``setting`` was made with today's step cap (entries before the key existed
    had 600) and on the setting's data as defined now (see ``definition``)."""
    return (
        entry is not None
        and entry.get("max_steps", 600) == CENTRAL_MAX_STEPS
        and entry.get("setting_def") == definition(setting)
    )


def _data_of(setting: str) -> dict | None:
    """What a bound depends on: the setting's data, not how it is split over the clients (None for a
    logged setting that this command does not know)."""
    spec = SETTINGS.get(setting)
    return {k: v for k, v in spec.items() if k not in ("partition", "alpha", "natural_key")} if spec else None


def _logged(bound: dict, setting: str, **extra) -> dict:
    """A bound entry of ``setting`` as logged: ``extra`` (a new bound's step cap and host), and a defined
    setting's definition (a bound copied from a setting on the same data takes its own)."""
    entry = {k: v for k, v in {**bound, **extra}.items() if k != "setting_def"}
    return {**entry, **definition_field(setting)}


#: Pool examples outside the training subset that score the bound's rate on the tuning half.
CENTRAL_HELD_OUT = 500


#: How many rates below the grid the bound may add while its choice is the lowest rate tried.
CENTRAL_EXTRA_LOWER = 2


def choose_central_lr(scores: dict[float, float], floor: float = 0.0) -> float:
    """The rate with the highest held-out accuracy above ``floor`` (the held-out majority label's: a
    model at or below it learned the label prior at most, a constant predictor on an imbalanced set
    such as MRPC's, and is no bound); if none is above it, the best of all. A tie goes to the smaller rate."""
    above = {lr: a for lr, a in scores.items() if a > floor} or scores
    return max(sorted(above), key=lambda lr: (above[lr], -lr))


def lower_rate(lr: float) -> float:
    """The next rate below ``lr`` on the 1-3-10 ladder of the grid (3e-3 -> 1e-3 -> 3e-4)."""
    exponent = int(np.floor(np.log10(lr) + 1e-9))
    mantissa = lr / 10.0**exponent
    return float(f"{1.0 if mantissa > 1.5 else 3.0}e{exponent if mantissa > 1.5 else exponent - 1}")


def _central_cfg(sweep, setting: str, seed: int, lr: float, **extra):
    run_dir = sweep.out / "runs" / "central"
    extra = {**SETTING_SIZING.get(setting, {}), **extra}  # sentence pairs get the runs' longer sequences
    return sim_config(SETTINGS[setting], "fedavg-lora", seed, lr, sweep.sizing, run_dir, sweep.args.overrides, **extra)


def _try_lower(scores: dict[float, float], tried: list[float], grid, floor: float = 0.0) -> bool:
    """Whether the bound tries a rate below those ``tried`` (all scored): it should not be held down by
    the grid's lower edge, so while the lowest rate tried wins, or no rate beats the majority label
    (``floor``; the high rates collapse to it), at most CENTRAL_EXTRA_LOWER more."""
    if len(grid) <= 1 or not scores or len(tried) - len(grid) >= CENTRAL_EXTRA_LOWER:
        return False
    return choose_central_lr(scores, floor) == min(tried) or max(scores.values()) <= floor


def _central_lr(sweep, setting: str, lrs, tuned: dict) -> float:
    """The bound's rate for ``setting``'s dataset: each rate of the grid trained on the tuning half
    (seed TUNE_SEED) of its own dataset and scored on held-out tuning-half examples. Always per dataset,
    unlike the strategies' rates by default: a bound should be the best the pooled data allows on each
    dataset, and it costs a few runs, not 72 (a rate tuned on SST-2 left AG News's bound 0.006 above
    the best federated run)."""
    at = tune_setting(setting, per_dataset=True)
    scores, tried = {}, list(lrs)
    floor = held_out_floor(_central_cfg(sweep, at, TUNE_SEED, lrs[0], train_pool="tune"))
    for i, lr in enumerate(tried):  # grows below the grid, see _try_lower
        key = f"{at}/lr{lr:g}"
        if not _current_bound(tuned.get(key), at) and not sweep.args.report_only:
            cfg = _central_cfg(sweep, at, TUNE_SEED, lr, train_pool="tune")
            new = centralized_bound(cfg, CENTRAL_HELD_OUT)
            tuned[key] = _logged(new, at, max_steps=CENTRAL_MAX_STEPS, host=host_info())
            (sweep.out / "centralized-tuning.json").write_text(json.dumps(tuned, indent=2))
        if _current_bound(tuned.get(key), at):
            scores[lr] = tuned[key]["accuracy"]
        if i == len(tried) - 1 and _try_lower(scores, tried, lrs, floor):
            tried.append(lower_rate(min(tried)))
    return choose_central_lr(scores, floor) if scores else lrs[len(lrs) // 2]


def centralized_bounds(sweep, settings: list[str], seeds: list[int], lrs) -> dict:
    """setting/seed -> the centralized bound at the rate chosen on the tuning half. The bound depends on
    the dataset and seed only (the partition plays no part), so settings of one dataset share it."""
    path, tuning = sweep.out / "centralized.json", sweep.out / "centralized-tuning.json"
    keep = sweep.args.resume or sweep.args.report_only
    central = json.loads(path.read_text()) if (path.exists() and keep) else {}
    tuned = json.loads(tuning.read_text()) if (tuning.exists() and keep) else {}
    for setting in settings:
        if SETTINGS[setting].get("concept_groups", 1) > 1:  # clients disagree on labels: no one model is a bound
            continue
        lr = _central_lr(sweep, setting, lrs, tuned)
        for seed in seeds:
            key = f"{setting}/s{seed}"
            fresh = _current_bound(central.get(key), setting) and central[key]["lr"] == lr
            if fresh or sweep.args.report_only:
                if not fresh:
                    central.pop(key, None)  # a bound of an earlier cap or rate is not reported as this one
                continue
            twin = next(
                (
                    k
                    for k, v in central.items()
                    if k.endswith(f"/s{seed}")
                    and v["lr"] == lr
                    and _current_bound(v, k.split("/")[0])
                    and _data_of(k.split("/")[0]) == _data_of(setting)
                ),
                None,
            )
            if twin:
                central[key] = _logged(central[twin], setting)
            else:
                bound = centralized_bound(_central_cfg(sweep, setting, seed, lr))
                central[key] = _logged(bound, setting, max_steps=CENTRAL_MAX_STEPS, host=host_info())
            path.write_text(json.dumps(central, indent=2))
    return central

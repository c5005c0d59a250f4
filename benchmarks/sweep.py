"""The papers' protocol at scale, on the in-process engine: every strategy, personalized and global.

    fedhft bench sweep [--quick] [--out benchmarks/results/sweep] [--seeds 0,1,2] [--settings a,b]
                       [--strategies s1,s2] [--lrs 0.003,0.01,0.03] [--tune-per-dataset] [--resume]
                       [--report-only] [--no-reference] [--define JSON]
                       [key=value ...]

Per setting, strategy and seed, one federated run (``fedhft simulate engine=inprocess``) reports global
accuracy on the balanced held-out test set and personalized accuracy: each client's own model on its own
local shard (disjoint from its training data), before and after local training, weighted by shard size,
with the worst 10% of clients and balanced accuracy. Beside them: the majority training label, local-only
training and a centralized LoRA bound per seed. Each strategy's learning rate is chosen once (or per dataset)
from the same grid (``--lrs``) on runs that draw from the ``tune`` half of the training file; the reported
runs draw from the ``eval`` half, so neither their shards nor the test set choose anything. FedHFT's
ablations run on the non-IID settings at FedHFT's rate; one run at the reference defaults (50 x 20) closes
it. FedHFT is tested against the best other strategy per setting (paired Wilcoxon over (seed, client)).
Resumable (``--resume``: OUT/runs-<setting>.jsonl); see RESULTS.md for the sizing and the numbers. More
settings (a user's data file, another partition) are defined with ``--define``; their rows keep their
definition, and a setting on other data than the built-in datasets is tuned on its own tuning half.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._host import hosts_note
from benchmarks.clusters import concept_cluster_table
from simulate import host_info
from benchmarks._sweep_matrix import (
    STRATEGIES,
    SETTINGS,
    COMMON,
    FULL,
    QUICK,
    LRS,
    SIZING_KEYS,
    SETTING_SIZING,
    TUNE_SETTING,  # noqa: F401 (re-exported for the tests and select)
    TUNE_ONCE,
    ABLATION_SETTINGS,
    REFERENCE,
    VARIANTS,
    VARIANT_SETTINGS,
    TUNE_SEED,
    SIGNIFICANCE,
    define_settings,
    definition,
    definition_field,
    forget_definitions,
    parse_definitions,
    runs_variant,
    setting_override_problems,
    sim_config,
    tune_setting,
)
from benchmarks._sweep_bound import centralized_bounds
from benchmarks._sweep_plots import plot_clients, plot_curves


def per_client_final(run_dir: Path) -> dict[str, dict[str, float]]:
    """client -> the shard metrics of its last stored round (from the run's clients.jsonl), with its
    final cluster (a clustering strategy) and its concept group (``concept_groups``) from results.json."""
    out: dict[str, tuple[int, dict]] = {}
    path = run_dir / "clients.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        rec = json.loads(line)
        if rec.get("status") != "stored":
            continue
        metrics = rec.get("metrics") or {}
        metrics = json.loads(metrics) if isinstance(metrics, str) else metrics
        if rec["round"] >= out.get(rec["client"], (-1, None))[0]:
            out[rec["client"]] = (rec["round"], metrics)
    keys = ("val_acc_after", "val_acc_before", "val_bal_acc_after", "val_majority_acc", "val_examples")
    found = {c: {k: m[k] for k in keys if k in m} for c, (_, m) in sorted(out.items())}
    doc_path = run_dir / "results.json"
    doc = json.loads(doc_path.read_text()) if doc_path.exists() else {}
    members, groups = doc.get("memberships") or {}, (doc.get("data") or {}).get("concept_groups") or {}
    for client, rec in found.items():
        if len(members.get(client) or []) > 0:  # a clustering strategy: the client's largest final membership
            rec["cluster"] = int(np.argmax(members[client]))
        if client in groups:
            rec["group"] = int(groups[client])
    return found


def run_one(key: dict, cfg) -> dict:
    """One federated run -> the row stored in its setting's run log."""
    from simulate import run_simulation

    shutil.rmtree(cfg.run_dir(), ignore_errors=True)  # this benchmark's own scratch run dir
    res = run_simulation(cfg, say=lambda m: None)
    if res.interrupted:  # Ctrl-C / SIGTERM stops the whole sweep, not just this run
        raise KeyboardInterrupt
    doc = json.loads((res.run_dir / "results.json").read_text()) if (res.run_dir / "results.json").exists() else {}
    keep = ("round", "accuracy", "personalized", "bytes_up", "bytes_down", "stored", "selected")
    return {
        **key,
        "status": res.status.value,
        "error": res.error,
        "wall_s": res.wall_s,
        "headline": doc.get("headline"),
        "rounds": [{k: r.get(k) for k in keep} for r in res.rounds],
        "clients": per_client_final(res.run_dir),
        "host": host_info(),
    }


def run_key(kind: str, setting: str, strategy: str, seed: int, lr: float) -> dict:
    return {"kind": kind, "setting": setting, "strategy": strategy, "seed": seed, "lr": lr}


def same_key(a: dict, b: dict) -> bool:
    return all(a[k] == b[k] for k in ("kind", "setting", "strategy", "seed", "lr"))


def final_personalized(run: dict) -> float | None:
    return ((run.get("headline") or {}).get("personalized_acc_after") or {}).get("final")


def choose_lrs(runs: list[dict], setting: str, strategies, lrs) -> dict[str, float]:
    """Per strategy, the grid lr with the best final personalized accuracy on its tuning run."""
    chosen = {}
    for strategy in strategies:
        scored = [
            (final_personalized(r) or -1.0, -r["lr"], r["lr"])
            for r in runs
            if r["kind"] == "tune" and r["setting"] == setting and r["strategy"] == strategy
        ]
        chosen[strategy] = max(scored)[2] if scored else lrs[len(lrs) // 2]
    return chosen


class Sweep:
    """The run matrix, executed in order with resume and an ETA."""

    def __init__(self, args, sizing: dict, out: Path):
        self.args, self.sizing, self.out = args, sizing, out
        keep = args.resume or args.report_only
        if keep:
            split_legacy_log(out)
        else:
            for log in [*run_logs(out), out / "runs.jsonl"]:
                log.unlink(missing_ok=True)
        self.runs = self._load() if keep else []
        self.started, self.ran = time.time(), 0

    def _load(self) -> list[dict]:
        rows = [json.loads(x) for log in run_logs(self.out) for x in log.read_text().splitlines() if x.strip()]
        check_definitions(rows, self.out)
        sizing = json.dumps(self.sizing, sort_keys=True)
        return [r for r in rows if r.get("sizing") == sizing and r["status"] != "failed"]

    def ensure(self, key: dict, remaining: int, **extra) -> dict:
        have = next((r for r in self.runs if same_key(r, key)), None)
        if have is not None or self.args.report_only:
            return have
        run_dir = self.out / "runs" / key["setting"] / f"{key['kind']}-{key['strategy']}-s{key['seed']}-lr{key['lr']:g}"
        cfg = sim_config(
            SETTINGS[key["setting"]],
            key["strategy"],
            key["seed"],
            key["lr"],
            self.sizing,
            run_dir,
            self.args.overrides,
            **extra,
        )
        row = {
            **run_one(key, cfg),
            "sizing": json.dumps(self.sizing, sort_keys=True),
            **definition_field(key["setting"]),
        }
        append_line(run_log(self.out, key["setting"]), json.dumps(row, default=str))
        self.runs.append(row)
        self.ran += 1
        per = (time.time() - self.started) / self.ran
        print(
            f"[{key['setting']}] {key['kind']} {key['strategy']} seed {key['seed']} lr {key['lr']:g}: "
            f"{row['status']}, personalized {final_personalized(row)}, {row['wall_s']:.0f} s; "
            f"ETA {per * max(0, remaining - 1) / 60:.0f} min",
            file=sys.stderr,
            flush=True,
        )
        return row


def run_log(out: Path, setting: str) -> Path:
    """Where a setting's finished runs are appended: one file per setting keeps every file of the
    committed results well under the repository's 2 MB limit (one run is ~11 kB)."""
    return out / f"runs-{setting}.jsonl"


class DefinitionConflict(ValueError):
    """OUT holds runs of a setting name defined with other data than this command defines it with."""


def check_definitions(rows: list[dict], out: Path) -> None:
    """Raise DefinitionConflict if a logged row's setting is defined now with another definition (or is a
    built-in now and was defined then): its rows are not runs of this setting."""
    for row in rows:
        setting = row.get("setting")
        if setting in SETTINGS and row.get("setting_def") != definition(setting):
            raise DefinitionConflict(
                f"{out} holds runs of setting {setting!r} defined as {row.get('setting_def') or 'the built-in one'}, "
                f"not {definition(setting) or 'the built-in one'}: give the setting another name, or use another --out"
            )


def run_logs(out: Path) -> list[Path]:
    return sorted(out.glob("runs-*.jsonl"))


def split_legacy_log(out: Path) -> None:
    """Move the rows of a single ``runs.jsonl`` (sweeps before 2026-12-06) into the per-setting logs.
    The file is renamed first, so a row another process appends meanwhile lands in a new legacy file
    that the next call moves, and no row is read twice or lost."""
    legacy = out / "runs.jsonl"
    if not legacy.exists():
        return
    moving = legacy.with_name(f"runs.jsonl.moving-{os.getpid()}")
    legacy.rename(moving)
    for line in moving.read_text().splitlines():
        if line.strip():
            append_line(run_log(out, json.loads(line)["setting"]), line)
    moving.unlink()


def append_line(path: Path, line: str) -> None:
    """One ``write`` of the whole line on an O_APPEND descriptor: sweeps of disjoint strategies may share
    one log, and a buffered write of a long row (~11 kB) could interleave with another process's."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def plan(args, settings: list[str], seeds: list[int], lrs: tuple[float, ...]) -> list[tuple]:
    """Every run in order, as (kind, setting, strategy, seed, lr): first the tuning runs (per dataset or
    once, see tune_setting); then seed by seed, so that a partial sweep covers every setting: each
    setting's reported runs, followed by its FedHFT ablations where it is one of ABLATION_SETTINGS; last,
    the reference-defaults runs. lr None: chosen from the tuning runs when the step runs; strategy None
    (reference): the best baseline of the reported runs."""
    names = args.strategies.split(",")
    strategies, variants = [s for s in names if s not in VARIANTS], [s for s in names if s in VARIANTS]
    per_dataset = getattr(args, "tune_per_dataset", False)
    steps = []
    if len(lrs) > 1:
        for tune_at in dict.fromkeys(tune_setting(s, per_dataset) for s in settings):
            steps += [("tune", tune_at, s, TUNE_SEED, lr) for s in strategies for lr in lrs]
    for seed in seeds:
        for setting in settings:
            steps += [("eval", setting, s, seed, None) for s in strategies]
            steps += [("eval", setting, v, seed, None) for v in variants if runs_variant(v, setting, args.quick)]
    if args.reference and REFERENCE["setting"] in settings and not args.quick:
        steps += [("reference", REFERENCE["setting"], s, REFERENCE["seed"], None) for s in ("fedhft", None)]
    return steps


def chosen_lr(runs: list[dict], setting: str, strategy: str, lrs: tuple[float, ...], per_dataset=False) -> float:
    """The tuned lr of ``strategy`` for ``setting`` (an ablation uses FedHFT's: it changes one component)."""
    base = VARIANTS.get(strategy, {}).get("strategy", strategy)
    if len(lrs) == 1:
        return lrs[0]
    return choose_lrs(runs, tune_setting(setting, per_dataset), [base], lrs)[base]


def best_baseline(runs: list[dict], setting: str) -> str | None:
    """The federated baseline with the best mean final personalized accuracy on ``setting``'s reported runs."""
    entry = next((c for c in compare(summarize(runs), runs) if c["setting"] == setting), {})
    return entry.get("personalized_acc_after_final", {}).get("best_baseline")


def execute(sweep: Sweep, steps: list[tuple], lrs: tuple[float, ...]) -> None:
    for i, (kind, setting, strategy, seed, lr) in enumerate(steps):
        extra = dict(SETTING_SIZING.get(setting, {}))
        if kind == "tune":
            sweep.ensure(run_key(kind, setting, strategy, seed, lr), len(steps) - i, train_pool="tune", **extra)
            continue
        if kind == "reference":
            strategy = strategy or best_baseline(sweep.runs, setting)
            if strategy is None:
                continue
            extra.update({k: v for k, v in REFERENCE.items() if k not in ("setting", "seed")})
        lr = chosen_lr(sweep.runs, setting, strategy, lrs, getattr(sweep.args, "tune_per_dataset", False))
        sweep.ensure(run_key(kind, setting, strategy, seed, lr), len(steps) - i, **extra)


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    have = [v for v in values if v is not None]
    return (float(np.mean(have)), float(np.std(have))) if have else (None, None)


def summarize(runs: list[dict]) -> list[dict]:
    """One row per (setting, strategy) of the reported runs: both metrics, final and best, mean and
    std over seeds, plus the majority-label reference of the same shards."""
    rows = []
    evals = [r for r in runs if r["kind"] == "eval"]
    for setting in dict.fromkeys(r["setting"] for r in evals):
        for strategy in dict.fromkeys(r["strategy"] for r in evals if r["setting"] == setting):
            mine = [r for r in evals if r["setting"] == setting and r["strategy"] == strategy]
            row = {
                "setting": setting,
                "strategy": strategy,
                "seeds": len(mine),
                "lr": mine[0]["lr"],
                "completed": sum(r["status"] == "completed" for r in mine),
            }
            for metric in (
                "global_accuracy",
                "personalized_acc_after",
                "personalized_acc_before",
                "personalized_bal_acc_after",
                "personalized_worst10_acc_after",
                "personalized_majority_acc",
            ):
                for which in ("final", "best"):
                    row[f"{metric}_{which}"] = _mean_std(
                        [((r.get("headline") or {}).get(metric) or {}).get(which) for r in mine]
                    )
            rows.append(row)
    return rows


def paired_test(runs: list[dict], setting: str, a: str, b: str) -> dict | None:
    """``a`` minus ``b`` on final personalized accuracy, paired over (seed, client): the mean
    difference, the Wilcoxon signed-rank p-value, and the std of the per-seed mean differences."""
    from scipy.stats import wilcoxon

    by = {(r["strategy"], r["seed"]): r["clients"] for r in runs if r["kind"] == "eval" and r["setting"] == setting}
    diffs, per_seed = [], []
    for seed in sorted({s for (st, s) in by if st == a} & {s for (st, s) in by if st == b}):
        ca, cb = by[(a, seed)], by[(b, seed)]
        d = [
            ca[c]["val_acc_after"] - cb[c]["val_acc_after"]
            for c in sorted(set(ca) & set(cb))
            if "val_acc_after" in ca[c] and "val_acc_after" in cb[c]
        ]
        diffs += d
        if d:
            per_seed.append(float(np.mean(d)))
    if len(diffs) < 2:
        return None
    p = float(wilcoxon(diffs).pvalue) if any(diffs) else 1.0
    spread = float(np.std(per_seed)) if len(per_seed) > 1 else None
    mean = float(np.mean(diffs))
    return {
        "a": a,
        "b": b,
        "mean_diff": mean,
        "pairs": len(diffs),
        "p_value": p,
        "seed_std": spread,
        "significant": bool(p < SIGNIFICANCE and (spread is None or abs(mean) > spread)),
    }


def compare(rows: list[dict], runs: list[dict]) -> list[dict]:
    """Per setting: FedHFT minus the best other federated strategy on each metric, with the test."""
    out = []
    for setting in dict.fromkeys(r["setting"] for r in rows):
        mine = {r["strategy"]: r for r in rows if r["setting"] == setting}
        if "fedhft" not in mine:
            continue
        # Every FedHFT variant is named fedhft-*, also those of an earlier default kept in the log.
        others = [s for s in mine if s != "local-only" and not s.startswith("fedhft")]
        entry = {"setting": setting}
        for metric in ("personalized_acc_after_final", "global_accuracy_final"):
            best = max(others, key=lambda s: mine[s][metric][0] if mine[s][metric][0] is not None else -1, default=None)
            if best is None or mine["fedhft"][metric][0] is None or mine[best][metric][0] is None:
                continue
            entry[metric] = {
                "best_baseline": best,
                "fedhft": mine["fedhft"][metric][0],
                "baseline": mine[best][metric][0],
                "diff": mine["fedhft"][metric][0] - mine[best][metric][0],
            }
        best_p = entry.get("personalized_acc_after_final", {}).get("best_baseline")
        entry["test"] = paired_test(runs, setting, "fedhft", best_p) if best_p else None
        out.append(entry)
    return out


def _f(pair, spec=".3f") -> str:
    mean, std = pair if isinstance(pair, (tuple, list)) else (pair, None)
    if mean is None:
        return "-"
    return format(mean, spec) + ("" if std is None else f" ± {format(std, spec)}")


def table(rows: list[dict], comparisons: list[dict], central: dict) -> str:
    lines = [
        "| setting | strategy | lr | completed | personalized after (final) | best | before | balanced | "
        "worst 10% | majority label | global (final) | best |",
        "|---" * 12 + "|",
    ]
    for r in rows:
        lines.append(
            f"| {r['setting']} | {r['strategy']} | {r['lr']:g} | {r['completed']}/{r['seeds']} | "
            f"{_f(r['personalized_acc_after_final'])} | {_f(r['personalized_acc_after_best'])} | "
            f"{_f(r['personalized_acc_before_final'])} | {_f(r['personalized_bal_acc_after_final'])} | "
            f"{_f(r['personalized_worst10_acc_after_final'])} | {_f(r['personalized_majority_acc_final'])} | "
            f"{_f(r['global_accuracy_final'])} | {_f(r['global_accuracy_best'])} |"
        )
    if central:
        lines += [
            "",
            "Centralized LoRA bound (global test accuracy, per seed; as many steps as a run's clients take "
            "together; its rate chosen on its own dataset's tuning half from the grid and up to two rates below "
            "it, among those that beat the held-out majority label, decayed like the runs'): "
            + "; ".join(
                f"{k}: {v['accuracy']:.3f} (lr {v['lr']:g}, {v.get('steps', '?')} steps)"
                for k, v in sorted(central.items())
            ),
        ]
    lines += [
        "",
        "| setting | metric | FedHFT | best other | baseline | FedHFT - best | paired test |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        for metric in ("personalized_acc_after_final", "global_accuracy_final"):
            m = c.get(metric)
            if not m:
                continue
            t = c.get("test") if metric.startswith("personalized") else None
            test = (
                "-"
                if not t
                else (
                    f"p={t['p_value']:.3g} over {t['pairs']} (seed, client) pairs, seed std "
                    f"{_f(t['seed_std'])}: "
                    f"{'significant' if t['significant'] else 'not significant'}"
                )
            )
            lines.append(
                f"| {c['setting']} | {metric.removesuffix('_final')} | {m['fedhft']:.3f} | "
                f"{m['best_baseline']} "
                f"| {m['baseline']:.3f} | {m['diff']:+.3f} | {test} |"
            )
    return "\n".join(lines)


def reference_table(runs: list[dict]) -> str:
    """The reference-defaults runs (REFERENCE): final and best personalized and global accuracy."""
    ref = [r for r in runs if r["kind"] == "reference"]
    if not ref:
        return ""
    lines = [
        f"At the reference code's defaults ({REFERENCE['clients']} clients x {REFERENCE['rounds']} rounds, "
        f"{REFERENCE['setting']}, seed {REFERENCE['seed']}):",
        "",
        "| strategy | lr | personalized after (final) | best | global (final) | best |",
        "|---" * 6 + "|",
    ]
    for r in ref:
        h = r.get("headline") or {}
        pers, glob = h.get("personalized_acc_after") or {}, h.get("global_accuracy") or {}
        lines.append(
            f"| {r['strategy']} | {r['lr']:g} | {_f(pers.get('final'))} | {_f(pers.get('best'))} | "
            f"{_f(glob.get('final'))} | {_f(glob.get('best'))} |"
        )
    return "\n".join(lines)


#: Rows kept from an earlier default under its own name -> the default that replaced it. An old default's
#: ablations ("<old>-nomask") are compared with it; the old default itself with its successor.
OLD_DEFAULTS = {"fedhft-residual": "fedhft-k2", "fedhft-k2": "fedhft-allclusters", "fedhft-allclusters": "fedhft"}
ABLATION_METRICS = (
    ("personalized_acc_after", "personalized after"),
    ("personalized_acc_before", "before"),
    ("personalized_bal_acc_after", "balanced"),
    ("global_accuracy", "global"),
)


def ablation_reference(name: str) -> str:
    """The default an ablation changes one component of: its old default's row, the successor of an old
    default, else fedhft."""
    return next((old for old in OLD_DEFAULTS if name.startswith(old + "-")), OLD_DEFAULTS.get(name, "fedhft"))


def ablation_table(runs: list[dict]) -> str:
    """Per ablation setting, each FedHFT variant against the default it changes, on the same seeds
    (final values, means over those seeds; differences are variant minus reference)."""
    settings = list(dict.fromkeys([*ABLATION_SETTINGS, *(s for v in VARIANT_SETTINGS.values() for s in v)]))
    evals = [r for r in runs if r["kind"] == "eval" and r["setting"] in settings]
    head = " | ".join(f"{label} | diff" for _, label in ABLATION_METRICS)
    lines = [
        "FedHFT ablations (final values, means over the seeds both rows have; "
        "diff = variant - the default it changes):",
        "",
        f"| setting | variant | against | seeds | {head} |",
        "|---" * (4 + 2 * len(ABLATION_METRICS)) + "|",
    ]
    for setting in settings:
        mine = [r for r in evals if r["setting"] == setting]
        for name in dict.fromkeys(r["strategy"] for r in mine if r["strategy"].startswith("fedhft-")):
            if setting not in ABLATION_SETTINGS and not runs_variant(name, setting):
                continue  # e.g. an old default's reported rows on a setting of a variant of its own
            ref = ablation_reference(name)
            seeds = sorted(
                {r["seed"] for r in mine if r["strategy"] == name} & {r["seed"] for r in mine if r["strategy"] == ref}
            )
            if not seeds:
                continue
            cells = []
            for metric, _ in ABLATION_METRICS:
                got = [_final(mine, name, s, metric) for s in seeds]
                base = [_final(mine, ref, s, metric) for s in seeds]
                if None in got or None in base:
                    cells += ["-", "-"]
                    continue
                cells += [f"{np.mean(got):.3f}", f"{np.mean(got) - np.mean(base):+.3f}"]
            lines.append(f"| {setting} | {name} | {ref} | {','.join(map(str, seeds))} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 4 else ""


def _final(runs: list[dict], strategy: str, seed: int, metric: str) -> float | None:
    r = next((x for x in runs if x["strategy"] == strategy and x["seed"] == seed), None)
    return (((r or {}).get("headline") or {}).get(metric) or {}).get("final")


def tuning_table(runs: list[dict]) -> str:
    """The tuning runs (seed TUNE_SEED, the tune half): final personalized / global accuracy per lr."""
    tune = [r for r in runs if r["kind"] == "tune"]
    if not tune:
        return ""
    lrs = sorted({r["lr"] for r in tune})
    lines = [
        "Learning-rate tuning (tune half of the training file, seed 100; final personalized / global accuracy; "
        "the chosen lr is the best personalized):",
        "",
        "| setting | strategy | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |",
        "|---" * (len(lrs) + 2) + "|",
    ]
    for setting in dict.fromkeys(r["setting"] for r in tune):
        for strategy in dict.fromkeys(r["strategy"] for r in tune if r["setting"] == setting):
            cells = []
            for lr in lrs:
                r = next((x for x in tune if (x["setting"], x["strategy"], x["lr"]) == (setting, strategy, lr)), None)
                glob = ((r or {}).get("headline") or {}).get("global_accuracy", {}).get("final")
                cells.append("not run" if r is None else f"{_f(final_personalized(r))} / {_f(glob)}")
            lines.append(f"| {setting} | {strategy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost_note(runs: list[dict], steps: list[tuple]) -> str:
    """The sweep's cost on the machine that ran it: mean seconds a run so far, and the hours the
    unfinished part of the plan needs at that rate (a reference run counts by its client-rounds)."""
    walls = [r["wall_s"] for r in runs if r["kind"] != "reference" and r.get("wall_s")]
    if not walls:
        return "Cost: no run finished yet."
    per_run = float(np.mean(walls))
    scale = REFERENCE["clients"] * REFERENCE["rounds"] / (FULL["clients"] * FULL["rounds"])
    done = {(r["kind"], r["setting"], r["strategy"], r["seed"]) for r in runs}
    best_ref_done = any(r["kind"] == "reference" and r["strategy"] != "fedhft" for r in runs)

    def finished(step) -> bool:  # strategy None: the reference run of the best baseline
        return best_ref_done if step[2] is None else step[:4] in done

    left_s = per_run * sum(scale if s[0] == "reference" else 1.0 for s in steps if not finished(s))
    return (
        f"Cost: {len(walls)} runs took {per_run:.0f} s each on average ({sum(walls) / 3600:.1f} h); the "
        f"unfinished part of the plan needs about {left_s / 3600:.1f} h more at that rate."
    )


def parse(argv):
    p = argparse.ArgumentParser(prog="fedhft bench sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CI mode: tiny model, one setting, one seed, one lr")
    p.add_argument("--out", default="benchmarks/results/sweep")
    p.add_argument("--seeds", default=None, help="comma list (default: 0,1,2 full, 0 quick)")
    p.add_argument("--settings", default=None, help=f"comma list of {list(SETTINGS)}")
    p.add_argument(
        "--strategies",
        default=",".join(STRATEGIES + tuple(VARIANTS)),
        help=f"comma list of strategies and FedHFT ablations {list(VARIANTS)}",
    )
    p.add_argument(
        "--define",
        default=None,
        help="more settings, as a JSON object of name -> {dataset, partition, alpha, ...}, e.g. "
        '\'{"mydata-a0.5": {"dataset": "path/to/file.tsv", "partition": "dirichlet", "alpha": 0.5}}\'; '
        "name them in --settings",
    )
    p.add_argument("--lrs", default=None, help="the learning-rate grid every strategy is tuned on (comma list)")
    p.add_argument(
        "--tune-per-dataset",
        action="store_true",
        help=f"tune the rates at each dataset's reference setting, not once at {TUNE_ONCE}",
    )
    p.add_argument("--resume", action="store_true", help="keep the finished runs in OUT/runs-<setting>.jsonl")
    p.add_argument("--report-only", action="store_true", help="run nothing; rebuild the tables from the run logs")
    p.add_argument("--note", default="", help="a line for the report: where and how the runs were made")
    p.add_argument(
        "--central",
        choices=("yes", "no", "only"),
        default="yes",
        help="the centralized bound: run it too (yes), skip it (no: a shard of a sweep split over "
        "processes), or run only it (only)",
    )
    p.add_argument(
        "--no-reference",
        dest="reference",
        action="store_false",
        help="skip the reference-defaults runs (50 clients x 20 rounds, FedHFT and the best baseline)",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        help="SimConfig key=value for every run (e.g. data_root=...); overrides of the sizing (e.g. local_steps=0 "
        "local_epochs=2 batch_size=32, the reference code's local training) are recorded with each row and keep "
        "a resumed sweep's rows of each sizing apart",
    )
    return p.parse_args(argv)


def sizing_overrides(overrides: list[str], sizing: dict = FULL) -> dict:
    """The overrides of SIZING_KEYS, as the typed values of the run config they make with ``sizing``
    (the config loader reads and checks them: a bad override raises ConfigError with every problem)."""
    keys = {item.partition("=")[0].strip() for item in overrides} & SIZING_KEYS
    cfg = sim_config(SETTINGS[TUNE_ONCE], "fedavg-lora", TUNE_SEED, LRS["full"][0], sizing, Path("."), overrides)
    return {k: getattr(cfg, k) for k in sorted(keys)}


def write_report(sweep: Sweep, settings: list[str], seeds: list[int], lrs, central: dict, argv) -> None:
    """OUT/sweep.md and sweep.json from every logged run (with plots), printed and copied into RESULTS.md."""
    rows = summarize(sweep.runs)
    comparisons = compare(rows, sweep.runs)
    args, out = sweep.args, sweep.out
    steps = plan(args, settings, seeds, lrs)
    status = (
        f"{sum(r['kind'] == 'eval' for r in sweep.runs)} reported and "
        f"{sum(r['kind'] == 'tune' for r in sweep.runs)} tuning runs finished of "
        f"{len(steps)} planned"
        + (f". {args.note}" if args.note else "")
        + "\n\n"
        + cost_note(sweep.runs, steps)
        + "\n\n"
        + hosts_note(sweep.runs)
    )
    md = "\n\n".join(
        x
        for x in (
            status,
            table(rows, comparisons, central),
            ablation_table(sweep.runs),
            reference_table(sweep.runs),
            concept_cluster_table(sweep.runs),
            tuning_table(sweep.runs),
        )
        if x
    )
    plots = plot_clients(sweep.runs, out) + plot_curves(sweep.runs, out)
    doc = {
        "sizing": {**COMMON, **sweep.sizing},
        "settings": {s: SETTINGS[s] for s in settings},
        "seeds": seeds,
        "lr_grid": lrs,
        "rows": rows,
        "comparisons": comparisons,
        "centralized": central,
        "plots": plots,
        "runs_files": [p.name for p in run_logs(out)],  # every run, once: this file holds only summaries
        "num_runs": len(sweep.runs),
        "command": "fedhft bench sweep " + " ".join(argv or []),
    }
    (out / "sweep.json").write_text(json.dumps(doc, indent=2, default=str))
    (out / "sweep.md").write_text(md + "\n")
    print(md)
    from simulate import update_results_md

    update_results_md(out)


def check_arguments(args) -> tuple[dict, list[str], list[str]]:
    """(sizing, settings, every problem) of the command line, found before any run: the definitions,
    the overrides, the settings' names and what each setting's runs would read (the simulation's preflight).
    The definitions become settings of this process."""
    from fedhft.config import ConfigError

    base = QUICK if args.quick else FULL
    defs, problems = parse_definitions(args.define)
    define_settings(defs)
    problems += setting_override_problems(args.overrides)
    try:
        sizing = {**base, **sizing_overrides(args.overrides, base)}
    except ConfigError as exc:
        sizing = base
        problems += exc.errors
    settings = (args.settings or ("sst2-a5.0" if args.quick else ",".join(SETTINGS))).split(",")
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        problems.append(f"unknown settings {unknown}; known: {list(SETTINGS)} (--define adds one)")
    if not problems and not args.report_only:  # a report reads the logs only
        problems += preflight_problems(
            [*settings, *(tune_setting(s, args.tune_per_dataset) for s in settings)], sizing, args.overrides
        )
    return sizing, settings, problems


def preflight_problems(settings: list[str], sizing: dict, overrides: list[str]) -> list[str]:
    """What the simulation's preflight finds wrong with a run of each setting (data, model, tiers), each once."""
    from fedhft.config import ConfigError
    from simulate import preflight

    found: list[str] = []
    with tempfile.TemporaryDirectory() as empty:
        for setting in dict.fromkeys(settings):
            extra = SETTING_SIZING.get(setting, {})
            cfg = sim_config(SETTINGS[setting], "fedavg-lora", TUNE_SEED, 1e-2, sizing, Path(empty), overrides, **extra)
            try:
                preflight(cfg, Path(empty))
            except ConfigError as exc:
                found += [f"{setting}: {e}" for e in exc.errors if f"{setting}: {e}" not in found]
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        return _sweep(args, argv)
    finally:
        forget_definitions()


def _sweep(args, argv) -> int:
    sizing, settings, problems = check_arguments(args)
    if problems:
        print(
            "fedhft bench sweep: " + "\n  ".join(["the command has problems (nothing ran):", *problems]),
            file=sys.stderr,
        )
        return 2
    seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1,2")).split(",")]
    lrs = tuple(float(x) for x in args.lrs.split(",")) if args.lrs else LRS["quick" if args.quick else "full"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        sweep = Sweep(args, sizing, out)
    except DefinitionConflict as exc:
        print(f"fedhft bench sweep: {exc}", file=sys.stderr)
        return 2
    if args.central != "only":
        execute(sweep, plan(args, settings, seeds, lrs), lrs)
    central = centralized_bounds(sweep, settings, seeds, lrs) if args.central != "no" else {}
    write_report(sweep, settings, seeds, lrs, central, argv)
    failed = [r for r in sweep.runs if r["status"] != "completed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Accuracy benchmark: every strategy as a REAL federated run (``run_simulation``: Mosquitto, the
``fedhft server`` process, one ``fedhft edge`` process per client), same data, split and seeds
for every strategy, plus centralized LoRA on the pooled training data as the upper bound.

    fedhft bench accuracy [--quick] [--out benchmarks/results/accuracy] [--seeds 0,1] [--settings a,b]
                          [--strategies s1,s2] [key=value ...  (SimConfig overrides for every run)]

Settings (full mode): SST-2 with Dirichlet alpha 0.1 and 1.0, AG News with alpha 1.0; three tiers
(android-mid, rpi5, jetson-orin-nano). Reported per setting and strategy: final global accuracy
(mean and spread over seeds), rounds to the target accuracy (``--target`` x the centralized
accuracy) and bytes (updates up + tasks down) spent until then. The full mode is sized to take
~1.5-2 hours on a busy 2-core machine (docs/DESIGN-NOTES.md); ``--quick`` (CI) runs the tiny model
on one setting with one seed. The comparison (strategies, splits, tiers, seeds) never changes with
the size.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np

STRATEGIES = ("fedavg-lora", "hetlora", "flexlora", "heterofl", "legend", "heterotune", "fedhft")
SETTINGS = {
    "sst2-a0.1": {"dataset": "sst2", "partition": "dirichlet", "alpha": 0.1},
    "sst2-a1.0": {"dataset": "sst2", "partition": "dirichlet", "alpha": 1.0},
    "agnews-a1.0": {"dataset": "agnews", "partition": "dirichlet", "alpha": 1.0},
}
COMMON = {
    "tiers": ["android-mid", "rpi5", "jetson-orin-nano"],
    "backend": "torch",
    "memory_budget": "off",
    "battery": None,
    "progress": False,
}
FULL = {
    "model": "minilm",
    "clients": 6,
    "rounds": 4,
    "local_steps": 5,
    "max_seq_len": 32,
    "train_size": 1200,
    "test_size": 300,
    "lr": 3e-3,
}
QUICK = {
    "model": "tiny",
    "clients": 3,
    "rounds": 2,
    "local_steps": 3,
    "max_seq_len": 16,
    "train_size": 150,
    "test_size": 60,
    "lr": 2e-2,
    "join_timeout_s": 120,
}


def sim_config(setting: dict, strategy: str, seed: int, sizing: dict, out: Path, overrides: list[str]):
    from fedhft.config import load_config
    from simulate import SimConfig

    base = {**COMMON, **sizing, **setting, "strategy": strategy, "seed": seed, "out": str(out)}
    items = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in base.items()]
    return load_config(SimConfig, None, items + list(overrides))


def held_out_examples(pool: list, train: list, size: int, seed: int) -> list:
    """A seeded subset of ``size`` examples of ``pool`` that are not in ``train`` (a subset of it)."""
    from simulate import subsample

    chosen = {id(e) for e in train}
    return subsample([e for e in pool if id(e) not in chosen], size, seed, 13)


def tuning_train_size(pool: int, train_size: int, held_out: int) -> int:
    """How many of ``pool`` examples the bound trains on when ``held_out`` of them must stay out to score
    it: ``train_size``, or fewer where the pool cannot hold both (MRPC's tuning half: ~1,800 pairs)."""
    if held_out and pool - held_out < held_out:
        raise ValueError(
            f"the pool has {pool} examples: too few to hold out {held_out} for scoring and train on the rest; "
            f"use a held-out size of at most {pool // 2}"
        )
    return min(train_size, pool - held_out) if held_out else train_size


def centralized(cfg, max_steps: int | None = None, held_out: int = 0) -> dict:
    """Centralized LoRA with the largest tier's plan, the same total number of gradient steps as a
    federated run (rounds x local steps x clients, capped at ``max_steps``) on the pooled (same)
    training subset of the run's data (``dataset_of``: its pool, columns and test file). The rate
    follows the run's schedule: times ``lr_decay`` once per round's share of the steps. Scored on the
    test set, or with ``held_out`` > 0 on that many pool examples outside the training subset (a
    validation split for choosing the rate: never the test set; the training subset shrinks to leave
    them, see ``tuning_train_size``)."""
    from devices import load_catalog
    from simulate import encode_examples, fit_plan, model_identity, train_centralized

    ds, train, scored = bound_split(cfg, held_out)
    _, layers = model_identity(cfg.model, ds.num_labels)
    catalog = load_catalog()
    plan = max(
        (fit_plan(catalog[t].plan, layers, cfg.max_seq_len, cfg.batch_size) for t in cfg.tiers),
        key=lambda p: (p.depth, sum(p.ranks)),
    )
    tok = _tokenizer(cfg.model)
    enc = lambda xs: encode_examples(tok, xs, cfg.max_seq_len)  # noqa: E731
    # The federated runs' gradient steps: per client and round, local_steps or local_epochs passes
    # over its share of the pool (about len(train) / clients rows).
    per_round = cfg.local_steps or cfg.local_epochs * math.ceil(len(train) / cfg.clients / cfg.batch_size)
    steps = cfg.rounds * per_round * cfg.clients
    steps = min(steps, max_steps) if max_steps else steps
    result = train_centralized(
        cfg.model,
        plan,
        ds.num_labels,
        enc(train),
        enc(scored),
        steps,
        cfg.lr,
        cfg.seed,
        lr_decay=cfg.lr_decay,
        decay_every=max(1, steps // cfg.rounds) if cfg.lr_decay < 1 else 0,
    )
    return {
        **result,
        "scored_on": f"held_out:{len(scored)}" if held_out else f"test:{len(scored)}",
        "majority_accuracy": label_prior_accuracy(train, scored),
    }


def bound_split(cfg, held_out: int = 0) -> tuple:
    """(dataset, training subset, scored examples) of ``centralized(cfg, held_out=held_out)``. A pool of
    fewer than twice ``held_out`` examples (a small user file) holds out half of itself instead."""
    from simulate import dataset_of, subsample

    ds = dataset_of(cfg)
    held_out = min(held_out, len(ds.train) // 2)
    train = subsample(ds.train, tuning_train_size(len(ds.train), cfg.train_size, held_out), cfg.seed, 11)
    if held_out:
        return ds, train, held_out_examples(ds.train, train, held_out, cfg.seed)
    return ds, train, subsample(ds.test, cfg.test_size, cfg.seed, 12)


def label_prior_accuracy(train: list, scored: list) -> float:
    """The accuracy on ``scored`` of always predicting ``train``'s most frequent label: what a model that
    learned nothing but the label prior scores (the sweep's majority-label reference, on the bound's split)."""
    from edge_runtime import majority_accuracy

    return majority_accuracy([e.label for e in train], [e.label for e in scored])


def _tokenizer(model: str) -> Path:
    from export import resolve_model

    return resolve_model(model).tokenizer_dir / "tokenizer.json"


def to_target(rounds: list[dict], target: float) -> tuple[int | None, int | None]:
    """(first round whose accuracy >= target, cumulative bytes up+down until it) or (None, None)."""
    spent = 0
    for r in rounds:
        spent += (r.get("bytes_up") or 0) + (r.get("bytes_down") or 0)
        if r.get("accuracy") is not None and r["accuracy"] >= target:
            return r["round"], spent
    return None, None


def summarize(runs: list[dict], central: dict, target_fraction: float) -> list[dict]:
    """One row per (setting, strategy): mean/std final accuracy, rounds and MB to the target."""
    rows = []
    for setting in dict.fromkeys(r["setting"] for r in runs):
        target = target_fraction * central[setting]["accuracy"]
        for strategy in dict.fromkeys(r["strategy"] for r in runs if r["setting"] == setting):
            mine = [r for r in runs if r["setting"] == setting and r["strategy"] == strategy]
            finals = [r["final_accuracy"] for r in mine if r["final_accuracy"] is not None]
            hits = [to_target(r["rounds"], target) for r in mine]
            reached = [h for h in hits if h[0] is not None]
            rows.append(
                {
                    "setting": setting,
                    "strategy": strategy,
                    "seeds": len(mine),
                    "ok": sum(r["ok"] for r in mine),
                    "final_mean": float(np.mean(finals)) if finals else None,
                    "final_std": float(np.std(finals)) if finals else None,
                    "target": target,
                    "reached": f"{len(reached)}/{len(mine)}",
                    "rounds_to_target": float(np.mean([h[0] + 1 for h in reached])) if reached else None,
                    "mb_to_target": float(np.mean([h[1] for h in reached])) / 1e6 if reached else None,
                    "wall_s": float(np.mean([r["wall_s"] for r in mine])),
                }
            )
        rows.append(
            {
                "setting": setting,
                "strategy": "centralized LoRA (upper bound)",
                "seeds": 1,
                "ok": 1,
                "final_mean": central[setting]["accuracy"],
                "final_std": 0.0,
                "target": target,
                "reached": "-",
                "rounds_to_target": None,
                "mb_to_target": None,
                "wall_s": central[setting]["seconds"],
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    f = lambda v, s=".3f": "-" if v is None else format(v, s)  # noqa: E731
    lines = [
        "| setting | strategy | final accuracy (mean ± std) | runs ok | target | reached | rounds to target | "
        "MB to target | wall s / run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['setting']} | {r['strategy']} | {f(r['final_mean'])} ± {f(r['final_std'])} | "
            f"{r['ok']}/{r['seeds']} | {f(r['target'])} | {r['reached']} | "
            f"{f(r['rounds_to_target'], '.1f')} | "
            f"{f(r['mb_to_target'], '.2f')} | {f(r['wall_s'], '.0f')} |"
        )
    return "\n".join(lines)


def plot(runs: list[dict], central: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    for setting in dict.fromkeys(r["setting"] for r in runs):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
        for strategy in dict.fromkeys(r["strategy"] for r in runs if r["setting"] == setting):
            mine = [r for r in runs if r["setting"] == setting and r["strategy"] == strategy and r["rounds"]]
            if not mine:
                continue
            n = min(len(r["rounds"]) for r in mine)
            acc = np.nanmean([[r["rounds"][i].get("accuracy") or np.nan for i in range(n)] for r in mine], axis=0)
            mb = (
                np.mean(
                    [
                        np.cumsum([(x.get("bytes_up") or 0) + (x.get("bytes_down") or 0) for x in r["rounds"][:n]])
                        for r in mine
                    ],
                    axis=0,
                )
                / 1e6
            )
            a1.plot(range(n), acc, marker="o", label=strategy)
            a2.plot(mb, acc, marker="o", label=strategy)
        for ax in (a1, a2):
            ax.axhline(central[setting]["accuracy"], color="k", ls="--", lw=1, label="centralized")
            ax.grid(alpha=0.3)
        a1.set_xlabel("round"), a1.set_ylabel("global test accuracy"), a2.set_xlabel("cumulative MB (up + down)")
        a1.set_title(setting), a2.legend(fontsize=7)
        name = f"accuracy_{setting}.png"
        fig.tight_layout(), fig.savefig(out / name, dpi=110), plt.close(fig)
        made.append(name)
    return made


def _run_one(setting_name, setting, strategy, seed, sizing, out, overrides) -> dict:
    from simulate import run_simulation

    cfg = sim_config(setting, strategy, seed, sizing, out / "runs" / setting_name / f"{strategy}-s{seed}", overrides)
    print(f"[{setting_name}] {strategy} seed {seed} ...", file=sys.stderr, flush=True)
    shutil.rmtree(cfg.run_dir(), ignore_errors=True)  # this benchmark's own scratch run dir
    res = run_simulation(cfg, say=lambda m: None)
    if res.interrupted:  # Ctrl-C / SIGTERM stops the whole benchmark, not just this run
        raise KeyboardInterrupt
    print(
        f"[{setting_name}] {strategy} seed {seed}: accuracy {res.accuracies} in {res.wall_s:.0f} s"
        f"{'' if res.ok else ' FAILED: ' + str(res.error)}",
        file=sys.stderr,
        flush=True,
    )
    return {
        "setting": setting_name,
        "strategy": strategy,
        "seed": seed,
        "ok": res.ok,
        "status": res.status.value,
        "error": res.error,
        "final_accuracy": res.final_accuracy,
        "rounds": res.rounds,
        "wall_s": res.wall_s,
        "run_dir": str(res.run_dir),
    }


def _slim(run: dict) -> dict:
    keep = ("round", "accuracy", "bytes_up", "bytes_down", "round_s", "stored", "selected", "outcomes", "rejections")
    return {**run, "rounds": [{k: r.get(k) for k in keep} for r in run["rounds"]]}


def _has_shared_data(overrides: list[str]) -> bool:
    from simulate import find_data_root

    given = next((o.split("=", 1)[1] for o in overrides if o.startswith("data_root=")), None)
    root = find_data_root(given)
    return root is not None and (root / "sst2").is_dir()


def toy_dataset(path: Path, n: int = 400) -> Path:
    """A learnable two-class file for CI machines without shared/data (one sentiment word each)."""
    pos, neg = ["good", "great", "superb", "lovely", "fine"], ["bad", "awful", "boring", "poor", "dull"]
    with open(path, "w") as fh:
        for i in range(n):
            y = i % 2
            fh.write(json.dumps({"text": f"a {(pos if y else neg)[i % 5]} movie {i % 11}", "label": y}) + "\n")
    return path


def parse(argv):
    p = argparse.ArgumentParser(prog="fedhft bench accuracy", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CI mode: tiny model, one setting, one seed (~1-3 min)")
    p.add_argument("--out", default="benchmarks/results/accuracy")
    p.add_argument("--seeds", default=None, help="comma list (default: 0,1 full, 0 quick)")
    p.add_argument("--settings", default=None, help=f"comma list of {list(SETTINGS)}")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--target", type=float, default=0.9, help="target = this x the centralized accuracy")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: rebuild the table and plots from OUT/runs.jsonl (implies --resume)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the runs already in OUT/runs.jsonl and OUT/centralized.json; run only the missing ones",
    )
    p.add_argument("overrides", nargs="*", help="SimConfig key=value for every run (e.g. data_root=...)")
    return p.parse_args(argv)


def sizing_key(sizing: dict, overrides: list[str]) -> str:
    """What makes runs comparable: a resumed benchmark only keeps runs made with the same sizing."""
    return json.dumps({**COMMON, **sizing, "overrides": sorted(overrides)}, sort_keys=True)


def _load_progress(out: Path, resume: bool, key: str) -> tuple[list[dict], dict]:
    """Runs and centralized results already on disk (``--resume``), else a fresh start. A full run
    takes hours, so every finished run is appended to ``runs.jsonl`` the moment it ends."""
    log, cen = out / "runs.jsonl", out / "centralized.json"
    if not resume:
        log.unlink(missing_ok=True), cen.unlink(missing_ok=True)
        return [], {}
    runs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    kept = [r for r in runs if r["ok"] and r.get("sizing_key") == key]
    if len(kept) < len(runs):
        print(
            f"--resume: {len(runs) - len(kept)} failed or differently sized runs in {log} are run again",
            file=sys.stderr,
        )
    central = json.loads(cen.read_text()) if cen.exists() else {}
    return kept, (central if central.pop("sizing_key", None) == key else {})


def _write_outputs(out: Path, args, argv, sizing, settings, seeds, runs, central, t0) -> str:
    rows = summarize(runs, central, args.target)
    plots = plot(runs, central, out)
    md = table(rows)
    doc = {
        "quick": args.quick,
        "sizing": {**COMMON, **sizing},
        "settings": {s: SETTINGS[s] for s in settings},
        "seeds": seeds,
        "target_fraction": args.target,
        "centralized": central,
        "rows": rows,
        "runs": [_slim(r) for r in runs],
        "plots": plots,
        # with --resume the table spans several invocations: report what all of its runs took
        "wall_s": sum(r["wall_s"] for r in runs) + sum(c["seconds"] for c in central.values()),
        "invocation_s": time.time() - t0,
        "command": "fedhft bench accuracy " + " ".join(argv or []),
    }
    (out / "accuracy.json").write_text(json.dumps(doc, indent=2, default=str))
    (out / "accuracy.md").write_text(md + "\n")
    return md


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    sizing = QUICK if args.quick else FULL
    seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1")).split(",")]
    settings = (args.settings or ("sst2-a1.0" if args.quick else ",".join(SETTINGS))).split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.quick and not _has_shared_data(args.overrides):
        SETTINGS[settings[0]] = {**SETTINGS[settings[0]], "dataset": str(toy_dataset(out / "toy.jsonl"))}
        print("no shared/data found: the quick run uses a generated toy sentiment file", file=sys.stderr)
    t0, key = time.time(), sizing_key(sizing, args.overrides)
    runs, central = _load_progress(out, args.resume or args.report_only, key)
    done = {(r["setting"], r["strategy"], r["seed"]) for r in runs}
    for name in settings:
        if args.report_only:
            continue
        if name not in central:
            central[name] = centralized(
                sim_config(SETTINGS[name], "fedavg-lora", seeds[0], sizing, out, args.overrides)
            )
            (out / "centralized.json").write_text(json.dumps({**central, "sizing_key": key}, indent=2, default=str))
        print(f"[{name}] centralized: {central[name]}", file=sys.stderr, flush=True)
        for seed in seeds:
            for strategy in args.strategies.split(","):
                if (name, strategy, seed) in done:
                    continue
                run = {
                    **_slim(_run_one(name, SETTINGS[name], strategy, seed, sizing, out, args.overrides)),
                    "sizing_key": key,
                }
                with open(out / "runs.jsonl", "a") as fh:
                    fh.write(json.dumps(run, default=str) + "\n")
                runs.append(run)
        _write_outputs(out, args, argv, sizing, settings, seeds, runs, central, t0)
    md = _write_outputs(out, args, argv, sizing, settings, seeds, runs, central, t0)
    print(md)
    print(
        f"{len(runs)} federated runs in {time.time() - t0:.0f} s; wrote {out}/accuracy.json, accuracy.md",
        file=sys.stderr,
    )
    from simulate import update_results_md

    update_results_md(out)
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Selection runs on the tuning half: the pre-registered checks of benchmarks/results/sweep/notes.md.

    fedhft bench select --log benchmarks/results/sweep/selection-NAME.jsonl --settings a,b
                        --strategies s1,s2 --lrs 0.01 [--tag T] [--options JSON] [--quick] [key=value ...]

Each (setting, strategy, lr) is one federated run like the sweep's (the in-process engine, the sweep's sizing
with the ``key=value`` overrides), at the sweep's tuning seed on the ``tune`` half of the training file. The
clients, shards and test set of the sweep's reported runs take no part, so a rule decided on these rows is
never tuned on what the sweep reports. Strategies are the sweep's strategies and FedHFT variants; ``--options``
adds strategy options, and ``--tag`` names the rows (``<strategy>-<tag>``) so that a log keeps a check's arms
apart. Each row is appended to ``--log`` as one line; a row already there with the same setting, name, lr,
sizing and options is not run again, so a stopped check resumes and two processes on disjoint settings can
share a log. Prints the table the notes quote.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from benchmarks.sweep import (
    FULL,
    QUICK,
    SETTING_SIZING,
    SETTINGS,
    STRATEGIES,
    TUNE_SEED,
    VARIANTS,
    append_line,
    define_settings,
    definition,
    definition_field,
    forget_definitions,
    parse_definitions,
    run_key,
    run_one,
    setting_override_problems,
    sim_config,
    sizing_overrides,
)

#: The headline metrics of the table, as (headline key, column).
COLUMNS = (
    ("personalized_acc_after", "personalized after"),
    ("personalized_acc_before", "before"),
    ("personalized_bal_acc_after", "balanced after"),
    ("personalized_worst10_acc_after", "worst 10%"),
    ("global_accuracy", "global"),
)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="fedhft bench select", description=__doc__.split("\n\n")[0])
    p.add_argument("--log", required=True, help="the JSON-lines file the rows are appended to (and read back)")
    p.add_argument("--settings", required=True, help=f"comma list of {list(SETTINGS)}")
    p.add_argument("--strategies", required=True, help="comma list of the sweep's strategies and FedHFT variants")
    p.add_argument("--lrs", required=True, help="comma list of learning rates, each run for every strategy")
    p.add_argument("--tag", default="", help="row names become <strategy>-<tag> (e.g. epochs2x32)")
    p.add_argument(
        "--define",
        default=None,
        help="more settings, as a JSON object of name -> {dataset, partition, alpha, ...} (see fedhft bench sweep)",
    )
    p.add_argument("--options", default="{}", help="strategy options as a JSON object, e.g. '{\"num_clusters\": 1}'")
    p.add_argument("--quick", action="store_true", help="CI mode: the sweep's quick sizing (tiny model)")
    p.add_argument("overrides", nargs="*", help="SimConfig key=value for every run (sizing keys join each row)")
    return p.parse_args(argv)


def row_name(strategy: str, tag: str) -> str:
    return f"{strategy}-{tag}" if tag else strategy


def same_row(row: dict, setting: str, name: str, lr: float, sizing: str, options: str) -> bool:
    """Whether a logged row is this run: key, sizing and options (a failed row is run again)."""
    return (
        row.get("status") != "failed"
        and (row.get("setting"), row.get("strategy"), row.get("lr")) == (setting, name, lr)
        and row.get("sizing") == sizing
        and json.dumps(row.get("options") or {}, sort_keys=True) == options
        and row.get("setting_def") == definition(setting)
    )


def run_sizing(base: dict, setting: str, overrides: list[str]) -> dict:
    """The sizing a run of ``setting`` has: the base, the setting's own, then the overrides of sizing keys."""
    return {**base, **SETTING_SIZING.get(setting, {}), **sizing_overrides(overrides, base)}


def select(args: argparse.Namespace, options: dict, say=print) -> list[dict]:
    """Run what the log lacks; return this command's rows (logged before, or run now), in order."""
    log, base = Path(args.log), QUICK if args.quick else FULL
    logged = [json.loads(x) for x in log.read_text().splitlines() if x.strip()] if log.exists() else []
    options_key, rows = json.dumps(options, sort_keys=True), []
    for setting in args.settings.split(","):
        sizing = run_sizing(base, setting, args.overrides)
        sizing_key = json.dumps(sizing, sort_keys=True)
        for strategy in args.strategies.split(","):
            name = row_name(strategy, args.tag)
            for lr in (float(x) for x in args.lrs.split(",")):
                have = next((r for r in logged if same_row(r, setting, name, lr, sizing_key, options_key)), None)
                if have is None:
                    have = _run(args, setting, strategy, name, lr, sizing, options, log)
                    say(f"[{setting}] {name} lr {lr:g}: {have['status']}, {have['wall_s']:.0f} s")
                rows.append(have)
    return rows


def run_config(args, setting: str, strategy: str, lr: float, sizing: dict, options: dict, run_dir: Path):
    """The run's SimConfig on the tuning half (``options`` are added to a variant's own)."""
    extra = {"strategy_options": options} if options else {}
    return sim_config(
        SETTINGS[setting], strategy, TUNE_SEED, lr, sizing, run_dir, args.overrides, train_pool="tune", **extra
    )


def _run(args, setting: str, strategy: str, name: str, lr: float, sizing: dict, options: dict, log: Path) -> dict:
    run_dir = log.parent / "runs" / "select" / log.stem / f"{setting}-{name}-lr{lr:g}"  # two logs never share one
    cfg = run_config(args, setting, strategy, lr, sizing, options, run_dir)
    row = {
        **run_one(run_key("select", setting, name, TUNE_SEED, lr), cfg),
        "sizing": json.dumps(sizing, sort_keys=True),
        "options": options,
        **definition_field(setting),
    }
    log.parent.mkdir(parents=True, exist_ok=True)
    append_line(log, json.dumps(row, default=str))
    return row


def table(rows: list[dict]) -> str:
    """Final values of each row's headline metrics, and its run time."""
    lines = [
        "| setting | name | lr | " + " | ".join(label for _, label in COLUMNS) + " | run s |",
        "|---" * (len(COLUMNS) + 4) + "|",
    ]
    for r in rows:
        head = r.get("headline") or {}
        cells = [(head.get(key) or {}).get("final") for key, _ in COLUMNS]
        shown = " | ".join("-" if v is None else f"{v:.3f}" for v in cells)
        lines.append(f"| {r['setting']} | {r['strategy']} | {r['lr']:g} | {shown} | {r.get('wall_s') or 0:.0f} |")
    return "\n".join(lines)


def check(args: argparse.Namespace) -> tuple[dict, list[str]]:
    """The strategy options and every problem with the arguments and the runs they make, found before
    any run (each run's config goes through the simulation's own preflight)."""
    defs, problems = parse_definitions(args.define)
    define_settings(defs)
    problems += setting_override_problems(args.overrides)
    settings, strategies = args.settings.split(","), args.strategies.split(",")
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        problems.append(f"unknown settings {unknown}: use some of {list(SETTINGS)} (--define adds one)")
    unknown = sorted(set(strategies) - set(STRATEGIES) - set(VARIANTS))
    if unknown:
        problems.append(f"unknown strategies {unknown}: use some of {[*STRATEGIES, *VARIANTS]}")
    try:
        lrs = [float(x) for x in args.lrs.split(",")]
    except ValueError:
        problems.append(f"--lrs {args.lrs!r}: give numbers, comma-separated, e.g. 0.003,0.01")
    try:
        options = json.loads(args.options)
    except ValueError:
        options = None
    if not isinstance(options, dict):
        problems.append(f"--options {args.options!r}: give a JSON object, e.g. '{{\"num_clusters\": 1}}'")
        options = {}
    if problems:
        return options, problems
    return options, _run_problems(args, settings, strategies, lrs[0], options)


def _run_problems(args, settings: list[str], strategies: list[str], lr: float, options: dict) -> list[str]:
    """Every problem the preflight finds in any (setting, strategy) run, each named once."""
    from fedhft.config import ConfigError
    from simulate import preflight

    found: list[str] = []
    base = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory() as empty:
        for setting in settings:
            for strategy in strategies:
                try:
                    sizing = run_sizing(base, setting, args.overrides)
                    preflight(run_config(args, setting, strategy, lr, sizing, options, Path(empty)), Path(empty))
                except ConfigError as exc:
                    found += [p for p in exc.errors if p not in found]
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        return _select(args)
    finally:
        forget_definitions()


def _select(args) -> int:
    options, problems = check(args)
    if problems:
        print("fedhft bench select: " + "; ".join(problems), file=sys.stderr)
        return 2
    rows = select(args, options, say=lambda m: print(m, file=sys.stderr, flush=True))
    print(table(rows))
    return 1 if any(r["status"] != "completed" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

"""``fedhft simulate [--config FILE] [--broker URL] [--out RUN_DIR] [key=value ...]``."""
from __future__ import annotations

import argparse
import sys

_OPTIONS = ("--config", "--broker", "--out")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "simulate", help="run a real federated simulation on this machine (broker + server + edge processes)",
        description="Start a broker, the fedhft server and one fedhft edge process per client, run the rounds, "
                    "evaluate the global model each round and write results.json, report.md and plots. "
                    "With no arguments: MiniLM on Rotten Tomatoes, 12 clients over 3 tiers, 5 rounds.")
    p.add_argument("--config", help="YAML file of simulation settings (see --help-config)")
    p.add_argument("--broker", help="auto, mosquitto, embedded or mqtt://HOST:PORT (same as broker=...)")
    p.add_argument("--out", help="run directory (same as out=...)")
    p.add_argument("--help-config", action="store_true", help="list every setting with its default and help")
    # REMAINDER, then split by hand: argparse rejects key=value that come after an option that follows
    # other key=values (``clients=4 --out X rounds=2``), an easy trap on a command line.
    p.add_argument("overrides", nargs=argparse.REMAINDER,
                   help="settings as key=value, e.g. clients=4 rounds=3 strategy=hetlora")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from fedhft.config import ConfigError, describe
    from fedhft.simulate._config import SimConfig, load_sim_config

    try:
        overrides = _split_options(args, list(args.overrides))
    except ValueError as exc:
        print(f"fedhft simulate: {exc}", file=sys.stderr)
        return 2
    if args.help_config:
        print(describe(SimConfig))
        return 0
    overrides += [f"broker={args.broker}"] if args.broker else []
    overrides += [f"out={args.out}"] if args.out else []
    try:
        cfg = load_sim_config(args.config, overrides)
    except ConfigError as exc:
        print(f"fedhft simulate: {exc}", file=sys.stderr)
        return 2
    return _simulate(cfg)


def _split_options(args, items: list[str]) -> list[str]:
    """Take --config/--broker/--out (and --help-config) out of the key=value list onto ``args``."""
    rest, i = [], 0
    while i < len(items):
        item = items[i]
        name, eq, value = item.partition("=")
        if name in _OPTIONS:
            if not eq:
                if i + 1 >= len(items):
                    raise ValueError(f"{name} needs a value, e.g. {name} VALUE")
                value, i = items[i + 1], i + 1
            setattr(args, name[2:], value)
        elif item == "--help-config":
            args.help_config = True
        elif item.startswith("-"):
            raise ValueError(f"unknown option {item!r}: use --config, --broker, --out, or settings as key=value")
        else:
            rest.append(item)
        i += 1
    return rest


def _simulate(cfg) -> int:
    from fedhft.simulate._datasets import DatasetError
    from fedhft.simulate._fleet import SimulationError
    from fedhft.simulate._partition import PartitionError
    from fedhft.simulate._run import run_simulation

    try:
        result = run_simulation(cfg, say=lambda m: print(m, file=sys.stderr, flush=True))
    except (DatasetError, PartitionError, SimulationError) as exc:
        print(f"fedhft simulate: {exc}", file=sys.stderr)
        return 2
    acc = " ".join("-" if a is None else f"{a:.3f}" for a in result.accuracies)
    print(f"run dir: {result.run_dir}\naccuracy per round: {acc}\nwall time: {result.wall_s:.0f} s")
    if not result.ok:
        print(f"fedhft simulate: FAILED: {result.error}", file=sys.stderr)
        return 1
    return 0

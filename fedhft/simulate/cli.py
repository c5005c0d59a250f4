"""``fedhft simulate [--config FILE] [--broker URL] [--out RUN_DIR] [key=value ...]``."""
from __future__ import annotations

import argparse
import sys

_OPTIONS = ("--config", "--broker", "--out")

DESCRIPTION = """\
Start a broker, the fedhft server and one fedhft edge process per client, run the rounds,
evaluate the global model each round and write results.json, report.md and plots.
With no arguments: MiniLM on Rotten Tomatoes, 12 clients over 3 tiers, 5 rounds.

Every setting is checked before anything starts (strategy and its options, tiers, backends,
dataset, model, output folder); a bad one is reported with the others and creates no folder."""

EPILOG = """\
run status (results.json "status", report.md, and a summary on stderr):
  completed    every round committed and every selected client stored an update in each
  degraded     every round committed, but some client-round stored nothing (the device
               reported an error or skipped, its update was rejected, or it was dropped);
               the summary counts them by reason and tier
  failed       rounds are missing, or a process, the broker or the export failed
  interrupted  stopped by Ctrl-C or SIGTERM (every process is stopped)

exit codes:
  0    completed
  1    degraded or failed
  2    bad settings or input: nothing was started and no run folder was created
  130  interrupted"""



def register(subparsers) -> None:
    p = subparsers.add_parser(
        "simulate", help="run a real federated simulation on this machine (broker + server + edge processes)",
        formatter_class=argparse.RawDescriptionHelpFormatter, description=DESCRIPTION, epilog=EPILOG)
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
    from fedhft.config import ConfigError
    from fedhft.simulate._datasets import DatasetError
    from fedhft.simulate._fleet import SimulationError
    from fedhft.simulate._partition import PartitionError
    from fedhft.simulate._run import run_simulation

    try:
        result = run_simulation(cfg, say=lambda m: print(m, file=sys.stderr, flush=True))
    except (ConfigError, DatasetError, PartitionError, SimulationError) as exc:
        print(f"fedhft simulate: {exc}", file=sys.stderr)
        return 2
    acc = " ".join("-" if a is None else f"{a:.3f}" for a in result.accuracies)
    print(f"run dir: {result.run_dir}\naccuracy per round: {acc}\nwall time: {result.wall_s:.0f} s\n"
          f"status: {result.status.value}", flush=True)
    if result.verdict is not None:
        print(f"fedhft simulate: {result.verdict.summary(result.run_dir)}", file=sys.stderr)
    if result.error and (result.verdict is None or result.error not in result.verdict.headline()):
        print(f"fedhft simulate: {result.status.value.upper()}: {result.error}", file=sys.stderr)
    return result.status.exit_code

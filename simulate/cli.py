"""``fedhft simulate [--config FILE] [--help-config] [key=value ...]`` (the rule: fedhft/cli_settings.py)."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
Start a broker, the fedhft server and one fedhft edge process per client, run the rounds,
evaluate the global model each round and write results.json, report.md and plots.
With no arguments: MiniLM on Rotten Tomatoes, 12 clients over 3 tiers, 5 rounds.

engine=inprocess (for experiments): the same strategy, update validation and edge training
code with no broker and no processes: every client trains in this process, one after another,
memory budgets off. Much faster; same outputs. engine=mqtt (the default) is the real system.

Every setting is checked before anything starts (strategy and its options, tiers, backends,
dataset, model, output folder); a bad one is reported with the others and creates no folder."""

EPILOG = """\
run status (results.json "status", report.md, and a summary on stderr):
  completed    every round committed and every selected client stored an update in each
  degraded     every round committed, but some client-round stored nothing (the device
               reported an error or skipped, its update was rejected, or it was dropped);
               the summary counts them by reason and tier
  failed       rounds are missing, or a process, the broker or the export failed
  interrupted  stopped by Ctrl-C or SIGTERM (every process is stopped; the rounds
               committed so far are reported)

exit codes:
  0    completed
  1    degraded or failed
  2    bad settings or input: nothing was started and no run folder was created
  130  interrupted"""


def register(subparsers) -> None:
    from fedhft.cli_settings import add_settings_parser

    p = add_settings_parser(
        subparsers,
        "simulate",
        help="run a federated simulation on this machine (broker + server + edge processes, or engine=inprocess)",
        config_help="YAML file of simulation settings; key=value words override it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    p.set_defaults(func=_run)


def _run(args) -> int:
    from fedhft.cli_settings import settings_overrides
    from fedhft.config import ConfigError, describe
    from simulate._config import SimConfig, load_sim_config

    if args.help_config:
        print(describe(SimConfig))
        return 0
    try:
        cfg = load_sim_config(args.config, settings_overrides(args.settings, SimConfig, args.config))
    except ConfigError as exc:
        print(f"fedhft simulate: {exc}", file=sys.stderr)
        return 2
    return _simulate(cfg)


def _simulate(cfg) -> int:
    from fedhft.config import ConfigError
    from simulate._datasets import DatasetError
    from simulate._fleet import SimulationError
    from simulate._partition import PartitionError
    from simulate._run import run_simulation

    try:
        result = run_simulation(cfg, say=lambda m: print(m, file=sys.stderr, flush=True))
    except (ConfigError, DatasetError, PartitionError, SimulationError) as exc:
        print(f"fedhft simulate: {exc}", file=sys.stderr)
        return 2
    acc = " ".join("-" if a is None else f"{a:.3f}" for a in result.accuracies)
    print(
        f"run dir: {result.run_dir}\naccuracy per round: {acc}\nwall time: {result.wall_s:.0f} s\n"
        f"status: {result.status.value}",
        flush=True,
    )
    if result.verdict is not None:
        print(f"fedhft simulate: {result.verdict.summary(result.run_dir)}", file=sys.stderr)
    if result.error and (result.verdict is None or result.error not in result.verdict.headline()):
        print(f"fedhft simulate: {result.status.value.upper()}: {result.error}", file=sys.stderr)
    return result.status.exit_code

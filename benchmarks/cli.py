"""`fedhft bench NAME [args...]`: run one benchmark module's main(argv)."""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {
    "device": "benchmarks.device_step",
    "server": "benchmarks.server_scale",
    "planner": "benchmarks.planner_check",
    "accuracy": "benchmarks.accuracy",
    "personalization": "benchmarks.personalization",
    "comm": "benchmarks.comm",
    "reliability": "benchmarks.reliability",
    "engines": "benchmarks.engines",
    "sweep": "benchmarks.sweep",
    "select": "benchmarks.select",
    "clusters": "benchmarks.clusters",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="run a benchmark (tables, JSON, plots)", description="Benchmarks: " + ", ".join(BENCHMARKS)
    )
    p.add_argument("name", choices=sorted(BENCHMARKS))
    p.add_argument("args", nargs=argparse.REMAINDER, help="passed to the benchmark (try NAME --help)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    return importlib.import_module(BENCHMARKS[args.name]).main(args.args)

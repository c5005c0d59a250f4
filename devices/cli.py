"""``fedhft devices list | show TIER | profile [--json]``: parse arguments, call one library function, print."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from devices._catalog import get_tier, load_catalog
from devices._profiler import profile_report


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``devices`` command (and its sub-commands) to the top-level CLI's subparsers."""
    parser = subparsers.add_parser("devices", help="device tiers and this device's profile")
    sub = parser.add_subparsers(dest="devices_command", metavar="{list,show,profile}", required=True)
    p = sub.add_parser("list", help="list the device tiers")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("show", help="show one tier's budgets and AdapterPlan")
    p.add_argument("tier", help="tier name, e.g. android-mid (see `fedhft devices list`)")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("profile", help="measure this device and recommend a tier")
    p.add_argument(
        "--json",
        action="store_true",
        help="print JSON: {profile: the hello message's payload, recommended_tier, no_tier_reason}",
    )
    p.add_argument("--full", action="store_true", help="longer matmul benchmark (~0.8 s instead of ~0.25 s)")
    p.set_defaults(func=cmd_profile)
    return parser


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned text columns, right-aligned numbers, two spaces apart."""
    cells = [[str(c) for c in header]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    numeric = [all(isinstance(row[i], (int, float)) for row in rows) and bool(rows) for i in range(len(header))]
    lines = [
        "  ".join(c.rjust(w) if numeric[i] else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
        for r in cells
    ]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return "-" if value is None else str(value)


def cmd_list(args: argparse.Namespace) -> int:
    rows = [
        (
            t.name,
            t.default_backend,
            t.memory_budget_mb,
            t.compute_gflops,
            t.battery_threshold,
            t.plan.depth,
            list(t.plan.ranks),
            t.plan.mask_density,
            t.plan.precision,
            f"{t.plan.batch_size}x{t.plan.max_seq_len}",
        )
        for t in load_catalog().values()
    ]
    header = (
        "tier",
        "backend",
        "memory MB",
        "GFLOP/s",
        "battery %",
        "depth",
        "ranks",
        "density",
        "precision",
        "batch x seq",
    )
    print(format_table(header, rows))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    try:
        tier = get_tier(args.tier)
    except ValueError as exc:
        print(f"fedhft devices: {exc}", file=sys.stderr)
        return 2
    rows = [(k, v) for k, v in tier.to_dict().items() if k != "plan"]
    rows += [(f"plan.{k}", v) for k, v in tier.plan.to_dict().items()]
    print(format_table(("field", "value"), rows))
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    report = profile_report(quick=not args.full)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    tier = report["recommended_tier"] or f"none ({report['no_tier_reason']})"
    rows = list(report["profile"].items()) + [("recommended tier", tier)]
    print(format_table(("field", "value"), rows))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry (``python -m devices.cli``) for when the fedhft CLI is not installed."""
    parser = argparse.ArgumentParser(prog="devices")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

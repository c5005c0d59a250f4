"""`fedhft export ...` and `fedhft export verify DIR`: argument parsing only."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="compile masked-adapter training bundles per tier and backend",
        description="Compile training bundles: DIR/<tier>/<backend>/manifest.json and files.",
    )
    p.add_argument("--model", default="minilm", help="'minilm' (bundled), 'tiny[:hidden=64,...]' or a local HF dir")
    p.add_argument("--num-labels", type=int, default=2, help="classifier outputs")
    p.add_argument(
        "--tier",
        default="all",
        help="tier names from `fedhft devices list`, comma-separated (rpi5,android-mid), or all",
    )
    p.add_argument(
        "--backend",
        default="all",
        help="runtimes to compile for: torch, ort, executorch, comma-separated (torch,ort), or all",
    )
    p.add_argument("--out", default="bundles", help="output directory")
    p.set_defaults(func=_export)
    verbs = p.add_subparsers(dest="export_cmd", metavar="verify")
    v = verbs.add_parser("verify", help="train each bundle with its own runtime and compare with eager PyTorch")
    v.add_argument("dir", help="a bundle directory or a tree of them (the --out of `fedhft export`)")
    v.add_argument("--steps", type=int, default=5, help="optimizer steps on the fixed batch")
    v.add_argument("--json", action="store_true", help="print the reports as JSON")
    v.set_defaults(func=_verify)


def _export(args) -> int:
    from export._commands import export_command
    from fedhft.config import ConfigError

    try:
        return export_command(args.model, args.num_labels, args.tier, args.backend, args.out)
    except ConfigError as exc:
        print(f"fedhft export: {exc}", file=sys.stderr)
        return 2


def _verify(args) -> int:
    from export._commands import verify_command
    from fedhft.manifest import BundleError

    try:
        return verify_command(args.dir, args.steps, args.json)
    except BundleError as exc:
        print(f"fedhft export verify: {exc}", file=sys.stderr)
        return 2

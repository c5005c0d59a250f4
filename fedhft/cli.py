"""The one `fedhft` command. Each subcommand's parser lives in its package's cli.py and is
registered lazily so that `fedhft devices list` never imports torch, paho or onnxruntime."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# subcommand -> module that defines register(subparsers)
SUBCOMMANDS = {
    "devices": "devices.cli",
    "export": "export.cli",
    "edge": "edge_runtime.cli",
    "server": "server.cli",
    "simulate": "simulate.cli",
    "bench": "benchmarks.cli",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedhft", description="Federated fine-tuning on heterogeneous edge fleets.")
    parser.add_argument("--log-level", default=os.environ.get("FEDHFT_LOG", "INFO"), help="DEBUG, INFO, WARNING")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        if only and name != only:
            sub.add_parser(name, help=f"(see fedhft {name} --help)")
            continue
        try:
            importlib.import_module(module).register(sub)
        except ModuleNotFoundError as exc:
            if exc.name and module.startswith(exc.name):
                sub.add_parser(name, help=f"unavailable in this install ({module} missing)")
            else:
                raise
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(first if first in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        rc = int(func(args) or 0)
        sys.stdout.flush()  # inside the try: a reader that went away (`| head`) is seen here, not at exit
        return rc
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _reader_gone()


def _reader_gone() -> int:
    """The reader of stdout closed it (``fedhft ... | head -1``): no traceback, and stdout is pointed
    at /dev/null so that the interpreter's flush at exit cannot fail again. Exit 141 (128 + SIGPIPE),
    what the shell reports for a tool that a closed pipe stopped: the output was cut short."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a real file (a test's capture)
        pass
    return 141


if __name__ == "__main__":
    sys.exit(main())

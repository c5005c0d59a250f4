"""`fedhft edge`: run this device as a member of a fleet. Parses flags and calls ``run_agent``."""
from __future__ import annotations

import argparse
import sys
import typing

_TYPES = {"str": str, "int": int, "float": float}


def _flag_type(annotation) -> type:
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "str")
    return _TYPES.get(name.split("|")[0].strip(), str)


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``edge`` subcommand; its flags are generated from AgentConfig (defaults in one place)."""
    from edge_runtime._config import config_fields

    parser = subparsers.add_parser(
        "edge", help="run this device: join a fleet over MQTT and train the rounds it is given",
        description="Join a fedhft fleet over MQTT 5 (or 3.1.1: --mqtt-protocol 3.1.1), train each round's task "
                    "on the local data under the device's memory, battery and time budgets, and upload compact "
                    "masked updates. "
                    "Stops cleanly on SIGTERM/SIGINT; restart it with the same --state to resume.",
    )
    parser.add_argument("--config", default=None, help="YAML file of settings (the flags below are its keys)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set memory_budget_mb=256 (repeatable)")
    for name, annotation, default, help_text, _secret in config_fields():
        shown = f" (default: {default})" if default is not None else ""
        # SUPPRESS: only flags actually given override the YAML file and the dataclass defaults.
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=_flag_type(annotation),
                            default=argparse.SUPPRESS, help=help_text + shown)
    parser.set_defaults(func=main_from_args)
    return parser


def main_from_args(args: argparse.Namespace) -> int:
    from fedhft.config import ConfigError as SettingsError, load_config
    from edge_runtime._agent import ConfigError, run_agent
    from edge_runtime._config import AgentConfig, config_fields
    from edge_runtime._data import DataError

    flags = [f"{name}={getattr(args, name)}" for name, *_ in config_fields() if hasattr(args, name)]
    try:
        code = run_agent(load_config(AgentConfig, args.config, [*args.set, *flags]))
    except (ConfigError, SettingsError, DataError) as exc:
        print(f"fedhft edge: {exc}", file=sys.stderr)
        return 2
    _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """Leave the process as soon as the agent has stopped and persisted its state.

    The ExecuTorch runtime's native destructors can hang interpreter teardown after a clean
    SIGTERM shutdown (seen: "stopped" logged, the process still alive 15 s later), which a service
    manager would then have to SIGKILL. Everything the agent owes is on disk by now.
    """
    import logging
    import os

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(code or 0))


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m edge_runtime``); ``fedhft edge`` is the documented one."""
    parser = argparse.ArgumentParser(prog="fedhft")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["edge", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args) or 0)


__all__ = ["register", "main"]
_ = typing  # annotations of AgentConfig are strings (from __future__), parsed by _flag_type

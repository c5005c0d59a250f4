"""`fedhft edge [--config FILE] [--help-config] key=value ...`: run this device as a member of a fleet.
Every setting is an AgentConfig field, given as key=value (the rule: fedhft/cli_settings.py)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``edge`` subcommand; its settings are AgentConfig's fields (defaults in one place)."""
    from fedhft.cli_settings import add_settings_parser

    parser = add_settings_parser(
        subparsers,
        "edge",
        help="run this device: join a fleet over MQTT and train the rounds it is given",
        description="Join a fedhft fleet over MQTT 5 (or 3.1.1: mqtt_protocol=3.1.1), train each round's task "
        "on the local data under the device's memory, battery and time budgets, and upload compact "
        "masked updates. "
        "Stops cleanly on SIGTERM/SIGINT; restart it with the same state=DIR to resume. "
        "Example: fedhft edge credentials=fleet/clients/dev-000.json broker=mqtt://HOST:PORT "
        "data=my.tsv state=edge-state",
        config_help="YAML file of edge settings (the keys of --help-config); key=value words override it",
    )
    parser.set_defaults(func=main_from_args)
    return parser


def main_from_args(args: argparse.Namespace) -> int:
    from fedhft.cli_settings import settings_overrides
    from fedhft.config import ConfigError as SettingsError, describe, load_config
    from edge_runtime._agent import ConfigError, run_agent
    from edge_runtime._config import AgentConfig
    from edge_runtime._data import DataError

    if args.help_config:
        print(describe(AgentConfig))
        return 0
    try:
        overrides = settings_overrides(args.settings, AgentConfig, args.config)
        code = run_agent(load_config(AgentConfig, args.config, overrides))
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

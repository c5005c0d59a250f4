"""``fedhft server``: run the coordinator, create a fleet, or show a run's status.

    fedhft server [run] --broker mqtt://HOST:PORT --state DIR [--config server.yaml]
                  [--credentials server.json | --username U --password P | --insecure] [key=value ...]
    fedhft server --help-config
    fedhft server fleet-init --clients N --out DIR [--tls] [--max-packet-size BYTES]
    fedhft server status --state DIR [--json]

Settings of the run (ServerConfig: strategy=, rounds=, mqtt_protocol=, ...) are key=value words;
the options say where to connect and keep state (the rule: fedhft/cli_settings.py). Each subcommand
parses its arguments and calls one library function.
"""

from __future__ import annotations

import argparse
import json
import sys

from fedhft.mqtt import DEFAULT_MAX_PACKET_SIZE


def register(subparsers) -> None:
    from fedhft.cli_settings import add_settings_parser

    p = add_settings_parser(
        subparsers,
        "server",
        help="run the federated server (and fleet-init, status)",
        description="Run the fedhft server: rounds, update intake, aggregation, durable state. "
        "Settings (strategy=, rounds=, mqtt_protocol=, ...: see --help-config) "
        "are key=value words after the options.",
        config_help="server YAML (ServerConfig keys; see --help-config); key=value words override it",
    )
    p.run_word = "run"
    p.add_argument("--broker", help="broker URL, mqtt://HOST:PORT or mqtts://HOST:PORT")
    p.add_argument("--state", help="state dir (SQLite + adapter states); reuse it to resume after a crash")
    p.add_argument("--credentials", help="server.json written by `fedhft server fleet-init`")
    p.add_argument("--username", help="broker username (with --password), instead of --credentials")
    p.add_argument("--password", help="broker password for --username")
    p.add_argument("--insecure", action="store_true", help="connect without credentials (test brokers only)")
    p.set_defaults(func=_run)
    # The subcommands parse their own plain options (a settings parser would take them as settings).
    sub = p.add_subparsers(
        dest="server_command", metavar="{run,fleet-init,status}", parser_class=argparse.ArgumentParser
    )
    sub.add_parser("run", help="run the server (the default: the same as giving no subcommand)")

    fi = sub.add_parser("fleet-init", help="write broker config, users, ACL and credentials for a fleet")
    fi.add_argument("--clients", type=int, required=True, help="number of devices")
    fi.add_argument("--out", required=True, help="folder to create")
    fi.add_argument("--fleet", default="default", help="fleet name (topic prefix)")
    fi.add_argument("--tls", action="store_true", help="also make a CA, server and device certificates")
    fi.add_argument(
        "--max-packet-size", type=int, default=DEFAULT_MAX_PACKET_SIZE, help="broker max_packet_size in bytes"
    )
    fi.add_argument("--port", type=int, default=None, help="fixed broker port (default: a free one at launch)")
    fi.set_defaults(func=_fleet_init)

    st = sub.add_parser("status", help="print rounds, clients by tier and state, last metrics of a state dir")
    st.add_argument("--state", required=True, help="the server's state dir")
    st.add_argument("--json", action="store_true", help="print JSON instead of text")
    st.set_defaults(func=_status)


def _run(args) -> int:
    from fedhft.cli_settings import settings_overrides
    from fedhft.config import ConfigError
    from server._config import ServerConfig, ServerConfigError, config_help
    from server._run import run_from_args

    if args.help_config:
        print(config_help())
        return 0
    problems = [
        f"--{n} is required (e.g. --broker mqtt://127.0.0.1:1883 --state run/)"
        for n in ("broker", "state")
        if not getattr(args, n)
    ]
    try:
        overrides = settings_overrides(args.settings, ServerConfig, args.config)
    except ConfigError as exc:
        problems += exc.errors
    if problems:
        print(f"fedhft server: {ConfigError(problems, 'the command line')}", file=sys.stderr)
        return 2
    try:
        return run_from_args(
            args.broker,
            args.state,
            args.config,
            overrides,
            credentials=args.credentials,
            username=args.username,
            password=args.password,
            insecure=args.insecure,
        )
    except (ServerConfigError, ValueError, ConnectionError) as exc:
        print(f"fedhft server: {exc}", file=sys.stderr)
        return 2


def _fleet_init(args) -> int:
    from server.broker import FleetConfigError, fleet_init

    try:
        fleet = fleet_init(
            args.out, args.clients, fleet=args.fleet, max_packet_size=args.max_packet_size, tls=args.tls, port=args.port
        )
    except FleetConfigError as exc:
        print(f"fedhft server fleet-init: {exc}", file=sys.stderr)
        return 2
    print(
        f"fleet {fleet.fleet!r}: {len(fleet.devices)} devices, broker config {fleet.dir / 'mosquitto.conf'}, "
        f"server credentials {fleet.dir / 'server.json'}"
    )
    return 0


def _status(args) -> int:
    from server._metrics import format_status, server_status
    from server._store import StoreError

    try:
        status = server_status(args.state)
    except StoreError as exc:
        print(f"fedhft server status: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(status, indent=2, sort_keys=True) if args.json else format_status(status))
    return 0

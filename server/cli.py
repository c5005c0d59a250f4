"""``fedhft server``: run the coordinator, create a fleet, or show a run's status.

    fedhft server --broker mqtt://HOST:PORT --state DIR --config server.yaml [--strategy NAME]
                  [--mqtt-protocol 5|3.1.1] [--credentials server.json | --username U --password P]
                  [--insecure] [key=value ...]
    fedhft server fleet-init --clients N --out DIR [--tls] [--max-packet-size BYTES]
    fedhft server status --state DIR [--json]

Each subcommand parses its arguments and calls one library function.
"""
from __future__ import annotations

import argparse
import json
import sys


class _Subcommands(dict):
    """The subcommand map, which also admits a ``key=value`` first word: argparse checks the first
    positional against ``choices`` BEFORE the action runs, so the action alone cannot reroute it."""

    def __contains__(self, word) -> bool:
        return dict.__contains__(self, word) or (isinstance(word, str) and "=" in word)


class _RunByDefault(argparse._SubParsersAction):
    """``fedhft server [opts] key=value ...``: positionals that are not a subcommand name are the
    run's key=value overrides (argparse alone would reject them as unknown subcommands)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._name_parser_map = self.choices = _Subcommands()

    def __call__(self, parser, namespace, values, option_string=None):
        if values and not dict.__contains__(self._name_parser_map, values[0]):
            values = ["run", *values]
        super().__call__(parser, namespace, values, option_string)


def register(subparsers) -> None:
    p = subparsers.add_parser("server", help="run the federated server (and fleet-init, status)",
                              description="Run the fedhft server: rounds, update intake, aggregation, durable state.")
    p.add_argument("--broker", help="broker URL, mqtt://HOST:PORT or mqtts://HOST:PORT")
    p.add_argument("--state", help="state dir (SQLite + adapter states); reuse it to resume after a crash")
    p.add_argument("--config", help="server YAML (see `fedhft server run --help-config`)")
    p.add_argument("--strategy", help="strategy name (overrides the config's)")
    p.add_argument("--mqtt-protocol", metavar="5|3.1.1",
                   help="MQTT protocol version (overrides the config's mqtt_protocol; default 5): 3.1.1 for a "
                        "broker without MQTT 5, such as the embedded amqtt broker")
    p.add_argument("--credentials", help="server.json written by `fedhft server fleet-init`")
    p.add_argument("--username")
    p.add_argument("--password")
    p.add_argument("--insecure", action="store_true", help="connect without credentials (test brokers only)")
    p.set_defaults(func=_run, overrides=[])
    p.register("action", "run_by_default", _RunByDefault)
    sub = p.add_subparsers(dest="server_command", metavar="[fleet-init|status|key=value ...]",
                           action="run_by_default")
    run = sub.add_parser("run", help="run the server (default; the same as giving no subcommand)")
    run.add_argument("overrides", nargs="*", help="config overrides, key=value (e.g. rounds=5 quorum=0.8)")
    run.add_argument("--help-config", action="store_true", help="list every config key with its default and help")
    run.set_defaults(func=_run)

    fi = sub.add_parser("fleet-init", help="write broker config, users, ACL and credentials for a fleet")
    fi.add_argument("--clients", type=int, required=True, help="number of devices")
    fi.add_argument("--out", required=True, help="folder to create")
    fi.add_argument("--fleet", default="default", help="fleet name (topic prefix)")
    fi.add_argument("--tls", action="store_true", help="also make a CA, server and device certificates")
    fi.add_argument("--max-packet-size", type=int, default=1_048_576, help="broker max_packet_size in bytes")
    fi.add_argument("--port", type=int, default=None, help="fixed broker port (default: a free one at launch)")
    fi.set_defaults(func=_fleet_init)

    st = sub.add_parser("status", help="print rounds, clients by tier and state, last metrics of a state dir")
    st.add_argument("--state", required=True, help="the server's state dir")
    st.add_argument("--json", action="store_true", help="print JSON instead of text")
    st.set_defaults(func=_status)


def _run(args) -> int:
    from server._config import ServerConfigError, config_help
    from server._run import run_from_args

    if getattr(args, "help_config", False):
        print(config_help())
        return 0
    missing = [f"--{n}" for n in ("broker", "state") if not getattr(args, n)]
    if missing:
        print(f"fedhft server: {' and '.join(missing)} required (e.g. --broker mqtt://127.0.0.1:1883 --state run/)",
              file=sys.stderr)
        return 2
    overrides = list(args.overrides) + ([f"strategy={args.strategy}"] if args.strategy else [])
    overrides += [f"mqtt_protocol={args.mqtt_protocol}"] if args.mqtt_protocol else []
    try:
        return run_from_args(args.broker, args.state, args.config, overrides, credentials=args.credentials,
                             username=args.username, password=args.password, insecure=args.insecure)
    except (ServerConfigError, ValueError, ConnectionError) as exc:
        print(f"fedhft server: {exc}", file=sys.stderr)
        return 2


def _fleet_init(args) -> int:
    from fedhft.broker import fleet_init

    fleet = fleet_init(args.out, args.clients, fleet=args.fleet, max_packet_size=args.max_packet_size,
                       tls=args.tls, port=args.port)
    print(f"fleet {fleet.fleet!r}: {len(fleet.devices)} devices, broker config {fleet.dir / 'mosquitto.conf'}, "
          f"server credentials {fleet.dir / 'server.json'}")
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

"""The federated fleet of a simulation: broker, the `fedhft server` process, `fedhft edge` processes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from simulate._config import SimConfig
from simulate._procs import Child, Children, fedhft_command, repo_env

FLEET = "sim"


class SimulationError(RuntimeError):
    """The simulation could not run or finish; the message says what failed and what to do."""


@dataclass
class BrokerHandle:
    url: str
    kind: str  # mosquitto | embedded | external
    broker: object | None  # the launcher (None for an external broker)
    fleet: object  # FleetConfig
    mqtt_protocol: str = "5"  # what the server and devices speak on it: "5" or "3.1.1" (embedded amqtt)

    def stop(self) -> None:
        if self.broker is not None:
            self.broker.stop()

    def log_tail(self) -> str:
        tail = getattr(self.broker, "log_tail", None)
        return tail() if tail else ""


def start_fleet_broker(cfg: SimConfig, client_ids: list[str], fleet_dir: Path, say=print) -> BrokerHandle:
    """Fleet users + ACL (fleet_init) and a broker that enforces them, per ``cfg.broker``."""
    from server.broker import find_mosquitto, fleet_init, load_fleet, parse_broker_url, start_broker

    if cfg.broker.startswith(("mqtt://", "mqtts://")):
        parse_broker_url(cfg.broker)  # a clear error for a malformed URL
        fleet = load_fleet(cfg.fleet_dir)
        missing = sorted(set(client_ids) - set(fleet.devices))
        if missing:
            raise SimulationError(
                f"fleet {cfg.fleet_dir} lacks devices {missing[:5]}: create it with "
                f"`fedhft server fleet-init --clients {cfg.clients} --out DIR` (ids dev-000...)"
            )
        return BrokerHandle(cfg.broker, "external", None, fleet, cfg.protocol_for("external"))
    fleet = fleet_init(fleet_dir, client_ids, fleet=FLEET)
    prefer = cfg.broker
    if prefer == "auto" and find_mosquitto() is None:
        if cfg.mqtt_protocol == "5":
            raise SimulationError(
                "mqtt_protocol=5, but no mosquitto binary was found and the embedded amqtt broker "
                "speaks MQTT 3.1.1 only: use mqtt_protocol=auto, or install Mosquitto "
                "(apt-get install mosquitto / brew install mosquitto)"
            )
        say(
            "no mosquitto binary found: using the embedded amqtt broker (server and devices speak MQTT 3.1.1; "
            "see report)"
        )
    import logging

    for noisy in ("amqtt", "transitions"):  # the embedded broker logs every state change at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    broker = start_broker(fleet, prefer=prefer)
    protocol = cfg.protocol_for(broker.kind)
    say(f"broker: {broker.kind} at {broker.url} (MQTT {protocol})")
    return BrokerHandle(broker.url, broker.kind, broker, fleet, protocol)


def server_config(cfg: SimConfig, bundles_dir: Path, rounds: int, fleet: str = FLEET, mqtt_protocol: str = "5") -> dict:
    """The server YAML of this run (ServerConfig keys; see `fedhft server run --help-config`)."""
    return {
        "fleet": fleet,
        "bundles_dir": str(bundles_dir.resolve()),
        "strategy": cfg.strategy,
        "strategy_options": dict(cfg.strategy_options),
        "rounds": rounds,
        "clients_per_round": float(cfg.clients if cfg.clients_per_round is None else cfg.clients_per_round),
        # Every device must have joined before round 0: a round started with the first few
        # joiners would leave the others idle and make runs depend on start-up order.
        "min_clients": cfg.clients,
        "quorum": 1.0,
        "round_deadline_s": cfg.deadline_s,
        "start_grace_s": 0.0,
        "local_steps": cfg.local_steps,
        "local_epochs": cfg.local_epochs,
        "lr": cfg.lr,
        "lr_decay": cfg.lr_decay,
        "update_encoding": cfg.encoding,
        "warmup_rounds": cfg.warmup_rounds,
        "seed": cfg.seed,
        "mqtt_protocol": mqtt_protocol,
    }


def start_server(children: Children, cfg: SimConfig, broker: BrokerHandle, bundles_dir: Path, run_dir: Path) -> Child:
    conf = run_dir / "server.yaml"
    settings = server_config(cfg, bundles_dir, cfg.rounds, broker.fleet.fleet, broker.mqtt_protocol)
    conf.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    cmd = fedhft_command(
        "server",
        "--broker",
        broker.url,
        "--state",
        str(run_dir / "server"),
        "--config",
        str(conf),
        "--credentials",
        str(broker.fleet.dir / "server.json"),
    )
    return children.add(Child("server", cmd, run_dir / "logs" / "server.log", repo_env()))


def edge_args(
    cfg: SimConfig,
    broker: BrokerHandle,
    cid: str,
    tier: str,
    backend: str,
    data: Path,
    run_dir: Path,
    bundles_dir: Path,
) -> list[str]:
    cred = broker.fleet.dir / "clients" / f"{cid}.json"
    settings = {
        "broker": broker.url,
        "credentials": cred,
        "data": data,
        "state": run_dir / "edges" / cid,
        "tier": tier,
        "backend": backend,
        "threads": cfg.edge_threads,
        "log_format": "json",
    }
    if cfg.provision_bundles:
        settings["bundle_dir"] = bundles_dir.resolve()
    from devices import load_catalog

    budget = cfg.memory_budget_mb(load_catalog()[tier].memory_budget_mb)
    if budget is not None:
        settings["memory_budget_mb"] = f"{budget:g}"
    if cfg.memory_accounting != "process":  # only passed when asked: the default is not spelled out
        settings["memory_accounting"] = cfg.memory_accounting
    if cfg.battery:
        settings["simulated_battery"] = cfg.battery
    if broker.mqtt_protocol != "5":  # e.g. 3.1.1 on the embedded amqtt broker, which has no MQTT 5
        settings["mqtt_protocol"] = broker.mqtt_protocol
    return ["edge", *(f"{key}={value}" for key, value in settings.items())]


def start_edges(
    children: Children,
    cfg: SimConfig,
    broker: BrokerHandle,
    tiers: dict[str, str],
    backends: dict[str, str],
    data: dict[str, Path],
    run_dir: Path,
    bundles_dir: Path,
) -> list[Child]:
    env = repo_env(
        {
            "OMP_NUM_THREADS": str(cfg.edge_threads),
            "MKL_NUM_THREADS": str(cfg.edge_threads),
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    out = []
    for cid, tier in tiers.items():
        args = edge_args(cfg, broker, cid, tier, backends[tier], data[cid], run_dir, bundles_dir)
        out.append(children.add(Child(cid, fedhft_command(*args), run_dir / "logs" / f"{cid}.log", env)))
    return out


def wait_server_running(broker: BrokerHandle, server: Child, timeout: float = 120.0) -> None:
    """Block until the server's retained status says ``running`` (read as the server user, with its
    own client id). Devices start only then, so that their first hello reaches a subscribed server
    and a server that cannot start fails the run before N edge processes are spawned. (An early
    device would still join: it says hello again whenever the server's status turns to ``running``,
    edge_runtime/_agent.py.)"""
    import threading
    import time

    from fedhft.mqtt import ClientSpec, MqttConnection
    from fedhft.protocol import ProtocolError, ServerStatus, Topics, decode

    running = threading.Event()
    topic = Topics(broker.fleet.fleet).server_status

    def on_message(client, userdata, msg):
        try:
            running.set() if decode(bytes(msg.payload), expect=ServerStatus).state == "running" else None
        except ProtocolError:
            pass

    v5 = broker.mqtt_protocol == "5" and broker.kind != "embedded"
    cred = broker.fleet.server
    conn = MqttConnection(
        ClientSpec(broker.url, f"sim-watch-{server.pid}", cred.username, cred.password, protocol="5" if v5 else "3.1.1")
    )  # a clean session, gone at disconnect
    client = conn.paho
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
    client.on_message = on_message
    conn.connect()
    client.loop_start()
    try:
        deadline = time.monotonic() + timeout
        while not running.wait(0.5):
            if not server.alive:
                hint = (
                    (
                        f"\n(The server ran against the embedded amqtt broker with mqtt_protocol "
                        f"{broker.mqtt_protocol}. If the log above points at the broker rather than at a setting, "
                        "install Mosquitto, which broker=auto then uses: apt-get install mosquitto / brew install "
                        "mosquitto)"
                    )
                    if broker.kind == "embedded"
                    else ""
                )
                raise SimulationError(
                    f"the server exited with code {server.returncode} before it was ready. "
                    f"Last lines of {server.log_path}:\n{server.tail()}{hint}"
                )
            if time.monotonic() > deadline:
                raise SimulationError(
                    f"the server did not report 'running' within {timeout:.0f} s; see {server.log_path}"
                )
    finally:
        client.loop_stop()
        client.disconnect()

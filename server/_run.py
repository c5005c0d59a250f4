"""``run_server``: what ``fedhft server`` runs. Wires store, bundles, coordinator and paho, then
drains the intake queue on this thread until every round is committed (or SIGTERM/SIGINT)."""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from fedhft.manifest import BundleError
from fedhft.protocol import ServerState, ServerStatus, encode

from server._bundles import BundleIndex
from server._config import ServerConfig
from server._coordinator import Coordinator, Inbound
from server._log import event
from server._metrics import record_server_state
from server._store import Store

log = logging.getLogger("fedhft.server")

TICK_S = 0.05


@dataclass(frozen=True)
class Auth:
    username: str | None
    password: str | None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    max_packet_size: int | None = None  # the broker's, when the credentials file knows it

    @classmethod
    def resolve(cls, credentials: str | None, username: str | None, password: str | None, insecure: bool) -> "Auth":
        """From a fleet-init ``server.json`` or a username/password; refuses no auth unless ``insecure``."""
        if credentials:
            from fedhft.credentials import load_credentials

            cred = load_credentials(credentials)
            return cls(
                cred.username,
                cred.password,
                cred.tls_ca,
                cred.tls_cert,
                cred.tls_key,
                getattr(cred, "max_packet_size", None),
            )
        if username:
            if password is None:
                raise ValueError("--username needs --password (or pass --credentials server.json from fleet-init)")
            return cls(username, password)
        if not insecure:
            raise ValueError(
                "no broker credentials: pass --credentials <fleet>/server.json (written by "
                "`fedhft server fleet-init`) or --username/--password; --insecure connects without auth"
            )
        return cls(None, None)


def drain(inbox: queue.Queue, limit: int, timeout: float) -> list[Inbound]:
    """Up to ``limit`` queued messages, waiting at most ``timeout`` for the first one."""
    try:
        batch = [inbox.get(timeout=timeout)]
    except queue.Empty:
        return []
    while len(batch) < limit:
        try:
            batch.append(inbox.get_nowait())
        except queue.Empty:
            break
    return batch


def serve(coord: Coordinator, inbox: queue.Queue, stop: threading.Event, intake_batch: int) -> None:
    """The coordinator loop: drain a batch, handle it, tick rounds."""
    while not stop.is_set() and not coord.finished:
        batch = drain(inbox, intake_batch, TICK_S)
        if batch:
            coord.handle(batch)
        coord.tick()


def run_server(
    config: ServerConfig, broker_url: str, state_dir: str | Path, auth: Auth, stop: threading.Event | None = None
) -> int:
    """Run (or resume) a federated job until ``config.rounds`` rounds are committed. Returns the
    number of committed rounds."""
    from server._mqtt import MqttTransport

    stop = stop or threading.Event()
    bundles = BundleIndex.scan(config.bundles_dir)
    refuse_missing_bundles(bundles, config)
    store = Store(state_dir)
    transport = MqttTransport(
        broker_url,
        config.fleet,
        auth.username,
        auth.password,
        tls_ca=auth.tls_ca,
        tls_cert=auth.tls_cert,
        tls_key=auth.tls_key,
        session_expiry=config.session_expiry_s,
        max_packet_size=config.max_packet_size,
        protocol=config.mqtt_protocol,
        run_id=store.run_id(),
    )
    coord = Coordinator(config, store, bundles, transport)
    _prewarm(coord)
    _install_signals(stop)
    t0 = time.time()
    transport.connect()
    try:
        record_server_state(store, ServerState.RUNNING)  # `fedhft server status` tells a live server from a stopped one
        coord.resume()
        serve(coord, transport.inbox, stop, config.intake_batch)
    finally:
        final = ServerState.FINISHED if coord.finished else ServerState.OFFLINE
        record_server_state(store, final)
        transport.close(encode(ServerStatus(config.fleet, final, None, time.time())), end_session=coord.finished)
        store.close()
    event(
        log,
        logging.INFO,
        "server_stopped",
        seconds=time.time() - t0,
        committed=coord.next_round,
        rounds=config.rounds,
        finished=coord.finished,
    )
    return coord.next_round


def refuse_missing_bundles(bundles: BundleIndex, config: ServerConfig) -> None:
    """Refuse to start when the strategy will assign a device a plan that no bundle compiles for
    its backend: otherwise those devices fail every round."""
    missing = bundles.missing(config.strategy, config.strategy_options)
    if missing:
        lines = "\n".join(f"  - {need.describe()}: {need.export_hint(bundles)}" for need in missing)
        raise BundleError(
            f"strategy {config.strategy!r} needs {len(missing)} bundle(s) that {config.bundles_dir} lacks:\n{lines}"
        )


def run_from_args(
    broker: str,
    state: str,
    config_path: str | None,
    overrides: list[str],
    *,
    credentials: str | None = None,
    username: str | None = None,
    password: str | None = None,
    insecure: bool = False,
) -> int:
    """What ``fedhft server`` does: load the config (YAML + overrides), resolve auth, run. Raises
    ServerConfigError / ValueError (bad settings, missing auth) before touching the broker."""
    from server._config import load_server_config

    config = load_server_config(config_path, overrides)
    auth = Auth.resolve(credentials, username, password, insecure)
    if auth.max_packet_size and auth.max_packet_size < config.max_packet_size:
        # Never publish what this fleet's broker would refuse (an oversize QoS 1 message loops forever).
        log.warning("max_packet_size %d lowered to the fleet broker's %d", config.max_packet_size, auth.max_packet_size)
        config = replace(config, max_packet_size=auth.max_packet_size)
    done = run_server(config, broker, state, auth)
    return 0 if done >= config.rounds else 1


def _prewarm(coord: Coordinator) -> None:
    """Import what clustering needs on a side thread now: a cold ``scipy.optimize`` import takes
    seconds and would otherwise stall intake in the middle of the first clustered round."""
    if hasattr(coord.strategy, "num_clusters"):
        threading.Thread(target=lambda: __import__("scipy.optimize"), name="fedhft-prewarm", daemon=True).start()


def _install_signals(stop: threading.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

"""The zero-setup broker: amqtt 0.12.1 in a background thread, for demos where no Mosquitto exists.

Same users and the same ACL as the Mosquitto config (two small plugins read the fleet's `passwd`
file and `_acl.is_allowed`), same start()/stop()/url interface. Known amqtt limits (measured,
docs/DESIGN-NOTES.md, "Brokers"), which is why reliability tests need Mosquitto:
* MQTT 3.1.1 only: clients must connect with protocol MQTTv311; an ACL-refused publish is
  dropped silently (3.1.1 has no PUBACK reason codes);
* keepalive is not enforced, so a stalled device's Last Will never fires;
* unacked QoS 1 messages are never redelivered; `$share/...` subscriptions deliver nothing;
* no maximum packet size (fleet `max_packet_size` is not enforced; devices must check sizes);
* on TLS, client certificates are optional (Mosquitto requires them);
* nothing persists across stop()/start().
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

from server.broker._base import BrokerStartError, as_fleet
from server.broker._fleet_init import FleetConfig
from server.broker._listeners import ListenerPorts
from server.broker._mosquitto import MosquittoBroker, find_mosquitto

log = logging.getLogger(__name__)


def _amqtt_broker_class():
    try:
        from amqtt.broker import Broker as AmqttBroker
    except ImportError as exc:
        raise ImportError(
            "the embedded broker needs amqtt: install it with: pip install 'fedhft[broker]' "
            "(or install Mosquitto and use start_broker(fleet, prefer='mosquitto'))"
        ) from exc
    return AmqttBroker


_PLUGINS = "server.broker._amqtt_plugins"


class EmbeddedBroker(ListenerPorts):
    """amqtt on its own asyncio loop in a daemon thread. MQTT 3.1.1 only (see module docstring)."""

    kind = "embedded"
    mqtt5 = False
    _port_taken = "in use"

    def __init__(
        self,
        config: FleetConfig | str | Path,
        port: int | None = None,
        host: str | None = None,
        *,
        tls_port: int | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        self._init_ports(config, port, host, tls_port)
        self.start_timeout = start_timeout
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _amqtt_config(self) -> dict:
        listeners = {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}}
        if self.tls_port:
            paths = self.config.conf_paths
            listeners["tls"] = {
                "type": "tcp",
                "bind": f"{self.host}:{self.tls_port}",
                "ssl": True,
                "cafile": str(paths.ca_file),
                "certfile": str(paths.server_cert),
                "keyfile": str(paths.server_key),
            }
        return {
            "listeners": listeners,
            # An explicit plugin list replaces amqtt's defaults (anonymous auth, $SYS, loggers).
            "plugins": {
                f"{_PLUGINS}.PasswdFileAuthPlugin": {"password_file": str(self.config.conf_paths.password_file)},
                f"{_PLUGINS}.FleetAclPlugin": {"fleet": self.config.fleet, "server_user": self.config.server.username},
            },
        }

    def start(self) -> "EmbeddedBroker":
        if self.running:
            return self
        _amqtt_broker_class()  # fail here, in the caller's thread, when amqtt is missing
        self._launch_on_ports()
        return self

    def _launch(self) -> None:
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._serve()), name=f"fedhft-amqtt-{self.port}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(self.start_timeout):
            self.stop()
            raise BrokerStartError(
                f"embedded amqtt broker did not start within {self.start_timeout}s on "
                f"{self.host}:{self.port}; raise start_timeout or use Mosquitto"
            )
        if self._error is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
            cause = self._error.__cause__ or self._error
            raise BrokerStartError(
                f"embedded amqtt broker failed to start on {self.host}:{self.port}: {cause} "
                "(another process may hold the port: pass another port, or port=None)"
            ) from self._error

    async def _serve(self) -> None:
        AmqttBroker = _amqtt_broker_class()
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        try:
            broker = AmqttBroker(self._amqtt_config())
            await broker.start()
        except Exception as exc:  # reported to start() in the caller's thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop_event.wait()
        await broker.shutdown()

    def stop(self, timeout: float = 5.0) -> None:
        """Shut the broker down (clients are disconnected) and join its thread. Safe to call twice."""
        thread, loop, event = self._thread, self._loop, self._stop_event
        if thread is None:
            return
        if thread.is_alive() and loop is not None and event is not None:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # loop already closed: the thread is finishing anyway
                pass
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(
                f"embedded broker thread did not stop within {timeout}s; it is a daemon thread and "
                "ends with the process (a client may be blocking amqtt's shutdown)"
            )
        self._thread = self._loop = self._stop_event = None

    def restart(self) -> "EmbeddedBroker":
        """Stop and start on the same ports. amqtt keeps no state: every session is lost."""
        self.stop()
        self._keep_ports()
        return self.start()

    def __repr__(self) -> str:
        return f"EmbeddedBroker(fleet={self.config.fleet!r}, port={self.port}, running={self.running})"


def start_broker(
    fleet_config: FleetConfig | str | Path, prefer: str = "auto", *, port: int | None = None, host: str | None = None
):
    """Start and return a broker for the fleet: Mosquitto when its binary exists (or is
    required with prefer="mosquitto"), else the embedded amqtt broker (MQTT 3.1.1 only)."""
    if prefer not in ("auto", "mosquitto", "embedded"):
        raise ValueError(f"prefer={prefer!r}: use 'auto', 'mosquitto' or 'embedded'")
    config = as_fleet(fleet_config)
    if prefer == "mosquitto" or (prefer == "auto" and find_mosquitto() is not None):
        return MosquittoBroker(config, port=port, host=host).start()
    if prefer == "auto":
        log.warning(
            "no mosquitto binary found: using the embedded amqtt broker (MQTT 3.1.1 only, no "
            "redelivery, keepalive not enforced). Install mosquitto for real runs."
        )
    return EmbeddedBroker(config, port=port, host=host).start()

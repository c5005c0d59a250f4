"""Shared fixtures: a generated fleet, a private Mosquitto on a free port, connected paho clients.

Every broker and client a fixture starts is stopped at teardown (brokers by their pid), so that
`ps` shows nothing of ours after a test run. Never the system broker on 1883.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from server.broker import FleetConfig, MosquittoBroker, fleet_init
from fedhft.mqtt import ClientSpec, MqttConnection

# Integration and reliability tests fail, never skip, when a component is missing (see tests/_require.py).
from tests._require import pytest_configure, pytest_runtest_makereport, pytest_runtest_setup, require  # noqa: F401

FLEET_DEVICES = 3

# A loaded CI machine must not fail a property test on time: no per-example deadline, and no
# "generation too slow" health check. Tests that set their own settings still override these.
settings.register_profile("fedhft", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("fedhft")


class MqttConnectError(RuntimeError):
    """The broker refused the CONNECT (`reason` is paho's ReasonCode) or never answered."""

    def __init__(self, message: str, reason=None):
        super().__init__(message)
        self.reason = reason


class TestClient:
    """A ``fedhft.mqtt`` client (MQTT 5 unless told otherwise) that records what tests assert on.

    `received` queues every message; `pubacks[mid]` is the PUBACK reason code of a QoS 1 publish;
    `disconnects` lists the reason codes of every disconnect.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, client_id: str, *, protocol: int = 5, manual_ack: bool = False):
        require("paho")
        self.client_id, self.manual_ack = client_id, manual_ack
        self.protocol = protocol
        self.client = None  # the paho client, made by connect (which knows the session settings)
        self.received: queue.Queue = queue.Queue()
        self.pubacks: dict[int, object] = {}
        self.disconnects: list[object] = []
        self.connack = None  # (reason_code, session_present, properties)
        self._cond = threading.Condition()
        self._suback: dict[int, list] = {}

    # paho callbacks (run on paho's network thread) -------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        with self._cond:
            self.connack = (reason_code, bool(flags.session_present), properties)
            self._cond.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self._cond:
            self.pubacks[mid] = reason_code
            self._cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self._cond:
            self._suback[mid] = list(reason_codes)
            self._cond.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        with self._cond:
            self.disconnects.append(reason_code)
            self._cond.notify_all()

    def _wait(self, predicate, timeout: float, what: str):
        with self._cond:
            if not self._cond.wait_for(predicate, timeout=timeout):
                raise TimeoutError(f"no {what} within {timeout}s")

    # actions ------------------------------------------------------------------------------
    def connect(
        self,
        url: str,
        username: str,
        password: str | None,
        *,
        clean_start: bool = True,
        session_expiry: int | None = None,
        tls_ca=None,
        tls_cert=None,
        tls_key=None,
        keepalive: int = 30,
        timeout: float = 5.0,
    ) -> "TestClient":
        # No automatic reconnect: a test that wants a new session makes a new client. On 3.1.1 the
        # session is always clean (clean_start and session_expiry are MQTT 5 settings here).
        v5 = self.protocol == 5
        conn = MqttConnection(
            ClientSpec(
                url,
                self.client_id,
                username,
                password,
                "5" if v5 else "3.1.1",
                tls_ca,
                tls_cert,
                tls_key,
                keepalive=keepalive,
                clean_start=clean_start or not v5,
                session_expiry_s=session_expiry,
                manual_ack=self.manual_ack,
                reconnect=False,
            )
        )
        self.client = c = conn.paho
        c.on_connect, c.on_message = self._on_connect, lambda c, u, msg: self.received.put(msg)
        c.on_publish, c.on_subscribe, c.on_disconnect = self._on_publish, self._on_subscribe, self._on_disconnect
        conn.connect()
        self.client.loop_start()
        try:
            self._wait(lambda: self.connack is not None, timeout, "CONNACK")
        except TimeoutError as exc:
            self.close()
            raise MqttConnectError(
                f"{exc} from {url} (a TLS listener that wants a client certificate never answers one without it)"
            ) from None
        reason = self.connack[0]
        if reason.is_failure:
            self.close()
            raise MqttConnectError(f"broker refused {username!r}: {reason}", reason)
        return self

    def subscribe(self, topic: str, qos: int = 1, timeout: float = 5.0) -> list:
        """Subscribe and wait for the SUBACK; returns its reason codes."""
        result, mid = self.client.subscribe(topic, qos)
        assert result == 0, f"subscribe failed locally: {result}"
        self._wait(lambda: mid in self._suback, timeout, f"SUBACK for {topic}")
        return self._suback[mid]

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, timeout: float = 5.0):
        """Publish; for QoS 1 wait for the PUBACK and return its reason code."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos == 0:
            return info
        self._wait(lambda: info.mid in self.pubacks or self.disconnects, timeout, f"PUBACK on {topic}")
        return self.pubacks.get(info.mid)

    def next_message(self, timeout: float = 3.0):
        """The next received message, or None after `timeout` seconds."""
        try:
            return self.received.get(timeout=timeout)
        except queue.Empty:
            return None

    def wait_disconnect(self, timeout: float = 5.0):
        self._wait(lambda: bool(self.disconnects), timeout, "disconnect")
        return self.disconnects[-1]

    def close(self) -> None:
        if self.client is None:  # connect failed before the client was made
            return
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


@pytest.fixture
def fleet(tmp_path: Path) -> FleetConfig:
    """A fresh fleet folder: fleet 'test', devices dev-000..dev-002, server user 'server'."""
    return fleet_init(tmp_path / "fleet", FLEET_DEVICES, fleet="test")


@pytest.fixture
def mosquitto(fleet: FleetConfig):
    """A private Mosquitto for `fleet` on a free loopback port; stopped by its pid at teardown."""
    require("mosquitto")
    broker = MosquittoBroker(fleet).start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def paho_client():
    """Factory: `paho_client(url, username, password, client_id, **connect_kwargs)` -> a connected
    TestClient (MQTT 5; `protocol=4` for MQTT 3.1.1). Raises
    MqttConnectError when the broker refuses or does not answer. All clients close at teardown."""
    made: list[TestClient] = []

    def connect(
        url: str,
        username: str | None,
        password: str | None,
        client_id: str,
        *,
        protocol: int = 5,
        manual_ack: bool = False,
        **kwargs,
    ) -> TestClient:
        client = TestClient(client_id, protocol=protocol, manual_ack=manual_ack)
        made.append(client)
        return client.connect(url, username, password, **kwargs)

    connect.ConnectError = MqttConnectError  # tests catch it here: conftest is not importable as a module
    yield connect
    for client in made:
        client.close()

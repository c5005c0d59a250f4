"""The device's MQTT link: a ``fedhft.mqtt`` connection that never blocks paho's thread.

* a persistent session (the device's secret-tagged client id, no clean start, a session expiry on
  MQTT 5) so that tasks queued while the device was away arrive when it comes back;
* manual acks: a task is acknowledged only once the agent has persisted it (a crash in between
  makes the broker redeliver it);
* the Last Will on the device's retained status topic, and reconnects with exponential backoff
  (a refused or failed connection is logged, never raised);
* the broker's packet limit (from CONNACK, else the configured one) checked before each publish;
* ``on_message`` only enqueues ``Inbound`` items that the agent's main loop drains.

MQTT 3.1.1 (``mqtt_protocol=3.1.1``, for brokers without 5) loses the session expiry, the CONNACK
packet limit and PUBACK reason codes (an ACL-refused publish looks delivered); see
docs/DESIGN-NOTES.md.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from fedhft.mqtt import (
    DEFAULT_KEEPALIVE_S,
    DEFAULT_MAX_PACKET_SIZE,
    DEFAULT_MQTT_PROTOCOL,
    DEVICE_SESSION_EXPIRY_S,
    ClientSpec,
    MqttConnection,
    Will,
    device_client_id,
)
from fedhft.protocol import PayloadTooLarge


class PublishFailed(RuntimeError):
    """The broker refused a publish (e.g. "Not authorized": the ACL does not allow this topic)."""


@dataclass(frozen=True)
class MqttOptions:
    url: str
    client_id: str
    username: str | None = None
    password: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    keepalive: int = DEFAULT_KEEPALIVE_S
    session_expiry_s: int = DEVICE_SESSION_EXPIRY_S
    max_packet_size: int = DEFAULT_MAX_PACKET_SIZE  # used until (or unless) CONNACK advertises the broker's limit
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    protocol: str = DEFAULT_MQTT_PROTOCOL  # "5" or "3.1.1" (AgentConfig.mqtt_protocol)

    def spec(self, will: tuple[str, bytes] | None) -> ClientSpec:
        return ClientSpec(
            self.url,
            device_client_id(self.client_id, self.password),
            self.username,
            self.password,
            self.protocol,
            self.tls_ca,
            self.tls_cert,
            self.tls_key,
            keepalive=self.keepalive,
            clean_start=False,
            session_expiry_s=self.session_expiry_s,
            manual_ack=True,
            reconnect_delay_s=(int(self.reconnect_min_s), int(self.reconnect_max_s)),
            will=Will(*will) if will is not None else None,
            max_packet_size=self.max_packet_size,
        )


@dataclass(frozen=True)
class Inbound:
    """One received message (or a link event: topic ``"$connected"`` / ``"$disconnected"``)."""

    topic: str
    payload: bytes
    mid: int = 0
    qos: int = 0
    dup: bool = False
    session_present: bool = False
    retain: bool = False  # True only for a retained message replayed on subscribe (it may be old)


CONNECTED = "$connected"
DISCONNECTED = "$disconnected"


class MqttLink:
    """One MQTT connection (5 or 3.1.1) of one device. Thread-safe publish; received messages go to ``inbox``."""

    def __init__(
        self,
        opts: MqttOptions,
        subscriptions: list[str],
        will: tuple[str, bytes] | None = None,
        log: Callable[..., None] = lambda event, **kv: None,
    ):
        self.opts, self.subscriptions, self.log = opts, list(subscriptions), log
        self.conn = MqttConnection(opts.spec(will))
        self.target, self.mqtt5, self._client = self.conn.target, self.conn.mqtt5, self.conn.paho
        self.inbox: queue.Queue[Inbound] = queue.Queue()
        self.connected = threading.Event()
        self.last_failure: str | None = None
        self._cond = threading.Condition()
        self._pubacks: dict[int, Any] = {}
        c = self._client
        c.on_connect, c.on_disconnect = self._on_connect, self._on_disconnect
        c.on_message, c.on_publish = self._on_message, self._on_publish

    # ------------------------------------------------------------------ paho callbacks (paho's thread)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.last_failure = str(reason_code)
            fix = (
                "check the username/password (or --credentials file) and that the device is in the fleet's ACL"
                if reason_code.value in (0x86, 0x87)
                else "check the broker address and its log"
            )
            self.log("mqtt_refused", reason=str(reason_code), fix=fix, severity="error")
            return  # paho keeps retrying with backoff
        self.conn.note_connack(properties)  # none on 3.1.1: the configured limit stays in force
        for topic in self.subscriptions:  # cheap and idempotent: the session may not have been kept
            client.subscribe(topic, qos=1)
        self.connected.set()
        self.last_failure = None
        self.inbox.put(Inbound(CONNECTED, b"", session_present=bool(flags.session_present)))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        if was:
            self.inbox.put(Inbound(DISCONNECTED, str(reason_code).encode()))

    def _on_message(self, client, userdata, msg) -> None:
        # Never block here: paho's network thread also sends PINGREQs and PUBACKs.
        self.inbox.put(Inbound(msg.topic, bytes(msg.payload), msg.mid, msg.qos, bool(msg.dup), retain=bool(msg.retain)))

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._cond:
            self._pubacks[mid] = reason_code
            if len(self._pubacks) > 4096:  # acks nobody waited for must not accumulate over a week
                for old in list(self._pubacks)[:2048]:
                    self._pubacks.pop(old, None)
            self._cond.notify_all()

    # ------------------------------------------------------------------ API (agent thread)

    def start(self) -> "MqttLink":
        """Connect in the background; failures are retried with backoff and never raised."""
        self.conn.connect_async()
        self._client.loop_start()
        return self

    def wait_connected(self, timeout: float) -> bool:
        ok = self.connected.wait(timeout)
        if not ok and self.target.tls and not self.opts.tls_cert:
            self.log(
                "mqtt_waiting",
                hint="a TLS broker that wants a client certificate never answers without one: "
                "pass --tls-cert and --tls-key",
                severity="warning",
            )
        return ok

    @property
    def max_packet_size(self) -> int:
        return self.conn.max_packet_size

    def max_payload(self, topic: str) -> int:
        return self.conn.max_payload(topic)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        """Queue a publish (sent now, or after the reconnect); returns its mid.

        Raises ``PayloadTooLarge`` when the payload would exceed the broker's packet limit.
        """
        return self.conn.publish(topic, payload, qos=qos, retain=retain).mid

    def wait_puback(self, mid: int, timeout: float) -> Any | None:
        """The PUBACK reason code of a QoS 1 publish, or None if none arrived within ``timeout``.

        Raises ``PublishFailed`` when the broker refused the message (MQTT 5 reason >= 0x80). On MQTT
        3.1.1 a PUBACK has no reason code (paho reports "Success"), so a refusal cannot be seen here.
        """
        with self._cond:
            self._cond.wait_for(lambda: mid in self._pubacks, timeout=timeout)
            reason = self._pubacks.pop(mid, None)
        if reason is not None and getattr(reason, "is_failure", False):
            raise PublishFailed(f"the broker refused message {mid}: {reason}; check the fleet ACL for this client")
        return reason

    def publish_wait(self, topic: str, payload: bytes, timeout: float = 10.0, retain: bool = False) -> bool:
        """QoS 1 publish and wait for its PUBACK; False on timeout (paho resends it after a reconnect)."""
        mid = self.publish(topic, payload, qos=1, retain=retain)
        return self.wait_puback(mid, timeout) is not None

    def ack(self, item: Inbound) -> None:
        """Acknowledge a received QoS 1 message (only once it has been handled or persisted)."""
        if item.qos > 0 and item.mid:
            self._client.ack(item.mid, item.qos)

    def stop(self, final: tuple[str, bytes] | None = None, timeout: float = 3.0) -> None:
        """Publish ``final`` (the retained offline status) if connected, then disconnect cleanly."""
        try:
            if final is not None and self.connected.is_set():
                try:
                    self.publish_wait(final[0], final[1], timeout=timeout, retain=True)
                except (PublishFailed, PayloadTooLarge) as exc:
                    self.log("final_status_failed", error=str(exc), severity="warning")
            self._client.disconnect()
        finally:
            self._client.loop_stop()
            time.sleep(0)  # let paho's thread finish its last callback before the interpreter exits

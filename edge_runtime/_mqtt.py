"""The device's MQTT link (MQTT 5, or 3.1.1 for brokers without 5): a thin paho-mqtt 2.x wrapper
that never blocks paho's thread.

What it takes care of (each one a trap measured with Mosquitto 2.0 / paho 2.2, see DESIGN.md):

* ``CallbackAPIVersion.VERSION2`` and MQTT 5 (ACL refusals are only visible on MQTT 5);
* a persistent session (``clean_start=False`` + a session expiry interval) so QoS 1 tasks queued
  while the device was away are delivered when it comes back;
* ``manual_ack``: a task is acknowledged to the broker only after the agent has persisted it, so a
  crash between delivery and persistence makes the broker redeliver it;
* a Last Will on the client's retained status topic ("offline");
* reconnects with exponential backoff (``reconnect_delay_set`` + ``loop_start``); a refused or
  failed connection is logged, never raised;
* payload size checked against the broker's ``MaximumPacketSize`` (from CONNACK, else a configured
  limit) BEFORE publishing: paho does not enforce it and an oversize QoS 1 message is resent forever;
* ``on_message`` only enqueues ``Inbound`` items into ``inbox`` (a ``queue.Queue``) that the agent's
  main loop drains; decoding and all work happen there.

``MqttOptions.protocol="3.1.1"`` (``fedhft edge mqtt_protocol=3.1.1``) is for brokers that lack MQTT 5, such as
the embedded amqtt broker of ``fedhft simulate``. What changes, and what is lost:

* the persistent session is asked for with ``clean_session=False`` in the ``Client`` constructor
  (3.1.1 has no clean_start flag on CONNECT and no SessionExpiryInterval: how long the broker keeps
  the session is the broker's own setting, e.g. Mosquitto's ``persistent_client_expiration``);
* no CONNECT properties, and CONNACK advertises no MaximumPacketSize: the configured
  ``max_packet_size`` is the limit checked before publishing;
* PUBACKs carry no reason code (paho 2 reports each as a ``ReasonCode`` "Success"), so an
  ACL-refused publish looks delivered (Mosquitto drops it; amqtt too) and ``PublishFailed`` is never
  raised: only the missing application-level Ack from the server shows it (the agent re-sends the
  update every ``ack_timeout_s``);
* CONNACK refusals still arrive as ``ReasonCode`` objects (paho 2 converts the 3.1.1 return code:
  bad credentials = 0x86, not authorized = 0x87), so ``is_failure`` works in both modes;
* ``manual_ack``, the Last Will and QoS 1 are plain MQTT 3.1.1 and work the same.
"""
from __future__ import annotations

import hashlib
import queue
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from fedhft.broker import parse_broker_url
from fedhft.protocol import PayloadTooLarge, payload_budget

#: MQTT's own ceiling on a packet (the "remaining length" field); used when nothing better is known.
MQTT_MAX_PACKET = 268_435_455


class PublishFailed(RuntimeError):
    """The broker refused a publish (e.g. "Not authorized": the ACL does not allow this topic)."""


def session_id(client_id: str, password: str | None) -> str:
    """The MQTT client id of this device's session: its id plus a tag derived from its secret. Stable
    across restarts (the persistent session survives), but not guessable by another device: Mosquitto
    does not bind client ids to usernames, and a device connecting with this one's id would take its
    session over (drop it, and with clean start discard its queued tasks)."""
    if not password:
        return client_id
    tag = hashlib.sha256(f"fedhft-session|{client_id}|{password}".encode()).hexdigest()[:16]
    return f"{client_id}-{tag}"


@dataclass(frozen=True)
class MqttOptions:
    url: str
    client_id: str
    username: str | None = None
    password: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    keepalive: int = 30
    session_expiry_s: int = 7 * 24 * 3600  # a device may be away for days (a phone off its charger)
    max_packet_size: int = 1_048_576  # used until (or unless) CONNACK advertises the broker's limit
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    protocol: str = "5"  # "5" or "3.1.1" (AgentConfig.mqtt_protocol)


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


def _paho():
    try:
        import paho.mqtt.client as mqtt
    except ImportError as exc:
        raise ImportError("paho-mqtt is missing: install it with: pip install 'fedhft[mqtt]' (paho-mqtt>=2.0)") from exc
    return mqtt


def is_mqtt5(protocol: str) -> bool:
    """True for "5", False for "3.1.1"; anything else is a setting to fix (AgentConfig checks it first)."""
    if protocol not in ("5", "3.1.1"):
        raise ValueError(f"MQTT protocol {protocol!r}: use '5' or '3.1.1'")
    return protocol == "5"


class MqttLink:
    """One MQTT connection (5 or 3.1.1) of one device. Thread-safe publish; received messages go to ``inbox``."""

    def __init__(self, opts: MqttOptions, subscriptions: list[str], will: tuple[str, bytes] | None = None,
                 log: Callable[..., None] = lambda event, **kv: None):
        mqtt = _paho()
        self.opts, self.subscriptions, self.log = opts, list(subscriptions), log
        self.target = parse_broker_url(opts.url)
        self.inbox: queue.Queue[Inbound] = queue.Queue()
        self.connected = threading.Event()
        self.broker_max_packet: int | None = None
        self.last_failure: str | None = None
        self._cond = threading.Condition()
        self._pubacks: dict[int, Any] = {}
        self.mqtt5 = is_mqtt5(opts.protocol)
        client_id = session_id(opts.client_id, opts.password)
        if self.mqtt5:
            self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                                       manual_ack=True)
        else:  # 3.1.1: the persistent session is a constructor flag (no clean_start / session expiry)
            self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                                       clean_session=False, manual_ack=True)
        self._configure(mqtt, will)

    def _configure(self, mqtt, will) -> None:
        c, o = self._client, self.opts
        if o.username is not None:
            c.username_pw_set(o.username, o.password)
        if self.target.tls:
            c.tls_set(ca_certs=o.tls_ca, certfile=o.tls_cert, keyfile=o.tls_key, cert_reqs=ssl.CERT_REQUIRED)
        if will is not None:
            c.will_set(will[0], will[1], qos=1, retain=True)
        c.reconnect_delay_set(min_delay=max(1, int(o.reconnect_min_s)), max_delay=max(1, int(o.reconnect_max_s)))
        c.on_connect, c.on_disconnect = self._on_connect, self._on_disconnect
        c.on_message, c.on_publish = self._on_message, self._on_publish

    # ------------------------------------------------------------------ paho callbacks (paho's thread)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.last_failure = str(reason_code)
            fix = ("check the username/password (or --credentials file) and that the device is in the fleet's ACL"
                   if reason_code.value in (0x86, 0x87) else "check the broker address and its log")
            self.log("mqtt_refused", reason=str(reason_code), fix=fix, severity="error")
            return  # paho keeps retrying with backoff
        # MQTT 3.1.1 has no CONNACK properties (paho passes None): the configured limit stays in force.
        limit = getattr(properties, "MaximumPacketSize", None) if properties is not None else None
        self.broker_max_packet = int(limit) if limit else None
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
        if self.mqtt5:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = int(self.opts.session_expiry_s)
            self._client.connect_async(self.target.host, self.target.port, keepalive=self.opts.keepalive,
                                       clean_start=False, properties=props)
        else:  # paho refuses clean_start and properties on 3.1.1; clean_session=False was set on the Client
            self._client.connect_async(self.target.host, self.target.port, keepalive=self.opts.keepalive)
        self._client.loop_start()
        return self

    def wait_connected(self, timeout: float) -> bool:
        ok = self.connected.wait(timeout)
        if not ok and self.target.tls and not self.opts.tls_cert:
            self.log("mqtt_waiting", hint="a TLS broker that wants a client certificate never answers without one: "
                                          "pass --tls-cert and --tls-key", severity="warning")
        return ok

    @property
    def max_packet_size(self) -> int:
        return self.broker_max_packet or self.opts.max_packet_size or MQTT_MAX_PACKET

    def max_payload(self, topic: str) -> int:
        return payload_budget(self.max_packet_size, topic)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        """Queue a publish (sent now, or after the reconnect); returns its mid.

        Raises ``PayloadTooLarge`` when the payload would exceed the broker's packet limit.
        """
        budget = self.max_payload(topic)
        if len(payload) > budget:
            raise PayloadTooLarge(
                f"{len(payload)} bytes for {topic} exceed the broker's limit ({budget} bytes of payload under "
                f"max_packet_size {self.max_packet_size}): use a smaller encoding (int8) or raise the broker's "
                f"max_packet_size")
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        return info.mid

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

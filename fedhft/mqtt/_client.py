"""The paho-mqtt 2.x client factory: a ``ClientSpec`` says what a client needs, ``MqttConnection``
builds it the same way for every side, on MQTT 5 or 3.1.1.

Traps it handles once (measured with Mosquitto 2.0 / paho 2.2, see docs/DESIGN-NOTES.md):
* a persistent session is ``clean_start=False`` + a SessionExpiryInterval on MQTT 5, but
  ``clean_session=False`` on the paho Client on 3.1.1 (paho refuses clean_start and properties there);
* paho never checks the broker's packet limit, and an oversize QoS 1 message is resent forever, so
  ``publish`` checks the size first and raises ``PayloadTooLarge``;
* a Last Will is always QoS 1 and retained: it lands on a status topic that late subscribers read.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal, get_args

from fedhft.mqtt._url import BrokerUrl, parse_broker_url

#: "5" on a real broker: ACL refusals are visible only on MQTT 5 (a 3.1.1 PUBACK says success and the
#: broker drops the message). "3.1.1" is for brokers without MQTT 5, such as the embedded amqtt broker.
MqttProtocol = Literal["5", "3.1.1"]
MQTT_PROTOCOLS: tuple[str, ...] = get_args(MqttProtocol)
DEFAULT_MQTT_PROTOCOL: MqttProtocol = "5"

#: MQTT's own ceiling on a packet (the "remaining length" field): the limit when nothing better is known.
MQTT_MAX_PACKET = 268_435_455
#: The broker packet limit fleet-init writes (EMQX's default), assumed until a CONNACK advertises one.
DEFAULT_MAX_PACKET_SIZE = 1_048_576
DEFAULT_KEEPALIVE_S = 30
#: How long the broker keeps a device's session and queued tasks: a phone may be off its charger for days.
DEVICE_SESSION_EXPIRY_S = 7 * 24 * 3600
#: How long the broker keeps the server's session and the updates queued while it is down.
SERVER_SESSION_EXPIRY_S = 86_400


def is_mqtt5(protocol: str) -> bool:
    """True for "5", False for "3.1.1"; anything else is a setting to fix."""
    if protocol not in MQTT_PROTOCOLS:
        raise ValueError(f"MQTT protocol {protocol!r}: use '5' or '3.1.1' (the mqtt_protocol setting)")
    return protocol == "5"


def _secret_tag(*parts: object) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:16]


# Why secret-derived ids: Mosquitto does not bind client ids to usernames, so a client connecting with
# another's id takes its session over (the broker drops the owner and, with clean start, discards
# what was queued for it). A tag derived from the password is stable across restarts and unguessable.
def device_client_id(client_id: str, password: str | None) -> str:
    """The MQTT client id of a device's persistent session: its id plus a tag derived from its secret."""
    if not password:
        return client_id
    return f"{client_id}-{_secret_tag('fedhft-session', client_id, password)}"


def server_client_id(fleet: str, username: str | None, password: str | None, run_tag: str = "") -> str:
    """The server's MQTT client id: ``fedhft-server-<fleet>-<secret>[-<run tag>]``. The run tag gives
    each server run (state dir) its own session; without it the session is fleet-wide."""
    tag = f"-{run_tag}" if run_tag else ""
    if not password:
        return f"fedhft-server-{fleet}{tag}"
    return f"fedhft-server-{fleet}-{_secret_tag('fedhft-server-id', fleet, username, password)}{tag}"


@dataclass(frozen=True)
class Will:
    """A Last Will, sent QoS 1 and retained by the broker when the client vanishes without a DISCONNECT."""

    topic: str
    payload: bytes


@dataclass(frozen=True)
class ClientSpec:
    """Everything a client is made of. ``client_id`` is sent as is (see ``device_client_id`` and
    ``server_client_id``); the MQTT 5-only fields are ignored on 3.1.1, where the broker's own
    settings decide how long a session lives and how many unacked messages it sends."""

    url: str
    client_id: str
    username: str | None = None
    password: str | None = None
    protocol: str = DEFAULT_MQTT_PROTOCOL  # MqttProtocol
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    keepalive: int = DEFAULT_KEEPALIVE_S
    clean_start: bool = True  # False: resume the session (and what the broker queued for it)
    session_expiry_s: int | None = None  # MQTT 5: seconds the session outlives a disconnect (None: 0)
    receive_maximum: int | None = None  # MQTT 5: unacked messages the broker may send us at once
    manual_ack: bool = False  # PUBACK only when the application calls ack (after persisting)
    reconnect: bool = True  # paho reconnects by itself after a lost connection
    reconnect_delay_s: tuple[int, int] | None = None  # (min, max) backoff; None: paho's
    max_inflight: int | None = None  # our unacked QoS 1 publishes; None: paho's
    will: Will | None = None
    max_packet_size: int = DEFAULT_MAX_PACKET_SIZE  # used until (unless) a CONNACK advertises the broker's


def _paho():
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise ImportError("paho-mqtt 2.x is missing: install it with: pip install 'fedhft[mqtt]'") from None
    return mqtt


def _properties(packet: str, **values: int):
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(getattr(PacketTypes, packet))
    for name, value in values.items():
        setattr(props, name, int(value))
    return props


class MqttConnection:
    """One paho client built from a ``ClientSpec``. ``paho`` is the paho ``Client``: set its callbacks,
    then ``connect()`` (blocking) or ``connect_async()``, then ``paho.loop_start()``."""

    def __init__(self, spec: ClientSpec):
        mqtt = _paho()
        self.spec = spec
        self.target: BrokerUrl = parse_broker_url(spec.url)
        self.mqtt5 = is_mqtt5(spec.protocol)
        self.broker_max_packet: int | None = None  # what the last CONNACK advertised (never on 3.1.1)
        session = {} if self.mqtt5 else {"clean_session": spec.clean_start}  # paho refuses it on MQTT 5
        self.paho = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=spec.client_id,
            protocol=mqtt.MQTTv5 if self.mqtt5 else mqtt.MQTTv311,
            reconnect_on_failure=spec.reconnect,
            manual_ack=spec.manual_ack,
            **session,
        )
        if spec.username is not None:
            self.paho.username_pw_set(spec.username, spec.password)
        if self.target.tls:  # a listener that wants client certificates never answers a CONNECT without one
            import ssl

            self.paho.tls_set(
                ca_certs=spec.tls_ca, certfile=spec.tls_cert, keyfile=spec.tls_key, cert_reqs=ssl.CERT_REQUIRED
            )
        if spec.will is not None:
            self.paho.will_set(spec.will.topic, spec.will.payload, qos=1, retain=True)
        if spec.reconnect_delay_s is not None:
            low, high = spec.reconnect_delay_s
            self.paho.reconnect_delay_set(min_delay=max(1, int(low)), max_delay=max(1, int(high)))
        if spec.max_inflight is not None:
            self.paho.max_inflight_messages_set(spec.max_inflight)
        self.connect_properties = self._connect_properties()

    def _connect_properties(self):
        """MQTT 5 CONNECT properties (None when there are none, and always on 3.1.1)."""
        values = {"SessionExpiryInterval": self.spec.session_expiry_s, "ReceiveMaximum": self.spec.receive_maximum}
        values = {k: v for k, v in values.items() if v is not None}
        return _properties("CONNECT", **values) if self.mqtt5 and values else None

    def _connect_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"host": self.target.host, "port": self.target.port, "keepalive": self.spec.keepalive}
        if self.mqtt5:  # on 3.1.1 the session flag went to the Client, and CONNECT has no properties
            kwargs.update(clean_start=self.spec.clean_start, properties=self.connect_properties)
        return kwargs

    def connect(self) -> Any:
        """Blocking CONNECT (raises OSError when the broker cannot be reached); the CONNACK comes later."""
        return self.paho.connect(**self._connect_kwargs())

    def connect_async(self) -> None:
        """CONNECT from paho's thread once ``paho.loop_start()`` runs: failures are retried, never raised."""
        self.paho.connect_async(**self._connect_kwargs())

    def disconnect_properties(self, end_session: bool = False):
        """DISCONNECT properties: ``end_session`` drops the session now (MQTT 5 expiry 0) instead of
        keeping it for its expiry; None on 3.1.1, where the broker's own setting decides."""
        return _properties("DISCONNECT", SessionExpiryInterval=0) if end_session and self.mqtt5 else None

    # -- packet size --------------------------------------------------------------------------------------
    def note_connack(self, properties) -> None:
        """Record the MaximumPacketSize a CONNACK advertised (3.1.1 has none: paho passes None)."""
        limit = getattr(properties, "MaximumPacketSize", None) if properties is not None else None
        self.broker_max_packet = int(limit) if limit else None

    @property
    def max_packet_size(self) -> int:
        return self.broker_max_packet or self.spec.max_packet_size or MQTT_MAX_PACKET

    def max_payload(self, topic: str) -> int:
        from fedhft.protocol import payload_budget

        return payload_budget(self.max_packet_size, topic)

    def check_payload(self, topic: str, payload: bytes) -> None:
        """Raise ``PayloadTooLarge`` when ``payload`` would not fit the broker's packet limit on ``topic``."""
        from fedhft.protocol import PayloadTooLarge

        budget = self.max_payload(topic)
        if len(payload) > budget:
            raise PayloadTooLarge(
                f"{len(payload)} bytes for {topic} exceed the broker's limit ({budget} bytes of payload under "
                f"max_packet_size {self.max_packet_size}): use a smaller encoding (int8) or raise the broker's "
                f"max_packet_size"
            )

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False):
        """Check the size, then queue the publish; returns paho's ``MQTTMessageInfo``."""
        self.check_payload(topic, payload)
        return self.paho.publish(topic, payload, qos=qos, retain=retain)

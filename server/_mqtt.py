"""The paho-mqtt 2.x side of the server: connection, Last Will, manual acks, intake queue.

* ``CallbackAPIVersion.VERSION2``, MQTT 5, ``clean_start=False`` + a session expiry: while the
  server is down (or restarting after a crash) the broker queues the devices' QoS 1 updates for it.
* ``manual_ack=True``: paho does NOT PUBACK on receipt; the coordinator calls ``ack`` after the
  update is committed to disk. A crash before that makes the broker redeliver (dup=True).
* ``on_message`` only enqueues (never blocks paho's network thread); the coordinator's thread
  drains the queue. A ``ReceiveMaximum`` bounds how many unacked messages the broker sends us,
  which bounds the queue.
* Last Will: a retained ``ServerStatus(offline)`` on ``server/status``.
* Bundles are served from their own thread, with flow control, so a 50 MB bundle never stalls
  update intake.

``protocol="3.1.1"`` (``mqtt_protocol: "3.1.1"`` in ServerConfig) is for brokers without MQTT 5, such
as the embedded amqtt broker of ``fedhft simulate``. What changes, and what is lost:

* the persistent session is ``clean_session=False`` in the ``Client`` constructor: 3.1.1 has no
  clean_start on CONNECT and no SessionExpiryInterval (the broker's own setting decides how long the
  session and its queued updates live);
* no ``ReceiveMaximum``: the broker's own in-flight limit for the client (Mosquitto
  ``max_inflight_messages``, 20 by default) is what bounds the unacked messages, and so the queue;
* PUBACKs to the server carry no reason code, so a publish the ACL refuses is not reported (the
  server only publishes on its own topics, which the fleet ACL allows);
* ``manual_ack``, the Last Will and QoS 1 are plain 3.1.1 and behave the same; a CONNACK refusal
  still arrives as a paho 2 ``ReasonCode`` (converted from the 3.1.1 return code), so
  ``is_failure`` works in both modes;
* the packet limit checked before publishing is always the configured ``max_packet_size`` (the
  server never read one from CONNACK).
"""
from __future__ import annotations

import hashlib
import logging
import queue
import threading
from typing import Iterable

from fedhft.broker import parse_broker_url
from fedhft.protocol import BundleChunk, ServerStatus, Topics, encode, payload_budget

from server._coordinator import Inbound
from server._task_ids import run_tag

log = logging.getLogger("fedhft.server.mqtt")

RECEIVE_MAXIMUM = 1000  # MQTT 5 only (a CONNECT property)
PUBLISH_WINDOW = 32  # bundle chunks in flight before the server thread waits for PUBACKs


def _paho():
    try:
        import paho.mqtt.client as mqtt
    except ImportError:  # pragma: no cover - paho is a hard dependency of the server
        raise ImportError("the fedhft server needs paho-mqtt 2.x: install it with: pip install 'fedhft[mqtt]'") from None
    return mqtt


def server_client_id(fleet: str, username: str | None, password: str | None, run_id: str = "") -> str:
    """The server's MQTT client id: stable across restarts of one run (its persistent session),
    and not guessable by a device. Mosquitto does not bind client ids to usernames, so a device that
    connected with the server's id would take the session over (the broker drops the server and,
    with clean_start, discards the updates queued for it).

    The run tag (``Store.run_id``, one per state dir) gives each run its own session: a server on
    a new state dir never receives what devices had queued for an earlier run, while a resume on
    the same state dir gets back the updates queued while it was down. (A run's messages that
    still reach a later one, say a device that trained under the old task, are refused
    ``stale_run`` by the intake.)"""
    tag = f"-{run_tag(run_id)}" if run_id else ""
    if not password:
        return f"fedhft-server-{fleet}{tag}"
    secret = hashlib.sha256(f"fedhft-server-id|{fleet}|{username}|{password}".encode()).hexdigest()[:16]
    return f"fedhft-server-{fleet}-{secret}{tag}"


class MqttTransport:
    """paho client for the coordinator: ``publish``, ``ack``, ``serve_bundle``; inbound messages
    go to ``inbox`` as ``Inbound`` values."""

    def __init__(self, url: str, fleet: str, username: str | None, password: str | None, *,
                 client_id: str | None = None, session_expiry: int = 86_400, tls_ca: str | None = None,
                 tls_cert: str | None = None, tls_key: str | None = None,
                 max_packet_size: int = 1_048_576, inbox: queue.Queue | None = None, protocol: str = "5",
                 run_id: str = ""):
        mqtt = _paho()
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        if protocol not in ("5", "3.1.1"):
            raise ValueError(f"MQTT protocol {protocol!r}: use '5' or '3.1.1' (ServerConfig.mqtt_protocol)")
        self.mqtt5 = protocol == "5"
        self.target = parse_broker_url(url)
        self.fleet, self.topics = fleet, Topics(fleet)
        self.max_packet_size = max_packet_size
        self.inbox: queue.Queue = inbox if inbox is not None else queue.Queue()
        self.connected = threading.Event()
        cid = client_id or server_client_id(fleet, username, password, run_id)
        if self.mqtt5:
            self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5,
                                      manual_ack=True)
        else:  # 3.1.1: the persistent session is a constructor flag (paho refuses clean_start there)
            self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv311,
                                      clean_session=False, manual_ack=True)
        if username is not None:
            self.client.username_pw_set(username, password)
        if self.target.tls:
            # A listener that requires client certificates never answers a CONNECT without one.
            self.client.tls_set(ca_certs=tls_ca, certfile=tls_cert, keyfile=tls_key)
        self.client.max_inflight_messages_set(100)
        will = encode(ServerStatus(fleet, "offline", None, 0.0))
        self.client.will_set(self.topics.server_status, will, qos=1, retain=True)
        self._connect_props: Properties | None = None  # 3.1.1: CONNECT has no properties
        if self.mqtt5:
            self._connect_props = Properties(PacketTypes.CONNECT)
            self._connect_props.SessionExpiryInterval = int(session_expiry)
            self._connect_props.ReceiveMaximum = RECEIVE_MAXIMUM
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self._bundle_jobs: queue.Queue = queue.Queue()
        self._bundle_thread: threading.Thread | None = None
        self.connack_error: str | None = None
        self._closing = False
        self.epoch = 0

    # -- paho callbacks (network thread: never block here) ---------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self.connack_error = str(reason_code)
            log.error("broker refused the server's connection: %s", reason_code)
            self.connected.set()
            return
        # A new connection: PUBACKs owed on the old one are void (the broker redelivers those
        # messages, with the same packet ids, and they are acked when processed again).
        self.epoch += 1
        # Subscribing again on a resumed session is harmless and covers a session the broker expired.
        client.subscribe([(t, 1) for t in self.topics.server_subscriptions()])
        log.info("connected to %s (session present: %s)", self.target, flags.session_present)
        self.connected.set()

    def _on_message(self, client, userdata, msg):
        self.inbox.put(Inbound(msg.topic, bytes(msg.payload), msg.mid, msg.qos, bool(msg.dup), self.epoch))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.connected.clear()
        if not self._closing:
            log.warning("disconnected from the broker (%s); paho reconnects with the same session", reason_code)

    # -- transport API ---------------------------------------------------------------------------------
    def connect(self, timeout: float = 10.0) -> "MqttTransport":
        # paho raises ValueError for clean_start/properties on 3.1.1: there, clean_session=False
        # (set on the Client) already asks for the persistent session.
        kwargs = {"clean_start": False, "properties": self._connect_props} if self.mqtt5 else {}
        try:
            self.client.connect(self.target.host, self.target.port, keepalive=30, **kwargs)
        except OSError as exc:  # refused, unknown host, TLS handshake: a setting to fix, not a traceback
            raise ConnectionError(f"cannot connect to the broker at {self.target}: {exc}. Is it running there, "
                                  "and is --broker right?") from None
        self.client.loop_start()
        if not self.connected.wait(timeout):
            self.close()
            raise ConnectionError(f"no CONNACK from {self.target} within {timeout}s: is the broker running there (and "
                                  "does a TLS listener want a client certificate)?")
        if self.connack_error:
            self.close()
            raise ConnectionError(f"broker {self.target} refused the server: {self.connack_error}. Check the "
                                  "credentials (server.json from fleet-init) and the broker's ACL")
        self._bundle_thread = threading.Thread(target=self._serve_bundles, name="fedhft-bundles", daemon=True)
        self._bundle_thread.start()
        return self

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        budget = payload_budget(self.max_packet_size, topic)
        if len(payload) > budget:  # paho does not enforce the broker's limit; an oversize QoS 1 loops forever
            raise ValueError(f"refusing to publish {len(payload)} bytes on {topic}: over the broker's "
                             f"max_packet_size budget {budget}; raise max_packet_size or send less")
        self.client.publish(topic, payload, qos=qos, retain=retain)

    def ack(self, mid: int, qos: int, epoch: int = 0) -> None:
        """PUBACK ``mid`` if it came on the current connection. A stale PUBACK is dangerous: once
        the redelivered copy is acked, the broker may reuse the packet id for a NEW message, which
        the stale PUBACK would then acknowledge before it was stored."""
        if qos > 0 and epoch == self.epoch:
            self.client.ack(mid, qos)

    def serve_bundle(self, client: str, chunks: Iterable[BundleChunk]) -> None:
        self._bundle_jobs.put((client, chunks))

    def _serve_bundles(self) -> None:
        while True:
            job = self._bundle_jobs.get()
            if job is None:
                return
            client, chunks = job
            try:
                self._send_chunks(client, chunks)
            except Exception as exc:  # one failed bundle transfer must not end the server
                log.error("serving a bundle to %s failed: %s", client, exc)

    def _send_chunks(self, client: str, chunks: Iterable[BundleChunk]) -> None:
        topic, window, sent = self.topics.bundle(client), [], 0
        budget = payload_budget(self.max_packet_size, topic)
        for chunk in chunks:
            info = self.client.publish(topic, encode(chunk, max_size=budget), qos=1)
            window.append(info)
            sent += 1
            if len(window) >= PUBLISH_WINDOW:  # bound paho's memory: wait for the oldest PUBACKs
                for w in window:
                    w.wait_for_publish(timeout=30)
                window = []
        log.info("sent %d bundle chunks to %s", sent, client)

    def close(self, final_status: bytes | None = None, end_session: bool = False) -> None:
        """Publish ``final_status`` (retained) and disconnect. ``end_session``: a finished run will
        not resume, so its broker session (subscriptions, and messages devices send later) is
        dropped now rather than kept for ``session_expiry`` (MQTT 5; a 3.1.1 session lasts as
        long as the broker's own setting)."""
        self._closing = True
        if final_status is not None and self.connected.is_set():
            info = self.client.publish(self.topics.server_status, final_status, qos=1, retain=True)
            info.wait_for_publish(timeout=5)
        self._bundle_jobs.put(None)
        self.client.disconnect(properties=self._end_session_props() if end_session else None)
        self.client.loop_stop()

    def _end_session_props(self):
        if not self.mqtt5:
            return None
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.DISCONNECT)
        props.SessionExpiryInterval = 0
        return props

"""The server's MQTT side: a ``fedhft.mqtt`` connection with the server's session, Last Will,
manual acks and intake queue.

* a persistent session (no clean start, a session expiry on MQTT 5; one per run, see
  ``server_client_id``): while the server is down the broker queues the devices' QoS 1 updates;
* manual acks: an update is PUBACKed only after the coordinator committed it to disk, so a crash
  before that makes the broker redeliver it (dup=True);
* ``on_message`` only enqueues; the coordinator's thread drains the queue. MQTT 5's
  ``ReceiveMaximum`` bounds the unacked messages, and so the queue;
* the Last Will is a retained ``ServerStatus(offline)`` on ``server/status``;
* bundles are served from their own thread, with flow control, so a big bundle never stalls intake.

On MQTT 3.1.1 the broker's own settings bound the session's life and the in-flight messages, and
PUBACKs carry no reason code; see docs/DESIGN-NOTES.md.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Iterable

from fedhft import mqtt as shared_mqtt
from fedhft.mqtt import (
    DEFAULT_MAX_PACKET_SIZE,
    DEFAULT_MQTT_PROTOCOL,
    SERVER_SESSION_EXPIRY_S,
    ClientSpec,
    MqttConnection,
    Will,
)
from fedhft.protocol import BundleChunk, ServerState, ServerStatus, Topics, encode

from server._coordinator import Inbound
from server._task_ids import run_tag

log = logging.getLogger("fedhft.server.mqtt")

RECEIVE_MAXIMUM = 1000  # MQTT 5 only (a CONNECT property)
MAX_INFLIGHT = 100  # our own unacked QoS 1 publishes (tasks, acks, bundle chunks)
PUBLISH_WINDOW = 32  # bundle chunks in flight before the server thread waits for PUBACKs


def server_client_id(fleet: str, username: str | None, password: str | None, run_id: str = "") -> str:
    """The server's MQTT client id (``fedhft.mqtt.server_client_id``) for the run ``run_id``
    (``Store.run_id``): a resume on the same state dir gets back the updates queued while it was
    down; a new state dir never receives what devices queued for an earlier run (a run's messages
    that still reach a later one are refused ``stale_run`` by the intake)."""
    return shared_mqtt.server_client_id(fleet, username, password, run_tag(run_id) if run_id else "")


class MqttTransport:
    """paho client for the coordinator: ``publish``, ``ack``, ``serve_bundle``; inbound messages
    go to ``inbox`` as ``Inbound`` values."""

    def __init__(
        self,
        url: str,
        fleet: str,
        username: str | None,
        password: str | None,
        *,
        client_id: str | None = None,
        session_expiry: int = SERVER_SESSION_EXPIRY_S,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        inbox: queue.Queue | None = None,
        protocol: str = DEFAULT_MQTT_PROTOCOL,
        run_id: str = "",
    ):
        self.fleet, self.topics = fleet, Topics(fleet)
        will = Will(self.topics.server_status, encode(ServerStatus(fleet, ServerState.OFFLINE, None, 0.0)))
        # The server never reads a packet limit from CONNACK: the configured one is the broker's (fleet-init).
        self.conn = MqttConnection(
            ClientSpec(
                url,
                client_id or server_client_id(fleet, username, password, run_id),
                username,
                password,
                protocol,
                tls_ca,
                tls_cert,
                tls_key,
                clean_start=False,
                session_expiry_s=session_expiry,
                receive_maximum=RECEIVE_MAXIMUM,
                manual_ack=True,
                max_inflight=MAX_INFLIGHT,
                will=will,
                max_packet_size=max_packet_size,
            )
        )
        self.client, self.target, self.mqtt5 = self.conn.paho, self.conn.target, self.conn.mqtt5
        self.inbox: queue.Queue = inbox if inbox is not None else queue.Queue()
        self.connected = threading.Event()
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
        try:
            self.conn.connect()
        except OSError as exc:  # refused, unknown host, TLS handshake: a setting to fix, not a traceback
            raise ConnectionError(
                f"cannot connect to the broker at {self.target}: {exc}. Is it running there, and is --broker right?"
            ) from None
        self.client.loop_start()
        if not self.connected.wait(timeout):
            self.close()
            raise ConnectionError(
                f"no CONNACK from {self.target} within {timeout}s: is the broker running there (and "
                "does a TLS listener want a client certificate)?"
            )
        if self.connack_error:
            self.close()
            raise ConnectionError(
                f"broker {self.target} refused the server: {self.connack_error}. Check the "
                "credentials (server.json from fleet-init) and the broker's ACL"
            )
        self._bundle_thread = threading.Thread(target=self._serve_bundles, name="fedhft-bundles", daemon=True)
        self._bundle_thread.start()
        return self

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Raises ``PayloadTooLarge`` (before sending) when ``payload`` is over the broker's packet limit."""
        self.conn.publish(topic, payload, qos=qos, retain=retain)

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
        budget = self.conn.max_payload(topic)
        for chunk in chunks:
            info = self.conn.publish(topic, encode(chunk, max_size=budget), qos=1)
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
        self.client.disconnect(properties=self.conn.disconnect_properties(end_session))
        self.client.loop_stop()

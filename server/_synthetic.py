"""Synthetic devices for tests, simulations and the scale benchmark: no training, no torch.

``synthetic_update(task)`` answers a Task with a seeded random update of exactly the shapes the
task's plan and mask imply (what a real device's ``gather_update`` produces). ``ScriptedPeer`` is
one such device over MQTT 5 (a ``fedhft.mqtt`` connection), with a Last Will and a retained status like the
real edge runtime, and hooks to misbehave (``make_payload``) for rejection tests.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from typing import Callable

import numpy as np

from devices import AdapterPlan
from fedhft.layout import ModelDims, gather_update
from fedhft.mqtt import ClientSpec, MqttConnection, Will
from fedhft.protocol import ClientStatus, Hello, ServerStatus, Task, Topics, Update, decode, encode

_LAYER = re.compile(r"layer(\d+)\.")
PEER_SESSION_EXPIRY_S = 3600  # how long the broker keeps a synthetic peer's session after it drops

#: A profile that fits every tier (the tier comes from ``tier_hint`` in tests).
DEFAULT_PROFILE = {
    "total_memory_mb": 8192.0,
    "available_memory_mb": 4096.0,
    "cpu_count": 4,
    "battery_percent": None,
    "charging": None,
    "matmul_gflops": 50.0,
    "platform": "Linux",
    "machine": "x86_64",
}


def dims_from_start(start: dict[str, np.ndarray], plan: AdapterPlan) -> ModelDims:
    """The ModelDims a task's start state implies (only the facts the layout needs)."""
    hidden = start["head.weight"].shape[1]
    layers = [int(m.group(1)) for n in start if (m := _LAYER.match(n))]
    inter = next((v.shape[0] for n, v in start.items() if n.endswith("intermediate.lora_B")), 4 * hidden)
    return ModelDims(max(layers) + 1 if layers else plan.depth, hidden, inter, start["head.weight"].shape[0])


def synthetic_update(
    task: Task,
    seed: int = 0,
    scale: float = 0.01,
    num_examples: int = 8,
    encoding: str | None = None,
    metrics: dict | None = None,
) -> Update:
    """A seeded update for ``task``: trained = start + scale * N(0, 1), masked rows only."""
    plan = AdapterPlan.from_dict(task.plan)
    dims = dims_from_start(task.start_state, plan)
    rng = np.random.default_rng([seed, task.round, sum(task.client.encode())])
    # sorted: a decoded safetensors dict comes in no fixed order, and the draws must not depend on it
    trained = {
        k: task.start_state[k] + scale * rng.standard_normal(task.start_state[k].shape).astype(np.float32)
        for k in sorted(task.start_state)
    }
    tensors = gather_update(plan, dims, task.start_state, trained, task.mask)
    metrics = {"accuracy": float(0.5 + 0.4 * rng.random()), "loss": float(rng.random())} if metrics is None else metrics
    return Update(
        task.fleet,
        task.client,
        task.round,
        task.task_id,
        num_examples,
        metrics,
        encoding or task.hyper.encoding,
        tensors,
    )


class ScriptedPeer:
    """One synthetic device over MQTT. ``make_payload(task) -> bytes | None`` replaces the honest
    update (None: stay silent); ``received`` holds every decoded message sent to the device."""

    def __init__(
        self,
        url: str,
        fleet: str,
        client: str,
        password: str,
        *,
        tier_hint: str | None = None,
        backends: tuple[str, ...] = ("torch",),
        seed: int = 0,
        delay_s: float = 0.0,
        make_payload: Callable[[Task], bytes | None] | None = None,
        auto_answer: bool = True,
    ):
        self.fleet, self.client_id, self.topics = fleet, client, Topics(fleet)
        self.tier_hint, self.backends, self.seed, self.delay_s = tier_hint, list(backends), seed, delay_s
        self.make_payload, self.auto_answer = make_payload, auto_answer
        self.received: queue.Queue = queue.Queue()
        self.tasks: list[Task] = []
        self.acks: list = []
        self.connected = threading.Event()
        # Its plain client id and a fresh session each start; a Last Will like the real edge's.
        will = Will(self.topics.status(client), encode(ClientStatus(fleet, client, "offline")))
        self.conn = MqttConnection(
            ClientSpec(
                url, client, client, password, clean_start=True, session_expiry_s=PEER_SESSION_EXPIRY_S, will=will
            )
        )
        # The raw paho client: a peer that misbehaves must be able to send what the size check refuses.
        self.mqtt = self.conn.paho
        self.mqtt.on_connect = self._on_connect
        self.mqtt.on_message = self._on_message
        self._lock = threading.Lock()
        self._server_state: str | None = None

    def start(self, timeout: float = 10.0) -> "ScriptedPeer":
        self.conn.connect()
        self.mqtt.loop_start()
        if not self.connected.wait(timeout):
            raise TimeoutError(f"{self.client_id}: no CONNACK within {timeout}s")
        return self

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        client.subscribe([(t, 1) for t in self.topics.client_subscriptions(self.client_id)])
        client.publish(
            self.topics.status(self.client_id),
            encode(ClientStatus(self.fleet, self.client_id, "online", ts=time.time())),
            qos=1,
            retain=True,
        )
        self.hello()
        self.connected.set()

    def hello(self) -> None:
        hello = Hello(self.fleet, self.client_id, dict(DEFAULT_PROFILE), self.backends, self.tier_hint, "synthetic")
        self.mqtt.publish(self.topics.hello(self.client_id), encode(hello), qos=1)

    def _on_message(self, client, userdata, msg):
        try:
            message = decode(msg.payload)
        except Exception as exc:  # a test asserts on what arrived; keep the error as the value
            message = exc
        self.received.put(message)
        if isinstance(message, ServerStatus):
            # A server that (re)starts may have missed our hello (it had no subscription yet, or
            # lost its session): say hello again whenever it comes (back) up.
            if message.state == "running" and self._server_state != "running":
                self.hello()
            self._server_state = message.state
        elif isinstance(message, Task):
            with self._lock:
                if any(t.task_id == message.task_id for t in self.tasks):
                    return  # a re-sent task: answered already (the server dedupes updates anyway)
                self.tasks.append(message)
            if self.auto_answer:
                threading.Thread(target=self.answer, args=(message,), daemon=True).start()
        elif type(message).__name__ == "Ack":
            self.acks.append(message)

    def answer(self, task: Task) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)
        payload = self.make_payload(task) if self.make_payload else encode(synthetic_update(task, self.seed))
        if payload is not None:
            self.publish_update(payload)

    def publish_update(self, payload: bytes):
        return self.mqtt.publish(self.topics.update(self.client_id), payload, qos=1)

    def stop(self) -> None:
        self.mqtt.disconnect()
        self.mqtt.loop_stop()

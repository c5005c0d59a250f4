"""Helpers for the server unit tests: fake bundles (manifests only), a recording transport."""

from __future__ import annotations

from pathlib import Path

from devices import AdapterPlan
from fedhft.layout import ModelDims
from fedhft.manifest import Manifest, write_manifest
from fedhft.protocol import Task, decode, encode

from server import Coordinator, Inbound, ServerConfig, Store, synthetic_update

DIMS = ModelDims(num_layers=3, hidden=16, intermediate=32, num_labels=2)
PLANS = {
    "small": AdapterPlan(depth=1, ranks=(2,), mask_density=0.25, batch_size=4, max_seq_len=16),
    "medium": AdapterPlan(depth=2, ranks=(2, 4), mask_density=0.5, batch_size=4, max_seq_len=16),
    "large": AdapterPlan(depth=3, ranks=(2, 4, 4), mask_density=1.0, batch_size=4, max_seq_len=16),
}
TIER_OF = {"dev-000": "small", "dev-001": "medium", "dev-002": "large"}


def fake_bundles(root: Path, backends=("torch",), models: dict | None = None) -> Path:
    """Manifests without files: enough for the server (which never opens a model).
    ``models``: tier -> (base model id, ModelDims) for multi-backbone fleets."""
    for tier, plan in PLANS.items():
        model_id, dims = (models or {}).get(tier, ("tiny", DIMS))
        for backend in backends:
            d = root / tier / backend
            d.mkdir(parents=True, exist_ok=True)
            write_manifest(d, Manifest(backend, tier, plan, dims, model_id, "0" * 64, (), {}))
    return root


class FakeTransport:
    """Records what the coordinator publishes and acknowledges."""

    def __init__(self):
        self.published: list[tuple[str, bytes, bool]] = []
        self.acked: list[int] = []
        self.bundles: list = []

    def publish(self, topic, payload, qos=1, retain=False):
        self.published.append((topic, payload, retain))

    def ack(self, mid, qos, epoch=0):
        self.acked.append(mid)

    def serve_bundle(self, client, chunks):
        self.bundles.append((client, list(chunks)))

    def messages(self, kind: str) -> list:
        return [decode(p) for t, p, _ in self.published if t.endswith("/" + kind)]

    def tasks(self) -> list[Task]:
        return self.messages("task")


def make_config(bundles: Path, **kw) -> ServerConfig:
    base = dict(
        fleet="test",
        bundles_dir=str(bundles),
        strategy="fedavg-lora",
        rounds=2,
        clients_per_round=3,
        min_clients=3,
        round_deadline_s=60,
        update_encoding="fp32",
        norm_bound=100.0,
        seed=1,
    )
    base.update(kw)
    return ServerConfig(**base)


def hello_payload(client: str, tier: str | None = None, backends=("torch",), battery=None) -> bytes:
    from fedhft.protocol import Hello
    from server import SYNTHETIC_PROFILE

    profile = dict(SYNTHETIC_PROFILE, battery_percent=battery, charging=False if battery is not None else None)
    return encode(Hello("test", client, profile, list(backends), tier or TIER_OF.get(client), "test"))


class Harness:
    """A coordinator on a fake transport with a controllable clock."""

    def __init__(self, state: Path, config: ServerConfig):
        self.now = 1000.0
        self.transport = FakeTransport()
        self.store = Store(state)
        from server import BundleIndex

        self.coord = Coordinator(
            config, self.store, BundleIndex.scan(config.bundles_dir), self.transport, clock=lambda: self.now
        )
        self.mid = 0
        self.coord.resume()

    def send(self, client: str, kind: str, payload: bytes) -> int:
        self.mid += 1
        self.coord.handle([Inbound(f"fedhft/v1/test/from/{client}/{kind}", payload, self.mid, 1)])
        return self.mid

    def join(self, clients=("dev-000", "dev-001", "dev-002")) -> None:
        for c in clients:
            self.send(c, "hello", hello_payload(c))
        self.coord.tick()

    def open_tasks(self) -> dict[str, Task]:
        self.coord.tick()  # a committed round's successor opens on the next tick
        r = self.coord.round
        return {t.client: t for t in self.transport.tasks() if r is not None and t.round == r.idx}

    def answer(self, task: Task, **kw) -> int:
        return self.send(task.client, "update", encode(synthetic_update(task, **kw)))

"""A device the registry marks not taskable (invalid profile) is never selected, even with a tier
hint that gives it a tier and a backend, and even after a restart replays its retained status."""

from __future__ import annotations

import pytest

from fedhft.protocol import ClientStatus, Hello, encode
from server import BundleIndex, Registry, Store

from .server_fakes import TIER_OF, Harness, fake_bundles, make_config

#: A profile DeviceProfile.from_dict refuses (a field of the wrong type).
BAD_PROFILE = {
    "total_memory_mb": "lots",
    "available_memory_mb": 1.0,
    "cpu_count": 1,
    "battery_percent": None,
    "charging": None,
    "matmul_gflops": 1.0,
    "platform": "Linux",
    "machine": "x86_64",
}


def _bad_hello(client: str) -> bytes:
    return encode(Hello("test", client, BAD_PROFILE, ["torch"], TIER_OF[client], "test"))


@pytest.fixture
def bundles(tmp_path):
    return fake_bundles(tmp_path / "bundles")


def test_invalid_profile_with_a_tier_hint_is_not_tasked(tmp_path, bundles):
    from .server_fakes import hello_payload

    h = Harness(tmp_path / "state", make_config(bundles, rounds=1, min_clients=2))
    h.send("dev-000", "hello", hello_payload("dev-000"))
    h.send("dev-001", "hello", hello_payload("dev-001"))
    h.send("dev-002", "hello", _bad_hello("dev-002"))
    entry = h.coord.registry.clients["dev-002"]
    assert entry.tier == "large" and entry.backend == "torch"  # the hint alone would have sufficed before
    assert not entry.taskable and "profile" in entry.problems[0]
    h.coord.tick()
    assert sorted(h.open_tasks()) == ["dev-000", "dev-001"]
    assert not [t for t in h.transport.tasks() if t.client == "dev-002"]


def test_only_non_taskable_devices_start_no_round(tmp_path, bundles):
    h = Harness(tmp_path / "state", make_config(bundles, rounds=1, min_clients=1))
    h.send("dev-002", "hello", _bad_hello("dev-002"))
    h.coord.tick()
    assert h.coord.round is None and h.transport.tasks() == []


def test_a_restart_keeps_a_bad_profile_not_taskable(tmp_path, bundles):
    index = BundleIndex.scan(bundles)
    registry = Registry(Store(tmp_path / "s"), index)
    registry.hello(Hello("test", "dev-002", BAD_PROFILE, ["torch"], "large", "t"), 1.0)
    again = Registry(registry.store, index)  # the server restarted
    again.status(ClientStatus("test", "dev-002", "online"), 2.0)  # the broker replays the retained status
    entry = again.clients["dev-002"]
    assert entry.online and entry.tier == "large" and not entry.taskable
    assert again.eligible(0.0) == []

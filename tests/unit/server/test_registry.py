"""Registry: tier and backend from the hello, liveness from the retained status, eligibility."""

from __future__ import annotations

import pytest

from fedhft.protocol import ClientStatus, Hello
from server import SYNTHETIC_PROFILE, BundleIndex, Registry, Store

from .server_fakes import fake_bundles


@pytest.fixture
def registry(tmp_path):
    bundles = BundleIndex.scan(fake_bundles(tmp_path / "b", backends=("torch", "ort")))
    return Registry(Store(tmp_path / "s"), bundles, "planner")


def _hello(client="dev-1", hint=None, backends=("torch",), **profile):
    return Hello("test", client, dict(SYNTHETIC_PROFILE, **profile), list(backends), hint, "t")


def test_tier_hint_wins_when_exported(registry):
    assert registry.hello(_hello(hint="small"), 1.0).tier == "small"


def test_backend_is_the_devices_first_choice_that_was_exported(registry):
    entry = registry.hello(_hello(hint="medium", backends=("executorch", "ort", "torch")), 1.0)
    assert entry.backend == "ort"
    assert registry.hello(_hello("dev-2", hint="medium", backends=("executorch",)), 1.0).backend is None


@pytest.mark.parametrize("memory_mb, want", [(16_000.0, "large"), (1.0, None)])
def test_planner_picks_the_largest_tier_that_fits(registry, memory_mb, want):
    entry = registry.hello(_hello(available_memory_mb=memory_mb, total_memory_mb=max(memory_mb, 2.0)), 1.0)
    assert entry.tier == want
    assert entry.eligible(20.0) is (want is not None)


def test_bad_profile_without_hint_is_registered_but_not_eligible(registry):
    entry = registry.hello(Hello("test", "dev-x", {"nonsense": 1}, ["torch"], None, "t"), 1.0)
    assert entry.tier is None and not entry.eligible(20.0) and entry.problems


def test_status_offline_and_battery(registry):
    registry.hello(_hello(hint="small"), 1.0)
    registry.status(ClientStatus("test", "dev-1", "online", battery_percent=10.0), 2.0)
    assert registry.clients["dev-1"].battery == pytest.approx(10.0)
    assert registry.store.clients()[0].battery == pytest.approx(10.0)  # stored as a percent too
    assert registry.eligible(20.0) == [] and len(registry.eligible(5.0)) == 1
    registry.status(ClientStatus("test", "dev-1", "offline"), 3.0)
    assert registry.eligible(5.0) == []
    assert registry.status(ClientStatus("test", "never-said-hello", "online"), 3.0) is None


def test_registry_reloads_everyone_offline(tmp_path, registry):
    registry.hello(_hello(hint="small"), 1.0)
    again = Registry(registry.store, registry.bundles)
    assert again.clients["dev-1"].tier == "small" and not again.clients["dev-1"].online


def test_catalog_tier_battery_threshold_overrides_the_servers(tmp_path):
    from fedhft.manifest import Manifest, write_manifest

    from .server_fakes import DIMS, PLANS

    root = tmp_path / "b"
    for tier in ("android-low", "rpi5"):  # catalog thresholds: 40 % and 0 %
        (root / tier / "torch").mkdir(parents=True)
        write_manifest(root / tier / "torch", Manifest("torch", tier, PLANS["small"], DIMS, "t", "0" * 64, (), {}))
    reg = Registry(Store(tmp_path / "s"), BundleIndex.scan(root), "catalog")
    reg.hello(_hello("phone", hint="android-low", battery_percent=30.0, charging=False), 1.0)
    reg.hello(_hello("board", hint="rpi5", battery_percent=5.0, charging=False), 1.0)
    assert [c.client for c in reg.eligible(battery_threshold=20.0)] == ["board"]

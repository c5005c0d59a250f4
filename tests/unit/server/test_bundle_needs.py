"""A bundle is what it compiles (plan + backend + base model), not the tier it was exported for.

A strategy that gives a device another tier's plan (FedAvg-LoRA) must be served that plan's
bundle for the device's own backend; the bundles a fleet needs are known before it starts, and a
server that lacks one refuses to start, naming it.
"""

from __future__ import annotations

import pytest

from fedhft.manifest import BundleError, Manifest, write_manifest
from fedhft.protocol import Task

from server import STRATEGIES, BundleIndex, needed_bundles
from server._run import refuse_missing_bundles
from tests.unit.server.server_fakes import DIMS, PLANS, Harness, hello_payload, make_config

#: A mixed-backend fleet: each tier's devices run one backend.
FLEET = {"small": "executorch", "medium": "ort", "large": "torch"}


def _export(root, pairs) -> None:
    """Manifests only, for the (tier whose plan it is, backend) pairs."""
    for tier, backend in pairs:
        d = root / tier / backend
        d.mkdir(parents=True, exist_ok=True)
        write_manifest(d, Manifest(backend, tier, PLANS[tier], DIMS, "tiny", "0" * 64, (), {}))


def _needs(strategy: str) -> set[tuple[str, str, tuple[str, ...]]]:
    got = needed_bundles(strategy, {}, PLANS, {t: [b] for t, b in FLEET.items()})
    return {(n.tier, n.backend, n.for_tiers) for n in got}


def test_fedavg_needs_the_cheapest_plan_on_every_backend_of_the_fleet():
    assert _needs("fedavg-lora") == {
        ("small", "executorch", ("small",)),
        ("medium", "ort", ("medium",)),
        ("large", "torch", ("large",)),
        ("small", "ort", ("medium",)),
        ("small", "torch", ("large",)),
    }


@pytest.mark.parametrize("strategy", sorted(set(STRATEGIES) - {"fedavg-lora"}))
def test_other_strategies_need_each_tiers_own_bundle(strategy):
    assert _needs(strategy) == {(t, b, (t,)) for t, b in FLEET.items()}


def test_a_plan_from_the_options_gets_its_own_folder_name():
    custom = {"depth": 1, "ranks": [3], "mask_density": 1.0, "batch_size": 4, "max_seq_len": 16}
    got = needed_bundles("fedavg-lora", {"plan": custom}, PLANS, {"large": ["torch"]})
    names = sorted(n.tier for n in got)
    assert len(names) == 2 and names[0].startswith("custom-") and names[1] == "large"


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        needed_bundles("nope", {}, PLANS, {"small": ["torch"]})


def test_find_serves_another_tiers_plan_for_the_devices_backend(tmp_path):
    _export(tmp_path, [*FLEET.items(), ("small", "ort"), ("small", "torch")])
    index = BundleIndex.scan(tmp_path)
    got = index.find(PLANS["small"], "ort", "medium")
    assert (got.tier, got.backend) == ("small", "ort")
    assert index.find(PLANS["medium"], "ort", "medium").tier == "medium"
    assert index.missing("fedavg-lora", {}) == []


def test_find_names_the_missing_bundle_and_the_export_command(tmp_path):
    _export(tmp_path, FLEET.items())
    index = BundleIndex.scan(tmp_path)
    with pytest.raises(BundleError) as err:
        index.find(PLANS["small"], "ort", "medium")
    assert "--tier small --backend ort" in str(err.value)


def test_server_refuses_to_start_naming_every_missing_bundle(tmp_path):
    _export(tmp_path, FLEET.items())
    index = BundleIndex.scan(tmp_path)
    with pytest.raises(BundleError) as err:
        refuse_missing_bundles(index, make_config(tmp_path, strategy="fedavg-lora"))
    text = str(err.value)
    assert "needs 2 bundle(s)" in text
    assert "--tier small --backend ort" in text and "--tier small --backend torch" in text
    refuse_missing_bundles(index, make_config(tmp_path, strategy="hetlora"))  # own plans only: starts


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_tasks_every_device_of_a_mixed_backend_fleet(tmp_path, strategy):
    """The coordinator hands every device a bundle of its own backend that compiles its plan."""
    bundles = tmp_path / "bundles"
    _export(
        bundles, [(n.tier, n.backend) for n in needed_bundles(strategy, {}, PLANS, {t: [b] for t, b in FLEET.items()})]
    )
    h = Harness(tmp_path / "state", make_config(bundles, strategy=strategy, rounds=1))
    for client, tier in {"dev-000": "small", "dev-001": "medium", "dev-002": "large"}.items():
        h.send(client, "hello", hello_payload(client, tier=tier, backends=(FLEET[tier],)))
    tasks: dict[str, Task] = h.open_tasks()
    assert sorted(tasks) == ["dev-000", "dev-001", "dev-002"]
    index = BundleIndex.scan(bundles)
    for task in tasks.values():
        info = index.by_id[task.bundle_id]
        assert info.backend == FLEET[task.tier] == task.backend
        assert info.plan.to_dict() == task.plan
    assert set(h.coord.round.status.values()) == {"tasked"}  # no task failed for want of a bundle

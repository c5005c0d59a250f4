"""Every strategy on a mixed-backend fleet: ExecuTorch (android-mid), ONNX Runtime (rpi5) and
torch (jetson-orin-nano) devices, a real Mosquitto, the real server and edge processes, tiny model.

Strategies may assign a device another tier's plan (FedAvg-LoRA trains everyone on the cheapest
plan); the simulation must export that plan for every backend that trains it, so every selected
client stores an update in every round.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server import STRATEGIES
from simulate import SimConfig, run_simulation
from tests.integration._sim_helpers import pid_gone, write_toy_sentiment

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.requires("mosquitto", "onnxruntime", "executorch")]

TIERS = ["android-mid", "rpi5", "jetson-orin-nano"]
#: Small clustered settings so that FedHFT clusters in round 1 of 2.
OPTIONS = {"fedhft": {"num_clusters": 2}}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mixed-bundle-cache")


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_client_stores_every_round(tmp_path, cache, strategy):
    cfg = SimConfig(
        model="tiny",
        clients=3,
        rounds=2,
        tiers=TIERS,
        backend="default",
        strategy=strategy,
        strategy_options=OPTIONS.get(strategy, {}),
        warmup_rounds=1,
        dataset=str(write_toy_sentiment(tmp_path / "toy.jsonl", 120)),
        train_size=0,
        test_size=0,
        local_steps=2,
        lr=0.02,
        max_seq_len=16,
        memory_budget="off",
        bundle_cache=str(cache),
        out=str(tmp_path / "run"),
        progress=False,
        broker="mosquitto",
        join_timeout_s=240.0,
    )
    result = run_simulation(cfg, say=lambda m: None)
    assert result.error is None, result.error
    out = json.loads((result.run_dir / "results.json").read_text())
    assert out["backend_of_tier"] == {"android-mid": "executorch", "rpi5": "ort", "jetson-orin-nano": "torch"}
    assert len(result.rounds) == 2, result.rounds
    for r in result.rounds:
        assert r["selected"] == 3 and r["stored"] == 3, (strategy, r)  # every client stored, on every backend
        assert r["outcomes"] == {} and r["rejections"] == {} and r["dropped"] == 0, (strategy, r)
    pids = json.loads((result.run_dir / "pids.json").read_text())
    assert all(pid_gone(p) for p in pids.values()), pids

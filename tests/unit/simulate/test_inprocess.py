"""InProcessEngine without a broker: set-up errors, the server's state layout, shared sessions,
explicit evaluation sets and battery eligibility. (Parity with the MQTT engine:
tests/integration/test_engine_parity.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.integration._sim_helpers import write_toy_sentiment

TIERS = ["rpi5", "jetson-orin-nano", "android-mid"]  # int8 and fp32 backbones; battery thresholds 0, 0, 30 %


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    from devices import load_catalog
    from simulate import fit_plan
    from simulate._bundles import ensure_bundle, link_bundles

    tmp = tmp_path_factory.mktemp("inproc-bundles")
    links = {}
    for tier in TIERS:
        plan = fit_plan(load_catalog()[tier].plan, 2, 16, 8)
        links[(tier, "torch")], _ = ensure_bundle(
            "tiny", "tiny", 2, tier, plan, "torch", tmp / "cache", say=lambda line: None
        )
    return link_bundles(tmp / "bundles", links)


def _cfg(**kw):
    from simulate import SimConfig

    base = dict(
        model="tiny",
        clients=2,
        rounds=2,
        tiers=TIERS,
        backend="torch",
        memory_budget="off",
        local_steps=3,
        lr=0.02,
        max_seq_len=16,
        strategy="hetlora",
        seed=1,
        progress=False,
    )
    base.update(kw)
    return SimConfig(**base)


def _devices(tmp: Path, n: int = 2, rows: int = 40, eval_rows: int = 0, tiers=TIERS[:2]):
    from simulate._inprocess import Device

    out = []
    for i in range(n):
        data = write_toy_sentiment(tmp / f"dev-{i}.jsonl", rows)
        extra = write_toy_sentiment(tmp / f"dev-{i}-eval.jsonl", eval_rows) if eval_rows else None
        out.append(Device(f"dev-{i:03d}", tiers[i % len(tiers)], "torch", data, extra))
    return out


def test_every_bad_device_is_reported_before_anything_runs(tmp_path, bundles):
    from simulate import InProcessEngine
    from simulate._inprocess import Device, EngineError

    good = write_toy_sentiment(tmp_path / "ok.jsonl", 10)
    devices = [
        Device("a", "android-low", "torch", good),
        Device("b", "rpi5", "ort", good),
        Device("c", "rpi5", "torch", tmp_path / "missing.jsonl"),
        Device("c", "rpi5", "torch", good),
    ]
    with pytest.raises(EngineError) as err:
        InProcessEngine(_cfg(clients=3), devices, bundles)
    text = str(err.value)
    assert "a: tier 'android-low' has no bundle" in text and "b: tier rpi5 is exported for ['torch'], not 'ort'" in text
    assert "missing.jsonl" in text and "4 devices (3 distinct ids) for clients=3" in text


def test_a_run_writes_what_the_evaluator_reads_and_shares_one_session_per_bundle(tmp_path, bundles):
    from simulate import EncodedSet, Evaluator, InProcessEngine
    from simulate._evaluate import evaluate_round

    rng = np.random.default_rng(0)
    test = EncodedSet(
        rng.integers(1000, 3000, (12, 16)).astype(np.int64), np.ones((12, 16), np.int64), np.arange(12) % 2
    )
    engine = InProcessEngine(
        _cfg(clients=4),
        _devices(tmp_path, 4),
        bundles,
        state_dir=tmp_path / "state",
        test=test,
        say=lambda line: None,
        workers=1,
    )
    result = engine.run()
    assert [r["stored"] for r in result.rounds] == [4, 4] and not result.interrupted
    assert sorted(b for b, _ in engine.sessions) == sorted(bundles / t / "torch" for t in TIERS[:2])  # 2 bundles
    lines = [json.loads(x) for x in (tmp_path / "state" / "metrics.jsonl").read_text().splitlines()]
    evaluation = {"accuracy", "eval_s", "pred_hist"}
    assert lines == [{k: v for k, v in r.items() if k not in evaluation} for r in result.rounds]
    ev = Evaluator("tiny", threads=1)
    for r in result.rounds:
        assert evaluate_round(ev, tmp_path / "state", r["round"], test)["accuracy"] == r["accuracy"]
    assert len(result.records) == 8 and {r["status"] for r in result.records} == {"stored"}
    assert all(r["metrics"]["steps"] == 3.0 for r in result.records)


def test_an_explicit_evaluation_set_leaves_all_local_data_for_training(tmp_path, bundles):
    from simulate import InProcessEngine

    def used(devices) -> set[float]:
        result = InProcessEngine(_cfg(rounds=1, local_steps=4), devices, bundles, say=lambda line: None).run()
        return {r["metrics"]["examples_used"] for r in result.records}

    # 20 rows: the device's own split keeps 3 for validation; 4 steps (a probe step of 2, then 3 of 8) see the rest
    assert used(_devices(tmp_path, rows=20)) == {17.0}
    assert used(_devices(tmp_path, rows=20, eval_rows=6)) == {20.0}


def test_a_device_below_its_tiers_battery_threshold_stops_the_run_with_the_reason(tmp_path, bundles):
    from simulate import InProcessEngine
    from simulate._inprocess import EngineError

    low = _cfg(battery="level=10,drain_per_step=0,charging=0")
    line, _, _ = InProcessEngine(low, _devices(tmp_path), bundles, say=lambda line: None).run_round(0)
    assert line["stored"] == 2  # rpi5 and jetson-orin-nano have a 0 % threshold in the catalog: they train at 10 %
    engine = InProcessEngine(low, _devices(tmp_path, tiers=["android-mid", "rpi5"]), bundles, say=lambda line: None)
    with pytest.raises(EngineError, match="round 0: 1 of 2 devices are eligible"):  # android-mid stops at 30 %
        engine.run_round(0)

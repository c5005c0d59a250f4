"""``fedhft simulate engine=...``: the settings each engine refuses, and the outputs of a run whose
client records come from the engine (the in-process engine has no SQLite)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedhft.config import ConfigError
from simulate import Dataset, Example, SimConfig, SimResult, load_sim_config
from simulate._prepare import PreparedData
from simulate._report import tier_stats, write_outputs
from simulate._status import RunStatus, classify_run


def test_the_default_engine_is_mqtt_and_inprocess_takes_the_default_memory_budget():
    assert SimConfig().engine == "mqtt"
    cfg = load_sim_config(None, ["engine=inprocess", "engine_threads=2"])
    assert cfg.engine == "inprocess" and cfg.engine_threads == 2 and cfg.memory_budget == "tier+384"
    assert load_sim_config(None, ["engine=inprocess", "memory_budget=off"]).memory_budget == "off"


def test_every_setting_inprocess_would_ignore_is_refused_at_once_with_the_fix():
    with pytest.raises(ConfigError) as err:
        load_sim_config(
            None,
            [
                "engine=inprocess",
                "broker=mosquitto",
                "memory_budget=tier",
                "mqtt_protocol=5",
                "provision_bundles=false",
                "engine_threads=0",
                "alpha=0",
            ],
        )
    text = str(err.value)
    for part in (
        "memory_budget=tier",
        "broker=mosquitto",
        "mqtt_protocol=5",
        "provision_bundles=False",
        "drop these settings, or use engine=mqtt",
        "engine_threads=0: use >= 1",
        "alpha=0",
    ):
        assert part in text, (part, text)


def test_an_unknown_engine_and_engine_threads_on_mqtt_are_refused():
    with pytest.raises(ConfigError, match=r"engine='grpc': use one of \['mqtt', 'inprocess'\]"):
        load_sim_config(None, ["engine=grpc"])
    with pytest.raises(ConfigError, match="engine_threads=2 applies to engine=inprocess"):
        load_sim_config(None, ["engine_threads=2"])


def test_a_budget_that_is_off_is_no_budget_in_the_tier_stats():
    rec = {
        "round": 0,
        "client": "a",
        "tier": "rpi5",
        "backend": "torch",
        "status": "stored",
        "bytes": 10,
        "metrics": {"peak_rss_mb": 500.0, "memory_budget_mb": 1e6},
    }
    assert tier_stats([rec])["rpi5"]["budget_mb"] is None  # memory_budget=off: not a line at 1e6 MB
    rec["metrics"]["memory_budget_mb"] = 640.0
    assert tier_stats([rec])["rpi5"]["budget_mb"] == 640.0


def _records() -> list[dict]:
    """Two rounds of three clients, as InProcessEngine reports them; dev-2 misses round 1's deadline."""
    out = []
    for r in range(2):
        for c, tier in (("dev-0", "rpi5"), ("dev-1", "jetson-orin-nano"), ("dev-2", "android-mid")):
            failed = r == 1 and c == "dev-2"
            out.append(
                {
                    "round": r,
                    "client": c,
                    "tier": tier,
                    "backend": "torch",
                    "status": "outcome" if failed else "stored",
                    "bytes": None if failed else 1000,
                    "num_examples": None if failed else 20,
                    "metrics": {"step_time_median_s": 0.01},
                    "outcome": "deadline" if failed else None,
                    "reason": "the round deadline would be missed" if failed else None,
                }
            )
    return out


def test_outputs_of_an_inprocess_run_come_from_its_records_and_name_the_engine(tmp_path):
    run = tmp_path / "run"
    (run / "server").mkdir(parents=True)  # no server.sqlite: the records are passed in
    cfg = SimConfig(model="tiny", clients=3, rounds=2, out=str(run), engine="inprocess", memory_budget="off")
    rounds = [
        {
            "round": i,
            "selected": 3,
            "stored": 3 - i,
            "accuracy": 0.6 + 0.1 * i,
            "bytes_up": 3000,
            "bytes_down": 100,
            "outcomes": {"deadline": 1} if i else {},
        }
        for i in range(2)
    ]
    records = _records()
    verdict = classify_run(records, rounds, 2)
    assert verdict.status is RunStatus.DEGRADED and verdict.by_reason() == {"deadline": {"android-mid": 1}}
    result = SimResult(run, verdict.status, rounds, 5.0, {"export_s": 1.0, "federated_s": 2.0}, None, verdict)
    ds = Dataset("toy", [Example("a", 0)], [Example("b", 1)], ["neg", "pos"])
    data = PreparedData(ds, {}, {"dev-0": 5, "dev-1": 5, "dev-2": 5}, None, {}, ds.test, run / "test.jsonl")
    out = write_outputs(cfg, result, data, {"dev-0": "rpi5"}, {"rpi5": "torch"}, "none", None, [], records=records)
    assert out["engine"] == "inprocess" and out["status"] == "degraded" and out["broker"] == "none"
    assert out["tiers"]["android-mid"] == dict(out["tiers"]["android-mid"], tasks=2, stored=1, outcomes={"deadline": 1})
    assert [json.loads(x) for x in (run / "clients.jsonl").read_text().splitlines()] == records
    report = (run / "report.md").read_text()
    assert report.startswith("# fedhft simulation: fedhft on toy (in-process engine)")
    assert "- engine: inprocess" in report and "engine=inprocess: no broker and no device processes" in report
    assert "| dev-2 | android-mid | torch | 1 (1) | deadline x1 |" in report
    assert "logs/server.log" not in report  # no process, no log: the report points at clients.jsonl
    assert verdict.summary(run).endswith(f"details: {Path(run) / 'report.md'}")

"""Report generation from a fake server state dir, and reading every strategy's state format."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from simulate import Dataset, Example, SimConfig, SimResult, memberships
from simulate._evaluate import dense_state
from simulate._prepare import PreparedData
from simulate._report import tier_stats, write_outputs
from simulate._monitor import client_rounds
from simulate._status import classify_run

RNG = np.random.default_rng(0)


def _ab(r, out_f=6, in_f=4):
    return RNG.standard_normal((r, in_f)).astype(np.float32), RNG.standard_normal((out_f, r)).astype(np.float32)


HEAD = {"head.weight": np.ones((2, 4), np.float32), "head.bias": np.zeros(2, np.float32)}


def test_dense_state_fedhft_delta():
    dw = RNG.standard_normal((6, 4)).astype(np.float32)
    deltas, hw, hb = dense_state({"layer1.query.delta": dw, **HEAD}, num_layers=2)
    assert set(deltas) == {(1, "query")} and np.allclose(deltas[(1, "query")], dw)
    assert hw.shape == (2, 4) and hb.shape == (2,)


def test_dense_state_folded_and_fedavg_factors():
    a, b = _ab(4)
    folded, _, _ = dense_state({"layer0.value.lora_A": a, "layer0.value.lora_B": b, **HEAD}, 2)
    assert np.allclose(folded[(0, "value")], b @ a, atol=1e-5)
    raw, _, _ = dense_state({"layer0.value.lora_A": a, "layer0.value.lora_B": b, **HEAD}, 2, fedavg_alpha=16.0)
    assert np.allclose(raw[(0, "value")], 4.0 * (b @ a), atol=1e-4)  # alpha / r = 16 / 4


def test_dense_state_heterotune_shared_plus_backbone_branch():
    (a1, b1), (a2, b2) = _ab(2), _ab(2)
    state = {
        "shared/top0.query.6x4.lora_A": a1,
        "shared/top0.query.6x4.lora_B": b1,
        "bb/default/layer1.query.lora_A": a2,
        "bb/default/layer1.query.lora_B": b2,
        "bb/default/head.weight": HEAD["head.weight"],
        "bb/default/head.bias": HEAD["head.bias"],
    }
    deltas, _, _ = dense_state(state, num_layers=2)
    assert set(deltas) == {(1, "query")}  # top0 of a 2-layer model is layer 1
    assert np.allclose(deltas[(1, "query")], b1 @ a1 + b2 @ a2, atol=1e-5)


def test_dense_state_without_head_names_the_fix():
    with pytest.raises(ValueError, match="_evaluate.py"):
        dense_state({"layer0.query.delta": np.zeros((2, 2))}, 1)


def _fake_state_dir(state: Path) -> None:
    from safetensors.numpy import save_file

    (state / "states").mkdir(parents=True)
    lines = [
        {
            "round": i,
            "selected": 3,
            "stored": 2 + (i > 0),
            "bytes_up": 1000 * (i + 1),
            "bytes_down": 5000,
            "round_s": 10.0 + i,
            "aggregation_s": 0.01,
            "rejections": {},
            "outcomes": {"over_budget": 1} if i == 0 else {},
            "cluster_sizes": [2, 1],
            "personalized": {
                "clients": 2 + (i > 0),
                "acc_before": 0.5,
                "acc_after": 0.8 - 0.1 * i,
                "bal_acc_after": 0.6,
                "worst10_acc_after": 0.4,
                "majority_acc": 0.7,
            },
        }
        for i in range(2)
    ]
    (state / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    db = sqlite3.connect(state / "server.sqlite")
    db.executescript(
        "CREATE TABLE clients (client TEXT); CREATE TABLE client_rounds (round INTEGER, client TEXT, "
        "task_id TEXT, tier TEXT, backend TEXT, assignment_digest TEXT, status TEXT, update_digest TEXT, "
        "bytes INTEGER, num_examples INTEGER, metrics TEXT, outcome TEXT, reason TEXT, ts REAL);"
    )
    for r in range(2):
        for c, tier, status in (
            ("dev-0", "rpi5", "stored"),
            ("dev-1", "jetson-orin-nano", "stored"),
            ("dev-2", "android-mid", "outcome" if r == 0 else "stored"),
        ):
            m = {"peak_rss_mb": 300.0 + r, "step_time_median_s": 0.2, "memory_budget_mb": 640.0}
            db.execute(
                "INSERT INTO client_rounds (round, client, tier, backend, status, bytes, metrics, outcome) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (r, c, tier, "torch", status, 1000, json.dumps(m), "over_budget" if status == "outcome" else None),
            )
    db.commit()
    db.close()
    meta = {"fedhft_meta": json.dumps({"clients": ["dev-0", "dev-1", "dev-2"], "strategy": "fedhft"})}
    save_file(
        {"clients/membership": np.asarray([[0.9, 0.1], [0.2, 0.8], [1.0, 0.0]])},
        str(state / "states" / "strategy-r00001.safetensors"),
        metadata=meta,
    )


def test_report_from_fake_metrics(tmp_path):
    run = tmp_path / "run"
    _fake_state_dir(run / "server")
    cfg = SimConfig(model="tiny", clients=3, rounds=2, out=str(run))
    rounds = [
        dict(json.loads(line), accuracy=0.6 + 0.1 * i)
        for i, line in enumerate((run / "server" / "metrics.jsonl").read_text().splitlines())
    ]
    verdict = classify_run(client_rounds(run / "server"), rounds, 2)
    result = SimResult(run, verdict.status, rounds, 12.0, {"export_s": 1.0, "federated_s": 10.0}, None, verdict)
    ds = Dataset("toy", [Example("a", 0)], [Example("b", 1)], ["neg", "pos"])
    data = PreparedData(
        ds,
        {},
        {"dev-0": 5, "dev-1": 5, "dev-2": 5},
        {"dev-0": "x", "dev-1": "y", "dev-2": "x"},
        {},
        ds.test,
        run / "test.jsonl",
    )
    out = write_outputs(cfg, result, data, {"dev-0": "rpi5"}, {"rpi5": "torch"}, "mosquitto", None, [1, 2])
    for name in (
        "results.json",
        "rounds.jsonl",
        "clients.jsonl",
        "report.md",
        "accuracy_vs_round.png",
        "accuracy_vs_bytes.png",
        "tiers.png",
        "clusters.png",
    ):
        assert (run / name).is_file(), name
    report = (run / "report.md").read_text()
    assert "| 1 | 0.700 | 3/3 | 2,000 | 5,000 |" in report and "android-mid" in report and "over_budget" in report
    results = json.loads((run / "results.json").read_text())
    assert results["final_accuracy"] == pytest.approx(0.7)
    # dev-2 (android-mid) skipped round 0 over budget: the run is degraded, and the report says who and why.
    assert results["status"] == "degraded" and results["ok"] is False
    assert results["failures"]["failures_by_reason"] == {"over_budget": {"android-mid": 1}}
    assert "- status: **degraded: 1 of 6 client-rounds did not store: over_budget x1 (android-mid x1)**" in report
    assert "## Failures" in report and "| dev-2 | android-mid | torch | 1 (0) | over_budget x1 |" in report
    assert out["memberships"]["dev-1"] == [0.2, 0.8]
    # both metrics, final and best over rounds; the personalized table per round
    assert results["headline"]["global_accuracy"] == {"final": pytest.approx(0.7), "best": pytest.approx(0.7)}
    assert results["headline"]["personalized_acc_after"] == {"final": pytest.approx(0.7), "best": pytest.approx(0.8)}
    assert "## Personalized accuracy" in report and "| 0 | 2 | 0.500 | 0.800 | 0.600 | 0.400 | 0.700 |" in report
    stats = tier_stats([json.loads(x) for x in (run / "clients.jsonl").read_text().splitlines()])
    assert stats["android-mid"]["outcomes"] == {"over_budget": 1} and stats["rpi5"]["peak_rss_mb"] == 301.0
    assert memberships(run / "server", 0) == {}

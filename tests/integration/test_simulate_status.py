"""A simulation in which one device fails every round never reports success: exit code 1, status
"degraded" in results.json and report.md, and a summary on stderr counted by reason and tier.

Real Mosquitto, the real `fedhft server` and `fedhft edge` processes, a tiny torch model. The failing
device is an android-low tier held to its catalog memory budget (192 MB): any Python process that
has imported torch is above it, so that device skips every round with an over_budget outcome, while
the Jetson devices (2048 MB) train.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration._sim_helpers import pid_gone, write_toy_sentiment

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.requires("mosquitto"),
]
REPO = Path(__file__).resolve().parents[2]


def test_a_device_failing_every_round_makes_the_run_degraded_and_exit_1(tmp_path):
    out = tmp_path / "run"
    settings = {
        "model": "tiny",
        "clients": 3,
        "rounds": 2,
        "tiers": "[jetson-orin-nano,android-low]",
        "backend": "torch",
        "memory_budget": "tier",
        "memory_accounting": "process",
        "dataset": str(write_toy_sentiment(tmp_path / "toy.jsonl", 180)),
        "train_size": 0,
        "test_size": 0,
        "local_steps": 3,
        "lr": 0.02,
        "max_seq_len": 16,
        "bundle_cache": str(tmp_path / "cache"),
        "out": str(out),
        "progress": "false",
        "broker": "mosquitto",
        "join_timeout_s": 120,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "fedhft", "simulate", *(f"{k}={v}" for k, v in settings.items())],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    logs = proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    tiers = results["tier_of_client"]
    assert tiers == {"dev-000": "jetson-orin-nano", "dev-001": "android-low", "dev-002": "jetson-orin-nano"}, logs
    assert proc.returncode == 1, logs
    assert results["status"] == "degraded" and results["ok"] is False, logs
    assert len(results["rounds"]) == 2 and all(r["stored"] == 2 for r in results["rounds"]), logs
    assert results["failures"]["failures_by_reason"] == {"over_budget": {"android-low": 2}}, logs
    assert {(f["client"], f["round"]) for f in results["failures"]["failures"]} == {("dev-001", 0), ("dev-001", 1)}
    assert "degraded: 2 of 6 client-rounds did not store: over_budget x2 (android-low x2)" in proc.stderr, logs
    assert str(out / "logs" / "server.log") in proc.stderr
    assert "status: degraded" in proc.stdout
    report = (out / "report.md").read_text()
    assert "- status: **degraded: 2 of 6 client-rounds" in report
    assert "## Failures" in report and "| dev-001 | android-low | torch | 2 (0, 1) | over_budget x2 |" in report
    assert (out / "tiers.png").is_file()
    assert all(pid_gone(p) for p in json.loads((out / "pids.json").read_text()).values())

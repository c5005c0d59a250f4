"""`fedhft simulate` end to end: a real Mosquitto, the real `fedhft server` and real `fedhft edge`
processes on a tiny model; the outputs exist and no process outlives the run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration._sim_helpers import pid_gone, write_toy_sentiment

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.requires("mosquitto"),
]
REPO = Path(__file__).resolve().parents[2]


def _args(tmp: Path, cache: Path, out: Path, **extra) -> list[str]:
    settings = {
        "model": "tiny",
        "clients": 4,
        "rounds": 2,
        "tiers": "[rpi5,jetson-orin-nano]",
        "backend": "torch",
        "dataset": str(write_toy_sentiment(tmp / "toy.jsonl", 240)),
        "train_size": 0,
        "test_size": 0,
        "local_steps": 4,
        "lr": 0.02,
        "max_seq_len": 16,
        "memory_budget": "off",
        "bundle_cache": str(cache),
        "out": str(out),
        "progress": "false",
        "broker": "mosquitto",
        "join_timeout_s": 120,
    }
    settings.update(extra)
    return [sys.executable, "-m", "fedhft", "simulate", *(f"{k}={v}" for k, v in settings.items())]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bundle-cache")


def test_simulate_end_to_end(tmp_path, cache):
    out = tmp_path / "run"
    # progress on, stdout a pipe: the per-round lines a log file gets
    proc = subprocess.run(
        _args(tmp_path, cache, out, progress="true"), cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["ok"] and results["status"] == "completed" and len(results["rounds"]) == 2
    assert all(r["stored"] == 4 for r in results["rounds"])
    assert all(a is not None for a in results["accuracy"])
    for name in (
        "report.md",
        "rounds.jsonl",
        "clients.jsonl",
        "accuracy_vs_round.png",
        "accuracy_vs_bytes.png",
        "tiers.png",
        "clusters.png",
        "logs/server.log",
        "logs/dev-000.log",
    ):
        assert (out / name).is_file(), name
    pids = json.loads((out / "pids.json").read_text())
    assert {"server", "broker", "dev-000", "dev-003"} <= set(pids)
    assert all(pid_gone(p) for p in pids.values()), pids
    assert "accuracy per round" in proc.stdout
    assert "round 1 committed (2 of 2 rounds): 4/4 clients stored" in proc.stdout, proc.stdout
    assert "round 1 test accuracy" in proc.stdout, proc.stdout


def test_simulate_ctrl_c_stops_every_process(tmp_path, cache):
    out = tmp_path / "run"
    # A shell that starts a job in the background (`cmd &`, nohup) makes it ignore SIGINT, and the
    # ignore is inherited: give the simulation the default action back, as a terminal's Ctrl-C has.
    proc = subprocess.Popen(
        _args(tmp_path, cache, out, rounds=50),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 480  # generous: CI boxes are slow and shared; this is liveness only
        while not (out / "server" / "metrics.jsonl").is_file():  # a round has committed
            assert proc.poll() is None and time.monotonic() < deadline, (
                proc.stdout.read()[-3000:] if proc.stdout else ""
            )
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output[-3000:]  # the shell's code for SIGINT, documented in --help
    assert "interrupted" in output
    pids = json.loads((out / "pids.json").read_text())
    assert all(pid_gone(p) for p in pids.values()), pids
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "interrupted" and results["ok"] is False

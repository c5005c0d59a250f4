"""`fedhft simulate engine=inprocess` end to end on a tiny model: no broker and no process, the same
outputs as the MQTT engine (results.json with per-round global and personalized accuracy,
report.md, plots), a typed status when devices fail, and Ctrl-C reporting what committed."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration._sim_helpers import simulate_argv, write_toy_sentiment

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def _settings(tmp: Path, cache: Path, out: Path, **extra) -> dict:
    settings = {
        "engine": "inprocess",
        "model": "tiny",
        "clients": 3,
        "rounds": 2,
        "tiers": "[android-mid,rpi5,jetson-orin-nano]",
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
    }
    settings.update(extra)
    return settings


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bundle-cache")


def test_inprocess_end_to_end_writes_the_mqtt_engines_outputs_without_a_broker(tmp_path, cache):
    out = tmp_path / "run"
    # progress on, stdout a pipe: the per-round lines a log file gets
    proc = subprocess.run(
        simulate_argv(_settings(tmp_path, cache, out, progress="true")),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["engine"] == "inprocess" and results["status"] == "completed" and results["ok"]
    assert [r["stored"] for r in results["rounds"]] == [3, 3]
    assert all(a is not None for a in results["accuracy"])
    for r in results["rounds"]:
        assert r["personalized"]["clients"] == 3 and 0.0 <= r["personalized"]["acc_after"] <= 1.0
    assert results["headline"]["personalized_acc_after"]["final"] is not None
    # no broker, no child process: nothing to start, nothing to stop
    assert results["broker"] == "none" and results["pids"] == [] and results["mqtt_protocol"] is None
    for absent in ("pids.json", "fleet", "logs", "edges", "server.yaml"):
        assert not (out / absent).exists(), absent
    for name in (
        "report.md",
        "rounds.jsonl",
        "clients.jsonl",
        "accuracy_vs_round.png",
        "accuracy_vs_bytes.png",
        "tiers.png",
        "clusters.png",
        "server/metrics.jsonl",
        "server/states/global-r00001.safetensors",
    ):
        assert (out / name).is_file(), name
    assert len((out / "clients.jsonl").read_text().splitlines()) == 6
    report = (out / "report.md").read_text()
    assert "(in-process engine)" in report.splitlines()[0] and "- engine: inprocess" in report
    assert "round 1 committed (2 of 2 rounds): 3/3 clients stored" in proc.stdout, proc.stdout
    assert "round 1 test accuracy" in proc.stdout and "status: completed" in proc.stdout


def test_inprocess_devices_that_store_nothing_make_the_run_degraded(tmp_path, cache):
    from simulate import load_sim_config, run_simulation

    # The device keeps deadline_reserve_s (1 s) for its upload: a 0.5 s round is missed before any step.
    cfg = load_sim_config(
        None, [f"{k}={v}" for k, v in _settings(tmp_path, cache, tmp_path / "run", deadline_s=0.5).items()]
    )
    result = run_simulation(cfg, say=lambda line: None)
    assert result.status.value == "degraded" and result.status.exit_code == 1 and len(result.rounds) == 2
    assert result.verdict.by_reason() == {"deadline": {"android-mid": 2, "rpi5": 2, "jetson-orin-nano": 2}}
    results = json.loads((result.run_dir / "results.json").read_text())
    assert results["failures"]["failed_client_rounds"] == 6 and results["status"] == "degraded"
    rows = [json.loads(x) for x in (result.run_dir / "clients.jsonl").read_text().splitlines()]
    assert {(r["status"], r["outcome"]) for r in rows} == {("outcome", "deadline")} and len(rows) == 6


def test_a_ctrl_c_during_a_committed_rounds_evaluation_still_reports_that_round(tmp_path, cache, monkeypatch):
    """Round 0 commits (its metrics line is on disk), then Ctrl-C lands while its global model is being
    evaluated: the run is interrupted, and round 0 is still reported, with its evaluation, and its records."""
    import simulate._inprocess as engine
    from simulate import load_sim_config, run_simulation

    original, calls = engine.InProcessEngine._evaluate_timed, []

    def interrupted_once(self, idx, files):
        calls.append(idx)
        if len(calls) == 1:
            assert (tmp_path / "run" / "server" / "metrics.jsonl").is_file()  # round 0 has committed
            raise KeyboardInterrupt
        return original(self, idx, files)

    monkeypatch.setattr(engine, "usable_cores", lambda: 2)  # no evaluation thread: Ctrl-C lands in this one
    monkeypatch.setattr(engine.InProcessEngine, "_evaluate_timed", interrupted_once)
    cfg = load_sim_config(None, [f"{k}={v}" for k, v in _settings(tmp_path, cache, tmp_path / "run", rounds=3).items()])
    result = run_simulation(cfg, say=lambda line: None)
    assert result.interrupted and calls == [0, 0]  # the interrupted evaluation was redone, no round 1 began
    assert [r["round"] for r in result.rounds] == [0] and 0.0 <= result.rounds[0]["accuracy"] <= 1.0
    results = json.loads((result.run_dir / "results.json").read_text())
    assert [r["round"] for r in results["rounds"]] == [0] and results["status"] == "interrupted"
    rows = [json.loads(x) for x in (result.run_dir / "clients.jsonl").read_text().splitlines()]
    assert {r["round"] for r in rows} == {0} and len(rows) == 3


def test_inprocess_ctrl_c_reports_the_rounds_committed_so_far(tmp_path, cache):
    out = tmp_path / "run"
    # A backgrounded shell makes its jobs ignore SIGINT: give the simulation a terminal's Ctrl-C back.
    proc = subprocess.Popen(
        simulate_argv(_settings(tmp_path, cache, out, rounds=500)),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 480  # liveness only: CI boxes are slow and shared
        while not (out / "server" / "metrics.jsonl").is_file():  # a round has committed
            assert proc.poll() is None and time.monotonic() < deadline, (
                proc.stdout.read()[-3000:] if proc.stdout else ""
            )
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "interrupted" and results["engine"] == "inprocess" and not results["ok"]
    committed = [r["round"] for r in results["rounds"]]
    assert committed and committed == list(range(len(committed))) and len(committed) < 500
    rows = [json.loads(x) for x in (out / "clients.jsonl").read_text().splitlines()]
    assert {r["round"] for r in rows} == set(committed)  # the records of the committed rounds, no others
    assert "interrupted" in output

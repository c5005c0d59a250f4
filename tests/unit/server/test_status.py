"""`fedhft server status`: a stopped server is said to be stopped (and since when), its devices are
not "online", every number is labelled, and a bad --state or a closed pipe gives no traceback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fedhft.cli import main
from server import Store, format_status, server_status
from server._metrics import SERVER_META, Liveness, record_server_state

REPO = Path(__file__).resolve().parents[3]
METRICS = {
    "round": 2,
    "selected": 3,
    "stored": 2,
    "rejected_clients": 1,
    "outcome_clients": 0,
    "dropped": 0,
    "accuracy_mean": 0.8125,
    "rejections": {"bad_shape": 1},
    "outcomes": {},
    "round_s": 12.5,
    "aggregation_s": 0.25,
}


def _state(tmp_path: Path, server: str | dict | None, clients: int = 3) -> Path:
    """A state dir whose clients all said hello (the store has them online) and a server record."""
    state = tmp_path / "state"
    store = Store(state)
    for i in range(clients):
        store.upsert_client(f"dev-{i:03d}", {}, "rpi5", "ort", ["ort"], 1_700_000_000.0 + i)
    if isinstance(server, str):
        # a live record needs the real time: a process that started after the record is another one
        record_server_state(store, server, now=None if server == "running" else 1_700_000_100.0)
    elif isinstance(server, dict):
        store.set_meta(SERVER_META, json.dumps(server))
    store.close()
    (state / "metrics.jsonl").write_text(json.dumps(METRICS) + "\n")
    return state


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_stopped_server_is_not_running_and_its_devices_are_not_online(tmp_path):
    status = server_status(_state(tmp_path, "finished"), now=1_700_000_400.0)
    assert status["server"]["liveness"] == Liveness.STOPPED
    assert status["clients"]["online"] == 0 and status["clients"]["last_reported_online"] == 3
    text = format_status(status)
    assert "server: NOT running: it finished its rounds and stopped at 2023-11-14 22:15:00 UTC (5 min ago)" in text
    assert "3 registered, none online (the server is not running)" in text
    assert "3 online" not in text


def test_a_killed_server_is_not_running_either(tmp_path):
    record = {"state": "running", "pid": _dead_pid(), "host": socket.gethostname(), "started": 1.0, "updated": 1.0}
    status = server_status(_state(tmp_path, record))
    assert status["server"]["liveness"] == Liveness.CRASHED
    assert status["clients"]["online"] == 0
    assert "NOT running" in format_status(status) and "without a clean exit" in format_status(status)


def test_a_live_server_is_running_with_its_devices_online(tmp_path):
    status = server_status(_state(tmp_path, "running"))  # recorded by this (live) process
    assert status["server"]["liveness"] == Liveness.RUNNING and status["clients"]["online"] == 3
    assert f"server: running (pid {os.getpid()}" in format_status(status)


def test_a_state_dir_without_a_server_record_does_not_claim_devices_online(tmp_path):
    status = server_status(_state(tmp_path, None))
    assert status["server"]["liveness"] == Liveness.UNKNOWN and status["clients"]["online"] is None
    text = format_status(status)
    assert "not known to be running" in text and "last activity at" in text
    assert "3 online when last reported" in text


def test_every_number_of_the_last_round_is_labelled(tmp_path):
    text = format_status(server_status(_state(tmp_path, "finished")))
    assert "last committed round (2):" in text
    assert "clients stored 2 of 3 selected; rejected 1, device-reported failures 0, dropped 0" in text
    assert "mean client-reported accuracy (each client's local validation set): 0.8125" in text
    assert "rejections by reason: bad_shape 1; device failures by kind: none" in text
    assert "round duration 12.50 s, aggregation 0.25 s" in text


@pytest.mark.parametrize(
    "make, says",
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: (p / "file").write_text("x") and p / "file", "is a file, not a state dir"),
        (lambda p: p, "holds no server.sqlite"),
        (
            lambda p: (p / "server.sqlite").write_bytes(b"not a database" * 100) and p,
            "not a readable fedhft server database",
        ),
    ],
)
def test_a_bad_state_dir_is_a_clean_error(tmp_path, capsys, make, says):
    assert main(["server", "status", "--state", str(make(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedhft server status: ") and says in err and "Traceback" not in err


def test_a_simulation_run_dir_points_at_its_server_dir(tmp_path, capsys):
    run = tmp_path / "run"
    Store(run / "server").close()
    assert main(["server", "status", "--state", str(run)]) == 2
    assert f"--state {run / 'server'}" in capsys.readouterr().err


def test_a_closed_pipe_is_no_traceback(tmp_path):
    """`fedhft server status --json | head -1`: the reader is gone before the output is written."""
    state = _state(tmp_path, "finished")
    read, write = os.pipe()
    os.close(read)  # no reader at all: the first write fails with EPIPE, deterministically
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "fedhft", "server", "status", "--state", str(state), "--json"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            timeout=120,
        )
    finally:
        os.close(write)
    assert proc.returncode == 141, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr


def test_main_returns_141_when_stdout_breaks(monkeypatch, tmp_path):
    class Broken:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", Broken())
    assert main(["server", "status", "--state", str(_state(tmp_path, "finished")), "--json"]) == 141

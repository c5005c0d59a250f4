"""`run_simulation` with the server and devices on MQTT 3.1.1: on the embedded amqtt broker (which has
no MQTT 5, so simulate picks 3.1.1 itself) and, forced, on a real Mosquitto. Tiny model, 2-3 real
`fedhft edge` processes, 2 rounds; every round commits and is evaluated, and no process outlives it."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest

from tests._require import require
from tests.integration._sim_helpers import pid_gone, write_toy_sentiment
from simulate import SimConfig, run_simulation

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _config(tmp: Path, cache: Path, **extra) -> SimConfig:
    settings = dict(
        model="tiny",
        clients=3,
        rounds=2,
        tiers=["rpi5", "jetson-orin-nano"],
        backend="torch",
        dataset=str(write_toy_sentiment(tmp / "toy.jsonl", 180)),
        train_size=0,
        test_size=0,
        local_steps=4,
        lr=0.02,
        max_seq_len=16,
        memory_budget="off",
        bundle_cache=str(cache),
        out=str(tmp / "run"),
        progress=False,
        join_timeout_s=120.0,
    )
    settings.update(extra)
    return SimConfig(**settings)


def _assert_complete(result, clients: int, rounds: int) -> dict:
    assert result.ok, f"{result.error}\n" + _logs(result.run_dir)
    assert len(result.rounds) == rounds and all(r["stored"] == clients for r in result.rounds), result.rounds
    assert len(result.accuracies) == rounds and all(a is not None for a in result.accuracies), result.rounds
    out = json.loads((result.run_dir / "results.json").read_text())
    assert out["ok"] and out["mqtt_protocol"] == "3.1.1"
    pids = json.loads((result.run_dir / "pids.json").read_text())
    assert {"server", "dev-000", f"dev-{clients - 1:03d}"} <= set(pids)
    assert all(pid_gone(p) for p in pids.values()), pids
    return out


def _logs(run_dir: Path) -> str:
    return "\n".join(
        f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:])
        for p in sorted((run_dir / "logs").glob("*.log"))
    )


def _server_yaml_says_311(run_dir: Path) -> None:
    server_yaml = (run_dir / "server.yaml").read_text()
    assert "mqtt_protocol: 3.1.1" in server_yaml or "mqtt_protocol: '3.1.1'" in server_yaml


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bundle-cache")


def test_simulation_on_the_embedded_broker_runs_on_mqtt311(tmp_path, cache):
    require("amqtt")
    said: list[str] = []
    started = time.monotonic()
    result = run_simulation(_config(tmp_path, cache, broker="embedded"), say=said.append)
    took = time.monotonic() - started
    out = _assert_complete(result, clients=3, rounds=2)
    assert out["broker"] == "embedded"
    assert any("embedded" in s and "MQTT 3.1.1" in s for s in said), said
    _server_yaml_says_311(result.run_dir)
    assert "MQTT 3.1.1" in (result.run_dir / "report.md").read_text()  # the embedded broker's note
    # the in-process broker's thread is gone too
    assert not [t.name for t in threading.enumerate() if t.name.startswith("fedhft-amqtt-")]
    print(f"embedded-broker simulation: {took:.1f} s wall, phases {result.phases}")  # reported, not asserted


@pytest.mark.requires("mosquitto")
def test_server_and_edges_forced_to_mqtt311_on_mosquitto(tmp_path, cache):
    """Mosquitto speaks both versions: its log shows each client's protocol (Mosquitto 2.0's own enum:
    p2 = MQTT 3.1.1, p5 = MQTT 5) and clean-session flag (c0 = persistent session)."""
    result = run_simulation(
        _config(tmp_path, cache, broker="mosquitto", mqtt_protocol="3.1.1", clients=2), say=lambda _: None
    )
    _assert_complete(result, clients=2, rounds=2)
    _server_yaml_says_311(result.run_dir)
    log = next((result.run_dir / "fleet").rglob("mosquitto.log")).read_text(errors="replace")
    users = {m.group(2): m.group(1) for m in re.finditer(r"\((p\d), c\d, k\d+, u'([^']+)'\)", log)}
    assert users.get("server") == "p2" and users.get("dev-000") == "p2" and users.get("dev-001") == "p2", users
    persistent = re.findall(r"\(p2, c0, k\d+, u'(server|dev-\d+)'\)", log)
    assert {"server", "dev-000", "dev-001"} <= set(persistent), log[-2000:]

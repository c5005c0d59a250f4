"""Agent pieces that need no broker: config, outcome mapping, packet-size guard, CLI flags, logging."""

from __future__ import annotations

import argparse
import io
import json

import pytest

from edge_runtime import AgentConfig, DeadlineMissed, EventLog, LowBattery, OverBudget, outcome_of


@pytest.mark.parametrize(
    "result, kind, metrics",
    [
        (
            OverBudget(300.0, 256.0, "plan", 120.0),
            "over_budget",
            {"peak_mb": 300.0, "budget_mb": 256.0, "rss_mb": 120.0},
        ),
        (LowBattery(12.0, 20.0, False), "low_battery", {"level": 12.0, "threshold": 20.0}),
        (DeadlineMissed(9.5, 10.0, 4), "deadline", {"elapsed_s": 9.5, "deadline_s": 10.0, "steps_done": 4.0}),
        (ValueError("state does not fit"), "error", {}),
    ],
)
def test_typed_failures_map_to_outcome_kinds(result, kind, metrics):
    got_kind, reason, got_metrics = outcome_of(result)
    assert got_kind == kind and got_metrics == metrics and reason


def test_config_reports_every_problem_at_once(tmp_path):
    cfg = AgentConfig(
        backend="tpu", memory_budget_mb=-1, label_map="[1]", simulated_battery="level=x", tls_cert="c.pem"
    )
    problems = "\n".join(cfg.problems())
    for words in (
        "broker=",
        "client_id=",
        "data=",
        "backend='tpu'",
        "memory_budget_mb",
        "label_map=",
        "simulated_battery level",
        "tls_cert= and tls_key=",
    ):
        assert words in problems
    assert "mqtt://" in "\n".join(AgentConfig(broker="tcp://h:1").problems())
    assert "use mqtts://" in "\n".join(AgentConfig(broker="mqtt://h:1", tls_ca="ca.crt").problems())


def test_config_reads_a_credentials_file(tmp_path):
    from server.broker import fleet_init

    fleet = fleet_init(tmp_path / "fleet", 1, fleet="demo")
    data = tmp_path / "d.csv"
    data.write_text("text,label\na,0\nb,1\n")
    cfg = AgentConfig(
        credentials=str(fleet.dir / "clients" / "dev-000.json"),
        broker="mqtt://127.0.0.1:1884",
        data=str(data),
        state=str(tmp_path / "s"),
    )
    assert (cfg.client_id, cfg.username, cfg.fleet) == ("dev-000", "dev-000", "demo") and cfg.password
    assert cfg.problems() == []
    assert AgentConfig(simulated_battery="level=15,charging=1").battery_options() == {"level": 15.0, "charging": True}


def test_publish_refuses_payloads_over_the_broker_limit_before_sending():
    from fedhft.protocol import PayloadTooLarge
    from edge_runtime import MqttLink, MqttOptions

    link = MqttLink(MqttOptions("mqtt://127.0.0.1:1", "dev-000", max_packet_size=4096), [])
    with pytest.raises(PayloadTooLarge, match="int8"):
        link.publish("fedhft/v1/f/from/dev-000/update", b"x" * 5000)
    link.conn.broker_max_packet = 65536  # what CONNACK advertised wins over the configured fallback
    assert link.max_payload("t") > 60000


def test_cli_settings_are_key_value_words():
    from edge_runtime.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "edge",
            "broker=mqtt://h:1",
            "--config",
            "e.yaml",
            "client_id=d",
            "data=x.csv",
            "memory_budget_mb=256",
            "threads=2",
        ]
    )
    assert args.settings.words == (
        "broker=mqtt://h:1",
        "client_id=d",
        "data=x.csv",
        "memory_budget_mb=256",
        "threads=2",
    )
    assert args.config == "e.yaml" and args.func.__name__ == "main_from_args"


def test_yaml_settings_and_overrides_build_the_config(tmp_path):
    from fedhft.config import load_config

    path = tmp_path / "edge.yaml"
    path.write_text("memory_budget_mb: 300\ntier: rpi5\nthreads: 1\n")
    cfg = load_config(AgentConfig, path, ["threads=2", "client_id=d1", "password=a=b"])
    assert (cfg.memory_budget_mb, cfg.tier, cfg.threads, cfg.client_id, cfg.password) == (300.0, "rpi5", 2, "d1", "a=b")
    assert cfg.state.endswith("d1") and cfg.username == "d1"


def test_cli_exits_2_with_every_problem(tmp_path, capsys):
    from edge_runtime.cli import main

    assert main(["broker=mqtt://127.0.0.1:1", "client_id=d", f"data={tmp_path / 'none.csv'}"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_event_log_writes_one_json_object_per_line():
    out = io.StringIO()
    log = EventLog("dev-1", out)
    log("round_trained", round=3, loss=0.5, skipped=None)
    log("oops", severity="error", detail="two words")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0]["event"] == "round_trained" and lines[0]["round"] == 3 and "skipped" not in lines[0]
    assert lines[1]["severity"] == "error" and lines[1]["client"] == "dev-1"
    kv = io.StringIO()
    EventLog("d", kv, fmt="kv")("x", a=1)
    assert "event=x" in kv.getvalue() and "a=1" in kv.getvalue()

"""The MQTT protocol option of server, edge and simulate: values, errors, CLI flags, and the paho
client each one builds (no broker needed: nothing here connects)."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import pytest

from fedhft.config import ConfigError, load_config


# ----------------------------------------------------------------------------- server


def test_server_config_default_is_mqtt5_and_accepts_311():
    from server import ServerConfig, load_server_config

    assert ServerConfig(fleet="f", bundles_dir="b").mqtt_protocol == "5"
    assert load_server_config(None, ["fleet=f", "bundles_dir=b", "mqtt_protocol=3.1.1"]).mqtt_protocol == "3.1.1"
    assert load_server_config(None, ["fleet=f", "bundles_dir=b", "mqtt_protocol=5"]).mqtt_protocol == "5"


def test_server_config_yaml_number_5_is_the_string_5(tmp_path):
    from server import load_server_config

    path = tmp_path / "s.yaml"
    path.write_text("fleet: f\nbundles_dir: b\nmqtt_protocol: 5\n")  # unquoted: YAML reads an int
    assert load_server_config(path).mqtt_protocol == "5"


@pytest.mark.parametrize("bad", ["4", "3.1", "mqttv5", "5.0"])
def test_server_config_rejects_other_versions_naming_the_allowed_ones(bad):
    from server import ServerConfig, ServerConfigError, load_server_config

    with pytest.raises(ServerConfigError) as err:
        load_server_config(None, ["fleet=f", "bundles_dir=b", f"mqtt_protocol={bad}"])
    assert "mqtt_protocol" in str(err.value) and "'5'" in str(err.value) and "'3.1.1'" in str(err.value)
    with pytest.raises(ServerConfigError) as err:  # built directly, the dataclass checks it too
        ServerConfig(fleet="f", bundles_dir="b", mqtt_protocol=bad)
    assert f"mqtt_protocol={bad!r}: use one of ['5', '3.1.1']" in str(err.value)


def test_server_help_config_lists_the_option():
    from server import config_help

    assert "mqtt_protocol" in config_help()


def test_server_cli_setting_becomes_the_override(monkeypatch, tmp_path):
    import server._run
    from fedhft.cli import main

    seen = {}

    def fake_run(broker, state, config_path, overrides, **kw):
        seen["overrides"] = overrides
        return 0

    monkeypatch.setattr(server._run, "run_from_args", fake_run)
    assert (
        main(
            [
                "server",
                "--broker",
                "mqtt://127.0.0.1:9",
                "--state",
                str(tmp_path),
                "mqtt_protocol=3.1.1",
                "--insecure",
                "rounds=2",
            ]
        )
        == 0
    )
    assert seen["overrides"] == ["mqtt_protocol=3.1.1", "rounds=2"]


def test_server_cli_bad_protocol_exits_2_naming_the_values(tmp_path, capsys):
    from fedhft.cli import main

    cfg = tmp_path / "s.yaml"
    cfg.write_text(f"fleet: f\nbundles_dir: {tmp_path}\n")
    rc = main(
        [
            "server",
            "--broker",
            "mqtt://127.0.0.1:9",
            "--state",
            str(tmp_path / "st"),
            "--config",
            str(cfg),
            "--insecure",
            "mqtt_protocol=4",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "mqtt_protocol" in err and "3.1.1" in err


@pytest.mark.parametrize("protocol, v5", [("5", True), ("3.1.1", False)])
def test_server_transport_builds_the_right_paho_client(protocol, v5):
    mqtt = pytest.importorskip("paho.mqtt.client")
    from server._mqtt import MqttTransport

    t = MqttTransport("mqtt://127.0.0.1:1", "f", "server", "pw", protocol=protocol)
    assert t.mqtt5 is v5
    assert t.client.protocol == (mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
    assert t.client._manual_ack
    if v5:
        assert t.conn.connect_properties.SessionExpiryInterval == 86_400
    else:
        assert t.conn.connect_properties is None and t.client._clean_session is False  # persistent 3.1.1 session
    with pytest.raises(ValueError, match="3.1.1"):
        MqttTransport("mqtt://127.0.0.1:1", "f", "server", "pw", protocol="4")


# ----------------------------------------------------------------------------- edge


def test_agent_config_default_and_values():
    from edge_runtime import AgentConfig

    assert AgentConfig().mqtt_protocol == "5"
    assert load_config(AgentConfig, None, ["mqtt_protocol=3.1.1"]).mqtt_protocol == "3.1.1"
    assert not [p for p in AgentConfig(mqtt_protocol="3.1.1").problems() if "protocol" in p]


def test_agent_config_rejects_other_versions_naming_the_allowed_ones():
    from edge_runtime import AgentConfig

    problems = "\n".join(AgentConfig(mqtt_protocol="3").problems())
    assert "mqtt_protocol='3': use one of ['5', '3.1.1']" in problems
    with pytest.raises(ConfigError, match=r"mqtt_protocol.*'5', '3.1.1'"):
        load_config(AgentConfig, None, ["mqtt_protocol=v3"])


def test_edge_cli_has_the_setting_and_a_bad_value_exits_2(capsys):
    from edge_runtime.cli import main_from_args, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    assert main_from_args(parser.parse_args(["edge", "--help-config"])) == 0
    assert "mqtt_protocol" in capsys.readouterr().out
    bad = parser.parse_args(["edge", "broker=mqtt://h:1", "mqtt_protocol=4"])
    assert main_from_args(bad) == 2
    assert "mqtt_protocol" in capsys.readouterr().err


def test_agent_passes_the_protocol_to_its_link(tmp_path):
    from edge_runtime import AgentConfig, EdgeAgent

    cfg = AgentConfig(broker="mqtt://h:1", client_id="d", mqtt_protocol="3.1.1")
    opts = EdgeAgent._mqtt_options(SimpleNamespace(cfg=cfg))
    assert opts.protocol == "3.1.1"


@pytest.mark.parametrize("protocol, v5", [("5", True), ("3.1.1", False)])
def test_edge_link_builds_the_right_paho_client(protocol, v5):
    mqtt = pytest.importorskip("paho.mqtt.client")
    from edge_runtime import MqttLink, MqttOptions

    link = MqttLink(MqttOptions("mqtt://127.0.0.1:1", "dev-000", max_packet_size=4096, protocol=protocol), [])
    assert link.mqtt5 is v5 and link._client.protocol == (mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
    assert link._client._manual_ack
    if not v5:
        assert link._client._clean_session is False
    assert link.max_packet_size == 4096  # no CONNACK limit (none on 3.1.1): the configured one


def test_edge_link_on_311_connack_keeps_the_configured_limit_and_flags_refusals():
    """paho 2 hands VERSION2 callbacks ReasonCode objects on 3.1.1 too (converted from the return
    code) and no CONNACK properties."""
    pytest.importorskip("paho.mqtt.client")
    from paho.mqtt.client import ConnectFlags, convert_connack_rc_to_reason_code
    from paho.mqtt.enums import ConnackCode

    from edge_runtime import MqttLink, MqttOptions
    from edge_runtime._mqtt import CONNECTED

    events = []
    link = MqttLink(
        MqttOptions("mqtt://127.0.0.1:1", "dev-000", max_packet_size=4096, protocol="3.1.1"),
        ["t/#"],
        log=lambda event, **kv: events.append((event, kv)),
    )
    link._client.subscribe = lambda *a, **k: (0, 1)  # not connected: nothing to send
    refused = convert_connack_rc_to_reason_code(ConnackCode.CONNACK_REFUSED_BAD_USERNAME_PASSWORD)
    link._on_connect(link._client, None, ConnectFlags(False), refused, None)
    assert refused.is_failure and link.last_failure and not link.connected.is_set()
    assert events[-1][0] == "mqtt_refused" and "username/password" in events[-1][1]["fix"]
    ok = convert_connack_rc_to_reason_code(ConnackCode.CONNACK_ACCEPTED)
    link._on_connect(link._client, None, ConnectFlags(True), ok, None)
    assert not ok.is_failure and link.connected.is_set() and link.conn.broker_max_packet is None
    assert link.max_packet_size == 4096
    item = link.inbox.get_nowait()
    assert item.topic == CONNECTED and item.session_present


# ----------------------------------------------------------------------------- simulate


def test_sim_config_protocol_choices_and_errors():
    from simulate import SimConfig, load_sim_config

    cfg = SimConfig()
    assert cfg.mqtt_protocol == "auto"
    assert cfg.protocol_for("embedded") == "3.1.1" and cfg.protocol_for("mosquitto") == "5"
    assert SimConfig(mqtt_protocol="3.1.1").protocol_for("mosquitto") == "3.1.1"
    assert load_sim_config(None, ["mqtt_protocol=5"]).protocol_for("external") == "5"
    with pytest.raises(ConfigError, match=r"mqtt_protocol.*'auto', '5', '3.1.1'"):
        load_sim_config(None, ["mqtt_protocol=4"])
    with pytest.raises(ConfigError, match="3.1.1 only"):
        load_sim_config(None, ["broker=embedded", "mqtt_protocol=5"])


def test_simulate_passes_311_to_server_and_every_edge_on_the_embedded_broker(tmp_path):
    from server.broker import fleet_init
    from simulate import SimConfig
    from simulate._fleet import BrokerHandle, edge_args, server_config
    from server import ServerConfig

    fleet = fleet_init(tmp_path / "fleet", 2, fleet="sim")
    cfg = SimConfig(broker="embedded", clients=2, memory_budget="tier")
    for kind, want in (("embedded", "3.1.1"), ("mosquitto", "5")):
        handle = BrokerHandle("mqtt://127.0.0.1:1", kind, None, fleet, cfg.protocol_for(kind))
        sc = server_config(cfg, tmp_path, 2, "sim", handle.mqtt_protocol)
        assert ServerConfig(**sc).mqtt_protocol == want
        args = edge_args(cfg, handle, "dev-000", "rpi5", "torch", tmp_path / "d.csv", tmp_path, tmp_path)
        if want == "5":
            assert not [a for a in args if a.startswith("mqtt_protocol=")]  # the default is not spelled out
        else:
            assert "mqtt_protocol=3.1.1" in args

"""One command-line style: every command with settings (simulate, server, edge) takes them as
key=value, and refuses a setting spelled as an --option with the same message, naming the key=value."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from fedhft.cli import main


@pytest.fixture
def no_run(monkeypatch):
    """What each command would run with, instead of running it."""
    import edge_runtime._agent
    import edge_runtime.cli
    import server._run

    seen = {}
    monkeypatch.setattr(edge_runtime._agent, "run_agent", lambda cfg: seen.setdefault("edge", cfg) and 0)
    monkeypatch.setattr(edge_runtime.cli, "_exit_now", lambda code: None)  # the real one ends the process
    monkeypatch.setattr(
        server._run,
        "run_from_args",
        lambda broker, state, config, overrides, **kw: seen.setdefault("server", overrides) and 0,
    )
    return seen


SERVER = ["server", "--broker", "mqtt://127.0.0.1:9", "--state", "st", "--insecure"]


@pytest.mark.parametrize(
    "argv, wanted",
    [
        (
            ["simulate", "--clients", "4"],
            "unknown option --clients: settings are given as key=value; did you mean clients=4?",
        ),
        (
            ["simulate", "--rounds=3"],
            "unknown option --rounds: settings are given as key=value; did you mean rounds=3?",
        ),
        (
            ["edge", "--memory-budget-mb", "256"],
            "unknown option --memory-budget-mb: settings are given as key=value; did you mean memory_budget_mb=256?",
        ),
        (
            ["edge", "--set", "threads=2"],
            "unknown option --set: settings are given as key=value; did you mean threads=2?",
        ),
        (
            ["edge", "--label-map", '{"neg": 0}'],
            """unknown option --label-map: settings are given as key=value; did you mean label_map='{"neg": 0}'?""",
        ),
        (
            [*SERVER, "--strategy", "hetlora"],
            "unknown option --strategy: settings are given as key=value; did you mean strategy=hetlora?",
        ),
        (
            [*SERVER, "--mqtt-protocol", "3.1.1"],
            "unknown option --mqtt-protocol: settings are given as key=value; did you mean mqtt_protocol=3.1.1?",
        ),
    ],
)
def test_a_setting_spelled_as_an_option_names_its_key_value(argv, wanted, capsys, no_run):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fedhft {argv[0]}: ") and wanted in err, err
    assert "usage:" not in err and "Traceback" not in err and not no_run


@pytest.mark.parametrize(
    "argv, key, close, cls",
    [
        (["simulate", "clientz=4"], "clientz", "clients", "SimConfig"),
        (["edge", "memory_budgt_mb=256"], "memory_budgt_mb", "memory_budget_mb", "AgentConfig"),
        ([*SERVER, "roundz=2"], "roundz", "rounds", "ServerConfig"),
    ],
)
def test_an_unknown_key_gets_the_same_message_in_every_command(argv, key, close, cls, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(rf"unknown key '{key}' for {cls}; did you mean '{close}'\? \(known: ", err), err


def test_edge_takes_its_settings_as_key_value(tmp_path, no_run):
    data = tmp_path / "d.csv"
    data.write_text("text,label\na,0\nb,1\n")
    config = tmp_path / "edge.yaml"
    config.write_text("threads: 1\ntier: rpi5\n")
    assert (
        main(
            [
                "edge",
                "--config",
                str(config),
                "broker=mqtt://h:1",
                "client_id=d",
                f"data={data}",
                "memory_budget_mb=256",
                "threads=2",
                'label_map={"neg": 0, "pos": 1}',
            ]
        )
        == 0
    )
    cfg = no_run["edge"]
    assert (cfg.broker, cfg.client_id, cfg.memory_budget_mb) == ("mqtt://h:1", "d", 256.0)
    assert (cfg.threads, cfg.tier) == (2, "rpi5")  # the command line wins over the YAML file
    assert cfg.label_map_dict() == {"neg": 0, "pos": 1}


def test_edge_help_config_lists_every_setting(capsys):
    assert main(["edge", "--help-config"]) == 0
    out = capsys.readouterr().out
    assert all(k in out for k in ("memory_budget_mb", "credentials", "mqtt_protocol", "simulated_battery"))


def test_server_takes_run_settings_as_key_value_with_or_without_run(no_run):
    assert main([*SERVER, "rounds=2", "mqtt_protocol=3.1.1"]) == 0
    assert no_run.pop("server") == ["rounds=2", "mqtt_protocol=3.1.1"]
    assert main(["server", "run", "--broker", "mqtt://127.0.0.1:9", "rounds=3", "--state", "st", "--insecure"]) == 0
    assert no_run["server"] == ["rounds=3"]


def test_server_typo_of_a_subcommand_names_it(capsys):
    assert main(["server", "fleet-inti", "--clients", "2"]) == 2
    assert "did you mean fedhft server fleet-init?" in capsys.readouterr().err


def test_the_rule_module_imports_neither_torch_nor_paho():
    code = (
        "import sys, fedhft.cli_settings, simulate.cli, edge_runtime.cli, server.cli; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'paho')); "
        "print(bad); sys.exit(bool(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


@dataclass(frozen=True)
class Mqtt:
    port: int = field(default=1883, metadata={"help": "broker port"})
    tls: bool = field(default=False, metadata={"help": "use TLS"})


@dataclass(frozen=True)
class Settings:
    rounds: int = field(default=1, metadata={"help": "rounds"})
    mqtt: Mqtt = field(default_factory=Mqtt, metadata={"help": "broker"})


def test_sections_and_switches_get_their_dotted_key_value():
    """The rule on any config dataclass: nested sections are dotted, a bool switch becomes =true."""
    from fedhft.cli_settings import add_settings_parser, settings_overrides
    from fedhft.config import ConfigError

    parser = argparse.ArgumentParser(prog="fedhft")
    add_settings_parser(parser.add_subparsers(dest="command"), "demo")
    args = parser.parse_args(["demo", "rounds=2", "mqtt.port=1884"])
    assert settings_overrides(args.settings, Settings) == ["rounds=2", "mqtt.port=1884"]
    args = parser.parse_args(["demo", "--mqtt.port", "1884", "--mqtt.tls", "rounds=2", "--bogus", "7"])
    with pytest.raises(ConfigError) as err:
        settings_overrides(args.settings, Settings)
    assert err.value.errors == [
        "unknown option --mqtt.port: settings are given as key=value; did you mean mqtt.port=1884?",
        "unknown option --mqtt.tls: settings are given as key=value; did you mean mqtt.tls=true?",
        "unknown option --bogus: fedhft demo takes the options --help, --config, --help-config; its settings "
        "are key=value (list them with fedhft demo --help-config)",
    ]

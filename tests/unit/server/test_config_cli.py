"""ServerConfig loading and the `fedhft server` CLI (status, fleet-init, refusing no auth)."""

from __future__ import annotations

import json

import pytest

from fedhft.cli import main
from server import ServerConfig, ServerConfigError, load_server_config


def test_yaml_plus_overrides(tmp_path):
    cfg = tmp_path / "server.yaml"
    cfg.write_text("fleet: demo\nbundles_dir: bundles\nrounds: 3\nstrategy_options:\n  num_clusters: 2\n")
    c = load_server_config(cfg, ["rounds=5", "quorum=0.5", "strategy_options.sketch_dim=8", "clients_per_round=0.5"])
    assert (c.rounds, c.quorum, c.clients_per_round) == (5, 0.5, 0.5)
    assert c.strategy_options == {"num_clusters": 2, "sketch_dim": 8}
    assert c.bundles_dir == str((tmp_path / "bundles").resolve())  # relative to the YAML


def test_every_error_is_reported_at_once():
    with pytest.raises(ServerConfigError) as err:
        load_server_config(None, ["fleet=f", "rounds=0", "quorum=2", "bogus=1", "update_encoding=bf16"])
    text = str(err.value)
    for needle in ("bundles_dir is required", "unknown key 'bogus'"):
        assert needle in text
    with pytest.raises(ServerConfigError) as err:
        ServerConfig(fleet="f", bundles_dir="b", rounds=0, quorum=2.0, update_encoding="bf16")
    assert all(k in str(err.value) for k in ("rounds=0", "quorum=2.0", "update_encoding='bf16'"))


@pytest.mark.parametrize("count, eligible, want", [(3.0, 10, 3), (0.25, 10, 3), (5.0, 2, 2), (0.01, 10, 1)])
def test_select_count(count, eligible, want):
    assert ServerConfig(fleet="f", bundles_dir="b", clients_per_round=count).select_count(eligible) == want


def test_cli_refuses_to_start_without_auth(tmp_path, capsys):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(f"fleet: f\nbundles_dir: {tmp_path}\n")
    rc = main(["server", "--broker", "mqtt://127.0.0.1:9", "--state", str(tmp_path / "st"), "--config", str(cfg)])
    assert rc == 2 and "--insecure" in capsys.readouterr().err


def test_cli_fleet_init_and_status(tmp_path, capsys):
    assert main(["server", "fleet-init", "--clients", "2", "--out", str(tmp_path / "fleet"), "--fleet", "demo"]) == 0
    assert (tmp_path / "fleet" / "server.json").is_file()
    from server import Store

    store = Store(tmp_path / "st")
    store.upsert_client("dev-000", {}, "small", "torch", ["torch"], 1.0)
    store.close()
    capsys.readouterr()
    assert main(["server", "status", "--state", str(tmp_path / "st"), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["clients"]["by_tier"] == {"small": {"online": 1}}
    assert main(["server", "status", "--state", str(tmp_path / "st")]) == 0
    assert "1 registered" in capsys.readouterr().out


def test_server_never_imports_torch_export_or_edge_runtime():
    """The server side runs on a machine without torch: importing all of it must not pull it in."""
    import subprocess
    import sys

    code = (
        "import sys, server, server._run, server._mqtt, server.cli, server._synthetic; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'export', 'edge_runtime')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_generated_passwords_never_look_like_an_option(monkeypatch):
    # A password starting with "-" is refused by argparse after `--password` (1 in 64 did).
    from server.broker import _fleet_init

    drawn = iter(["-looks-like-an-option", "_fine-one"])
    monkeypatch.setattr(_fleet_init.secrets, "token_urlsafe", lambda n: next(drawn))
    assert _fleet_init.new_password() == "_fine-one"
    monkeypatch.undo()
    assert not any(_fleet_init.new_password().startswith("-") for _ in range(2000))


def test_cli_fleet_init_bad_count_is_a_clean_error(tmp_path, capsys):
    assert main(["server", "fleet-init", "--clients", "0", "--out", str(tmp_path / "fleet")]) == 2
    assert capsys.readouterr().err.startswith("fedhft server fleet-init: clients=0: a fleet needs at least 1 device")

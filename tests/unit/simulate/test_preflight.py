"""Every setting is checked before a folder or a process exists: all problems at once, exit code 2."""

from __future__ import annotations

import pytest

from fedhft.cli import main
from fedhft.config import ConfigError
from simulate import _run
from simulate import SimConfig
from simulate._preflight import preflight, strategy_problems


@pytest.fixture
def no_fleet(monkeypatch):
    """Starting a broker or exporting a bundle fails the test: preflight must stop the run first."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the run went past preflight")

    monkeypatch.setattr(_run, "start_fleet_broker", forbidden)
    monkeypatch.setattr(_run, "_export_bundles", forbidden)


def _toy(path):
    path.write_text(
        "".join(f'{{"text": "a {w} film", "label": {i % 2}}}\n' for i, w in enumerate(["bad", "good"] * 20))
    )
    return path


def test_strategy_name_and_options_are_checked_without_dims():
    assert strategy_problems("fedhft", {"num_clusters": 3}) == []
    (unknown,) = strategy_problems("unknown", {})
    assert "unknown strategy" in unknown and "hetlora" in unknown and "fedavg-lora" in unknown
    (bad,) = strategy_problems("hetlora", {"foo": 1})
    assert "strategy 'hetlora' does not accept ['foo']; it accepts" in bad and "pad_missing_layers" in bad
    (reserved,) = strategy_problems("fedhft", {"seed": 1})
    assert "set by the server" in reserved


def test_every_problem_is_reported_at_once_and_no_run_dir_is_created(tmp_path, no_fleet):
    run = tmp_path / "run"
    cfg = SimConfig(
        strategy="hetlora",
        strategy_options={"foo": 1},
        tiers=["rpi5", "no-such-tier"],
        backends={"rpi": "torch"},
        dataset=str(tmp_path / "missing.jsonl"),
        out=str(run),
    )
    with pytest.raises(ConfigError) as err:
        _run.run_simulation(cfg, say=lambda m: None)
    text = "\n".join(err.value.errors)
    assert "does not accept ['foo']" in text
    assert "no-such-tier" in text and "fedhft devices list" in text
    assert "backends: ['rpi']" in text
    assert "missing.jsonl" in text
    assert len(err.value.errors) == 4
    assert not run.exists()


def test_a_folder_that_holds_a_run_is_refused(tmp_path):
    run = tmp_path / "run"
    (run / "server").mkdir(parents=True)
    with pytest.raises(ConfigError, match="already holds a run"):
        preflight(SimConfig(dataset=str(_toy(tmp_path / "toy.jsonl")), out=str(run)), run)


def test_a_good_config_passes(tmp_path):
    preflight(
        SimConfig(model="tiny", clients=4, dataset=str(_toy(tmp_path / "toy.jsonl")), out=str(tmp_path / "r")),
        tmp_path / "r",
    )
    assert not (tmp_path / "r").exists()


def test_cli_unknown_strategy_exits_2_with_a_clean_message(tmp_path, capsys, no_fleet):
    run = tmp_path / "run"
    code = main(["simulate", "strategy=unknown", f"out={run}", "progress=false"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "strategy='unknown': unknown strategy; known: " in err and "Traceback" not in err
    assert not run.exists()


def test_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    out = capsys.readouterr().out
    for line in ("0    completed", "1    degraded or failed", "2    bad settings", "130  interrupted"):
        assert line in out


def test_too_few_examples_for_the_clients_is_caught_before_the_folder(tmp_path, no_fleet):
    run = tmp_path / "run"
    cfg = SimConfig(model="tiny", dataset=str(_toy(tmp_path / "toy.jsonl")), clients=40, train_size=0, out=str(run))
    with pytest.raises(ConfigError, match="partition: .* cannot give 40 clients"):
        _run.run_simulation(cfg, say=lambda m: None)
    assert not run.exists()

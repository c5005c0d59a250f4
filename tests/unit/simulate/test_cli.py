"""`fedhft simulate` argument handling: options and key=value in any order, one spelling per setting."""

from __future__ import annotations

from fedhft.cli import build_parser, main


def _parse(argv):
    return build_parser("simulate").parse_args(["simulate", *argv])


def test_options_and_settings_interleave():
    args = _parse(["clients=4", "--config", "c.yaml", "rounds=2", "--help-config", "out=a", "x=1"])
    assert (args.config, args.help_config) == ("c.yaml", True)
    assert args.settings.words == ("clients=4", "rounds=2", "out=a", "x=1")


def test_a_setting_spelled_as_an_option_is_refused_with_its_key_value(capsys):
    assert main(["simulate", "--clients", "4"]) == 2
    err = capsys.readouterr().err
    assert "unknown option --clients: settings are given as key=value; did you mean clients=4?" in err
    assert "usage:" not in err and "Traceback" not in err


def test_former_options_broker_and_out_are_settings_now(capsys, tmp_path):
    assert main(["simulate", "--out", str(tmp_path / "run"), "--broker=embedded", "--clinets", "3"]) == 2
    err = capsys.readouterr().err
    assert f"did you mean out={tmp_path / 'run'}?" in err and "did you mean broker=embedded?" in err
    assert "unknown option --clinets: settings are given as key=value; did you mean clients=3?" in err
    assert not (tmp_path / "run").exists()


def test_every_problem_of_the_command_line_at_once(capsys):
    assert main(["simulate", "--confg", "c.yaml", "clients", "4", "roundz=2"]) == 2
    err = capsys.readouterr().err
    assert "unknown option --confg: did you mean --config?" in err
    assert "'clients' is not key=value: did you mean clients=4?" in err
    assert "unknown key 'roundz' for SimConfig; did you mean 'rounds'?" in err

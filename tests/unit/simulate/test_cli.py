"""`fedhft simulate` argument handling: options and key=value in any order."""
from __future__ import annotations

import argparse

import pytest

from fedhft.cli import build_parser
from fedhft.simulate.cli import _split_options


def _parse(argv):
    args = build_parser("simulate").parse_args(["simulate", *argv])
    return args, _split_options(args, list(args.overrides))


def test_options_and_settings_interleave():
    args, rest = _parse(["--out", "a", "clients=4", "--broker", "mqtt://h:1", "rounds=2", "--config=c.yaml", "x=1"])
    assert (args.out, args.broker, args.config) == ("a", "mqtt://h:1", "c.yaml")
    assert rest == ["clients=4", "rounds=2", "x=1"]


def test_bad_options_say_the_fix():
    with pytest.raises(ValueError, match="unknown option '--bogus'"):
        _split_options(argparse.Namespace(), ["a=1", "--bogus"])
    with pytest.raises(ValueError, match="--out needs a value"):
        _split_options(argparse.Namespace(), ["a=1", "--out"])

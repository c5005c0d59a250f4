"""`fedhft devices ...` through the devices CLI's own entry point."""
from __future__ import annotations

import json

from devices import load_catalog
from devices.cli import format_table, main


def test_list_shows_every_tier(capsys):
    assert main(["devices", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in load_catalog())


def test_show_and_unknown_tier(capsys):
    assert main(["devices", "show", "rpi5"]) == 0
    assert "plan.depth" in capsys.readouterr().out
    assert main(["devices", "show", "nope"]) == 2
    assert "known tiers:" in capsys.readouterr().err


def test_profile_json_is_the_hello_payload(capsys):
    assert main(["devices", "profile", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cpu_count"] >= 1


def test_table_aligns_columns():
    lines = format_table(("name", "mb"), [("a", 1), ("long-name", 1024)]).splitlines()
    assert len({len(line) for line in lines}) == 1 and lines[1].endswith("   1")

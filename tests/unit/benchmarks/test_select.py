"""`fedhft bench select`'s pure parts: which logged row is which run, the run's sizing, the table, and
arguments refused before any run."""

from __future__ import annotations

import json

from benchmarks.select import check, parse, row_name, run_sizing, same_row, table
from benchmarks.sweep import FULL, QUICK


def _row(**over) -> dict:
    row = {
        "kind": "select",
        "setting": "sst2-a0.3",
        "strategy": "fedhft-epochs2x32",
        "seed": 100,
        "lr": 0.01,
        "status": "completed",
        "wall_s": 12.4,
        "sizing": json.dumps(FULL, sort_keys=True),
        "options": {},
        "headline": {
            "personalized_acc_after": {"final": 0.9094, "best": 0.92},
            "global_accuracy": {"final": 0.734, "best": 0.75},
        },
    }
    return {**row, **over}


def test_a_logged_row_is_the_same_run_only_with_its_key_sizing_and_options():
    sizing, none = json.dumps(FULL, sort_keys=True), json.dumps({})
    assert same_row(_row(), "sst2-a0.3", "fedhft-epochs2x32", 0.01, sizing, none)
    assert not same_row(_row(), "sst2-a0.3", "fedhft-epochs2x32", 0.003, sizing, none)
    assert not same_row(_row(), "agnews-a0.3", "fedhft-epochs2x32", 0.01, sizing, none)
    assert not same_row(_row(), "sst2-a0.3", "fedhft", 0.01, sizing, none)
    assert not same_row(_row(), "sst2-a0.3", "fedhft-epochs2x32", 0.01, json.dumps(QUICK, sort_keys=True), none)
    assert not same_row(_row(), "sst2-a0.3", "fedhft-epochs2x32", 0.01, sizing, json.dumps({"num_clusters": 1}))
    assert not same_row(_row(status="failed"), "sst2-a0.3", "fedhft-epochs2x32", 0.01, sizing, none)
    # options are compared by value, whatever the order of their keys
    opts = {"masked": False, "explore": 0.0}
    key = json.dumps({"explore": 0.0, "masked": False}, sort_keys=True)
    assert same_row(_row(options=opts), "sst2-a0.3", "fedhft-epochs2x32", 0.01, sizing, key)


def test_row_names_and_a_runs_sizing_take_the_tag_the_setting_and_the_sizing_overrides():
    assert row_name("hetlora", "") == "hetlora" and row_name("hetlora", "epochs2x32") == "hetlora-epochs2x32"
    assert run_sizing(FULL, "sst2-a0.3", ["data_root=/d"]) == FULL
    assert run_sizing(FULL, "mrpc-a5.0", [])["max_seq_len"] == 64  # the setting's own sizing
    got = run_sizing(FULL, "sst2-a0.3", ["local_steps=0", "local_epochs=2", "batch_size=32"])
    assert got == {**FULL, "local_steps": 0, "local_epochs": 2, "batch_size": 32}


def test_the_table_shows_final_values_and_a_dash_for_a_missing_metric():
    lines = table([_row()]).splitlines()
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells == ["sst2-a0.3", "fedhft-epochs2x32", "0.01", "0.909", "-", "-", "-", "0.734", "12"]


def test_every_bad_argument_is_reported_at_once():
    args = parse(
        ["--log", "x", "--settings", "sst2-a0.3,nope", "--strategies", "fedhft,bogus", "--lrs", "0.01,x"]
        + ["--options", "[1]"]
    )
    options, problems = check(args)
    text = "; ".join(problems)
    assert options == {} and len(problems) == 4, problems
    assert "unknown settings ['nope']" in text and "unknown strategies ['bogus']" in text
    assert "--lrs '0.01,x'" in text and "--options '[1]'" in text


def test_options_a_strategy_does_not_take_and_bad_overrides_are_refused(tmp_path, capsys):
    from benchmarks.select import main

    log = tmp_path / "sel.jsonl"
    argv = ["--log", str(log), "--settings", "sst2-a0.3", "--strategies", "fedhft,hetlora", "--lrs", "0.01"]
    assert main([*argv, "--quick", "--options", '{"explore": 0.0}']) == 2
    err = capsys.readouterr().err
    assert "strategy 'hetlora' does not accept ['explore']" in err and "'fedhft'" not in err
    assert main([*argv, "--quick", "batch_size=[", "clientz=3"]) == 2
    err = capsys.readouterr().err
    assert "batch_size" in err and "did you mean 'clients'" in err and "Traceback" not in err
    assert not log.exists() and not list(tmp_path.iterdir())

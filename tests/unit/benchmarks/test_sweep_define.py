"""Settings defined on the command line (``--define``): checked before any run, tuned where their data is,
and their rows kept to their definition; a data override of every setting is refused."""

from __future__ import annotations

import json

import pytest

from benchmarks import _sweep_matrix as matrix
from benchmarks import select as sel
from benchmarks import sweep as sw

REVIEWS = {"reviews-a0.5": {"dataset": "reviews.tsv", "partition": "dirichlet", "alpha": 0.5}}


@pytest.fixture(autouse=True)
def built_in_settings_only():
    """Each test starts and ends with the built-in settings only."""
    matrix.forget_definitions()
    before = dict(matrix.SETTINGS)
    yield
    matrix.forget_definitions()
    assert matrix.SETTINGS == before


def test_a_definition_is_a_json_object_of_named_settings_and_every_problem_is_named_at_once():
    assert matrix.parse_definitions(json.dumps(REVIEWS)) == (REVIEWS, [])
    assert matrix.parse_definitions(None) == ({}, [])
    bad = {
        "sst2-a0.3": {"dataset": "x.tsv"},  # a built-in's name
        "my data": {"dataset": "x.tsv"},  # not a file name
        "nodata": {"partition": "iid"},
        "typo": {"dataset": "x.tsv", "alhpa": 0.5, "rounds": 3},
    }
    defs, problems = matrix.parse_definitions(json.dumps(bad))
    assert defs == {}
    assert len(problems) == 4
    assert "'sst2-a0.3': a built-in setting has that name" in problems[0]
    assert "'my data': use letters, digits" in problems[1]
    assert "'nodata': name its dataset" in problems[2]
    assert "'typo': unknown keys ['alhpa', 'rounds']" in problems[3] and "sizing keys" in problems[3]
    for text in ("{not json", "[1, 2]", '{"a": 3}'):
        defs, [problem] = matrix.parse_definitions(text)
        assert defs == {} and "--define" in problem and "e.g." in problem


def test_a_data_override_of_every_setting_is_refused_with_the_definition_to_use():
    problems = matrix.setting_override_problems(["dataset=x.tsv", "alpha=0.1", "rounds=3", "data_root=/d"])
    assert [p.split("=")[0] for p in problems] == ["alpha", "dataset"]
    assert all("--define" in p and "--settings mydata-a0.5" in p for p in problems)


def test_a_defined_setting_on_a_users_data_is_tuned_on_its_own_tuning_half():
    matrix.define_settings({**REVIEWS, "sst2-a0.1": {"dataset": "sst2", "partition": "dirichlet", "alpha": 0.1}})
    assert matrix.tune_setting("reviews-a0.5", per_dataset=False) == "reviews-a0.5"
    assert matrix.tune_setting("reviews-a0.5", per_dataset=True) == "reviews-a0.5"
    # on a built-in dataset, the dataset's rule: tuned once at TUNE_ONCE, or at its reference setting
    assert matrix.tune_setting("sst2-a0.1", per_dataset=False) == matrix.TUNE_ONCE
    assert matrix.tune_setting("sst2-a0.1", per_dataset=True) == "sst2-a5.0"
    assert matrix.definition("reviews-a0.5") == json.dumps(REVIEWS["reviews-a0.5"], sort_keys=True)
    assert matrix.definition("sst2-a5.0") is None


def test_logged_rows_of_a_name_defined_otherwise_are_refused_and_built_in_rows_are_kept(tmp_path):
    matrix.define_settings(REVIEWS)
    mine = {"setting": "reviews-a0.5", "setting_def": matrix.definition("reviews-a0.5")}
    sw.check_definitions([mine, {"setting": "sst2-a5.0"}, {"setting": "gone-a1", "setting_def": "{}"}], tmp_path)
    other = {"setting": "reviews-a0.5", "setting_def": json.dumps({"dataset": "other.tsv"})}
    with pytest.raises(sw.DefinitionConflict, match="give the setting another name, or use another --out"):
        sw.check_definitions([mine, other], tmp_path)
    with pytest.raises(sw.DefinitionConflict, match="the built-in one"):  # a built-in name defined once before
        sw.check_definitions([{"setting": "sst2-a5.0", "setting_def": "{}"}], tmp_path)


def test_the_sweep_reports_every_problem_of_its_command_line_before_running_anything(tmp_path, capsys):
    argv = ["--out", str(tmp_path / "out"), "--settings", "nosuch,reviews-a0.5", "--define", "{bad", "dataset=x"]
    assert sw.main(argv) == 2
    err = capsys.readouterr().err
    assert "nothing ran" in err and "--define is not JSON" in err and "dataset= would change" in err
    assert "unknown settings ['nosuch', 'reviews-a0.5']" in err and "--define adds one" in err
    assert not (tmp_path / "out").exists()


def test_a_defined_settings_missing_file_is_found_by_the_preflight_before_any_run(tmp_path, capsys):
    define = json.dumps({"reviews-a0.5": {"dataset": str(tmp_path / "missing.tsv"), "partition": "iid"}})
    argv = ["--quick", "--out", str(tmp_path / "out"), "--settings", "reviews-a0.5", "--define", define]
    assert sw.main(argv) == 2
    err = capsys.readouterr().err
    assert "reviews-a0.5: " in err and "missing.tsv" in err
    assert not list((tmp_path / "out").glob("runs-*.jsonl"))


def test_select_refuses_a_data_override_and_keeps_a_defined_settings_rows_to_its_definition(tmp_path):
    args = sel.parse(
        ["--log", str(tmp_path / "l.jsonl"), "--settings", "sst2-a0.3", "--strategies", "hetlora", "--lrs", "0.01"]
        + ["dataset=x.tsv"]
    )
    _, problems = sel.check(args)
    assert any(p.startswith("dataset= would change") for p in problems)
    matrix.define_settings(REVIEWS)
    row = {"setting": "reviews-a0.5", "strategy": "hetlora", "lr": 0.01, "sizing": "s", "options": {}}
    assert not sel.same_row(row, "reviews-a0.5", "hetlora", 0.01, "s", "{}")  # logged before the definition
    row["setting_def"] = matrix.definition("reviews-a0.5")
    assert sel.same_row(row, "reviews-a0.5", "hetlora", 0.01, "s", "{}")


def test_a_fedhft_ablation_named_on_the_command_line_runs_on_the_defined_settings_too():
    matrix.define_settings(REVIEWS)
    assert matrix.runs_variant("fedhft-k1", "reviews-a0.5")
    assert matrix.runs_variant("fedhft-k1", "sst2-a0.3") and not matrix.runs_variant("fedhft-k1", "sst2-a5.0")
    assert not matrix.runs_variant("fedhft-domains", "reviews-a0.5")  # it needs amazon's natural partition

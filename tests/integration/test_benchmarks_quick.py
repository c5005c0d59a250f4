"""Every benchmark's quick mode, as CI runs it (`fedhft bench NAME --quick`), into a scratch folder.

These check that each benchmark runs end to end on real components and writes well-formed,
internally consistent results; they never assert a wall-clock time.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from benchmarks.cli import BENCHMARKS
from simulate import host_label
from simulate._results_md import RESULTS_MD

pytestmark = [pytest.mark.integration, pytest.mark.slow]
needs_mosquitto = pytest.mark.requires("mosquitto")


def _bench(name: str, *argv: str) -> int:
    import importlib

    return importlib.import_module(BENCHMARKS[name]).main(list(argv))


@pytest.fixture(autouse=True)
def results_md_untouched():
    """A quick run into a scratch folder must never rewrite the committed results page."""
    before = RESULTS_MD.read_bytes() if RESULTS_MD.exists() else None
    yield
    assert (RESULTS_MD.read_bytes() if RESULTS_MD.exists() else None) == before


def test_comm_quick(tmp_path: Path):
    assert _bench("comm", "--quick", "--out", str(tmp_path)) == 0
    rows = json.loads((tmp_path / "comm.json").read_text())["rows"]
    assert {r["tier"] for r in rows} >= {"android-low", "android-mid", "rpi5", "android-high", "jetson-orin-nano"}
    for r in rows:
        assert r["masked_int8"] < r["masked_fp16"] < r["masked_fp32"] <= r["full_fp32"]
    assert (tmp_path / "comm.png").stat().st_size > 0


@needs_mosquitto
def test_server_scale_quick(tmp_path: Path):
    out = tmp_path / "server.json"
    assert _bench("server", "--quick", "--out", str(out)) == 0
    [row] = json.loads(out.read_text())["results"]
    assert row["clients"] == 100 and row["rounds"] == 2
    assert row["stored_last_round"] == 100, row
    assert row["bytes_up_last_round"] > 0 and row["peak_rss_mb"] > 0


def test_device_step_quick(tmp_path: Path):
    # The tiny model keeps CI short (MiniLM export of three backends takes ~10 min on a busy 2-core box);
    # `fedhft bench device --quick` on a user's device runs MiniLM.
    assert _bench("device", "--quick", "--model", "tiny", "--out", str(tmp_path)) == 0
    doc = json.loads((tmp_path / "device_step.json").read_text())
    assert doc["steps"] == 3 and doc["rows"]
    for r in doc["rows"]:
        assert "error" not in r["backend_run"], r
        assert r["backend_run"]["peak_rss_mb"] > 0
    assert (tmp_path / "device_step.png").stat().st_size > 0


@needs_mosquitto
def test_accuracy_quick_runs_every_strategy_and_the_upper_bound(tmp_path: Path):
    assert _bench("accuracy", "--quick", "--out", str(tmp_path)) == 0, (tmp_path / "runs.jsonl").read_text()
    doc = json.loads((tmp_path / "accuracy.json").read_text())
    strategies = {"fedavg-lora", "hetlora", "flexlora", "heterofl", "legend", "heterotune", "fedhft"}
    assert {r["strategy"] for r in doc["runs"]} == strategies
    for run in doc["runs"]:
        assert run["ok"], run
        assert len(run["rounds"]) == 2 and all(r["accuracy"] is not None for r in run["rounds"]), run
        assert all(r["bytes_up"] > 0 for r in run["rounds"]), run
    assert any(r["strategy"].startswith("centralized") for r in doc["rows"])
    assert (tmp_path / "runs.jsonl").read_text().count("\n") == len(strategies), (tmp_path / "runs.jsonl").read_text()

    # --resume keeps every finished run and starts none again.
    assert _bench("accuracy", "--quick", "--resume", "--out", str(tmp_path)) == 0
    again = json.loads((tmp_path / "accuracy.json").read_text())
    assert [r["run_dir"] for r in again["runs"]] == [r["run_dir"] for r in doc["runs"]]
    assert again["centralized"] == doc["centralized"]


def _has_amazon() -> bool:
    from simulate import find_data_root

    root = find_data_root()
    return root is not None and (root / "amazon-multidomain").is_dir()


@needs_mosquitto
@pytest.mark.may_skip("the Amazon multi-domain data is not public: a fresh clone has no ../shared/data")
@pytest.mark.skipif(not _has_amazon(), reason="needs ../shared/data/amazon-multidomain")
def test_personalization_quick_reports_clusters_and_both_accuracies(tmp_path: Path):
    assert _bench("personalization", "--quick", "--out", str(tmp_path)) == 0
    rows = json.loads((tmp_path / "personalization.json").read_text())["rows"]
    assert {r["strategy"] for r in rows} == {"fedhft", "fedavg-lora"}
    assert all(r["ok"] for r in rows), rows
    [fedhft] = [r for r in rows if r["strategy"] == "fedhft"]
    assert -1.0 <= fedhft["ari"] <= 1.0
    for kind in ("global", "personalized"):
        accs = fedhft[f"{kind}_by_domain"]
        assert set(accs) == {"books", "dvd", "electronics", "kitchen"}, accs
        assert all(0.0 <= a <= 1.0 for a in accs.values())
    assert (tmp_path / "personalization.png").stat().st_size > 0
    from benchmarks.clusters import cluster_rounds

    rounds = cluster_rounds(tmp_path / "runs" / "fedhft-s0")  # its real stored states and data
    assert rounds and all(sum(c["members"] for c in r["clusters"]) == len(fedhft["clusters"]) for r in rounds)


def _logged(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_sweep_quick_reports_runs_and_ablations_and_a_resume_runs_nothing_again(tmp_path: Path):
    argv = ["--quick", "--out", str(tmp_path), "--settings", "sst2-a0.3", "--central", "no"]
    argv += ["--strategies", "fedavg-lora,fedhft,local-only,fedhft-k1"]
    assert _bench("sweep", *argv) == 0
    log = tmp_path / "runs-sst2-a0.3.jsonl"
    rows = _logged(log)
    assert sorted(r["strategy"] for r in rows) == ["fedavg-lora", "fedhft", "fedhft-k1", "local-only"]
    for r in rows:
        assert r["status"] == "completed" and r["kind"] == "eval" and len(r["rounds"]) == 3, r
        assert 0.0 <= r["headline"]["personalized_acc_after"]["final"] <= 1.0 and r["clients"], r
        assert r["host"]["versions"]["torch"].startswith("2.") and r["host"]["cores"] >= 1, r["host"]
    doc = json.loads((tmp_path / "sweep.json").read_text())
    assert {r["strategy"] for r in doc["rows"]} == {r["strategy"] for r in rows}
    [cmp] = doc["comparisons"]  # FedHFT against the best other federated strategy, never local-only
    assert cmp["personalized_acc_after_final"]["best_baseline"] == "fedavg-lora"
    report = (tmp_path / "sweep.md").read_text()
    assert "| sst2-a0.3 | fedhft-k1 | fedhft | 0 |" in report  # the ablation table
    assert "Hosts of the rows" in report and f"4 on {host_label(rows[0]['host'])}" in report
    assert _bench("sweep", *argv, "--resume") == 0
    assert _logged(log) == rows


def test_sweep_quick_runs_settings_defined_on_a_users_file_and_keeps_their_rows_to_their_definitions(
    tmp_path: Path, capsys
):
    from benchmarks.accuracy import toy_dataset

    data = toy_dataset(tmp_path / "reviews.jsonl", 400)
    plain = {"dataset": str(data), "partition": "dirichlet", "alpha": 0.5}
    shift = {"dataset": str(data), "partition": "iid", "concept_groups": 2}  # half the clients flip the labels
    define = json.dumps({"reviews-a0.5": plain, "reviews-flip": shift})
    argv = ["--quick", "--out", str(tmp_path / "out"), "--settings", "reviews-a0.5,reviews-flip", "--define", define]
    argv += ["--strategies", "fedavg-lora,fedhft"]
    assert _bench("sweep", *argv) == 0
    logs = {s: _logged(tmp_path / "out" / f"runs-{s}.jsonl") for s in ("reviews-a0.5", "reviews-flip")}
    for setting, rows in logs.items():
        assert sorted(r["strategy"] for r in rows) == ["fedavg-lora", "fedhft"]
        for r in rows:
            assert r["status"] == "completed" and json.loads(r["setting_def"])["dataset"] == str(data), r
            run_dir = tmp_path / "out" / "runs" / setting / f"eval-{r['strategy']}-s0-lr0.02"
            config = yaml.safe_load((run_dir / "config.yaml").read_text())
            assert (config["dataset"], config["train_pool"]) == (str(data), "eval")
            groups = json.loads((run_dir / "results.json").read_text())["data"]["concept_groups"]
            if setting == "reviews-flip":  # the quick sweep's 4 clients, labels flipped for two
                assert config["concept_groups"] == 2 and sorted(groups.values()) == [0, 0, 1, 1]
            else:
                assert config["alpha"] == 0.5 and groups is None
    doc = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert doc["settings"] == {"reviews-a0.5": plain, "reviews-flip": shift}
    bound = doc["centralized"]["reviews-a0.5/s0"]  # tuned on its own file's tuning half, not on SST-2
    assert 0.0 <= bound["accuracy"] <= 1.0 and json.loads(bound["setting_def"])["alpha"] == 0.5
    assert "reviews-flip/s0" not in doc["centralized"]  # clients that disagree on labels have no one-model bound
    tuned = json.loads((tmp_path / "out" / "centralized-tuning.json").read_text())
    assert list(tuned) == ["reviews-a0.5/lr0.02"]
    assert _bench("sweep", *argv, "--resume") == 0  # the same definitions: nothing runs again
    assert {s: _logged(tmp_path / "out" / f"runs-{s}.jsonl") for s in logs} == logs
    capsys.readouterr()
    other = json.dumps({"reviews-a0.5": {"dataset": str(data), "partition": "iid"}})
    argv = ["--quick", "--out", str(tmp_path / "out"), "--settings", "reviews-a0.5", "--define", other, "--resume"]
    assert _bench("sweep", *argv) == 2
    assert "defined as" in capsys.readouterr().err  # the name's logged rows are another setting's: refused
    assert _logged(tmp_path / "out" / "runs-reviews-a0.5.jsonl") == logs["reviews-a0.5"]


def test_select_quick_logs_each_run_on_the_tuning_half_and_resumes(tmp_path: Path, capsys):
    log = tmp_path / "selection-x.jsonl"
    argv = ["--log", str(log), "--settings", "sst2-a0.3", "--strategies", "hetlora,fedhft-k1", "--lrs", "0.01"]
    argv += ["--tag", "epochs1", "--quick", "local_steps=0", "local_epochs=1"]
    assert _bench("select", *argv) == 0
    rows = _logged(log)
    assert [r["strategy"] for r in rows] == ["hetlora-epochs1", "fedhft-k1-epochs1"]
    for r in rows:
        assert (r["kind"], r["seed"], r["status"]) == ("select", 100, "completed"), r
        assert json.loads(r["sizing"])["local_epochs"] == 1 and r["options"] == {}
    run_dir = tmp_path / "runs" / "select" / "selection-x" / "sst2-a0.3-fedhft-k1-epochs1-lr0.01"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["train_pool"] == "tune" and config["strategy_options"]["num_clusters"] == 1
    table = capsys.readouterr().out
    assert "| sst2-a0.3 | fedhft-k1-epochs1 | 0.01 |" in table
    assert _bench("select", *argv) == 0  # both rows are logged: nothing runs again
    assert _logged(log) == rows

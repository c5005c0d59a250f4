"""The sweep's pure parts: lr choice on tuning runs only, summaries, the paired test, comparisons."""

from __future__ import annotations

import json
import multiprocessing

import pytest

from benchmarks.sweep import (
    ablation_table,
    append_line,
    choose_lrs,
    compare,
    paired_test,
    per_client_final,
    run_log,
    run_logs,
    sizing_overrides,
    split_legacy_log,
    summarize,
)


def _run(kind, strategy, seed, lr, pers, glob, clients=None, setting="s"):
    return {
        "kind": kind,
        "setting": setting,
        "strategy": strategy,
        "seed": seed,
        "lr": lr,
        "status": "completed",
        "headline": {
            "personalized_acc_after": {"final": pers, "best": pers},
            "global_accuracy": {"final": glob, "best": glob},
        },
        "clients": clients or {},
    }


def test_lr_is_chosen_on_tuning_runs_only():
    runs = [
        _run("tune", "fedhft", 100, 1e-3, 0.7, 0.5),
        _run("tune", "fedhft", 100, 1e-2, 0.8, 0.5),
        _run("eval", "fedhft", 0, 1e-3, 0.99, 0.9),
    ]  # a reported run never influences the choice
    assert choose_lrs(runs, "s", ["fedhft", "hetlora"], (1e-3, 3e-3, 1e-2)) == {"fedhft": 1e-2, "hetlora": 3e-3}


def test_summary_means_and_stds_over_seeds():
    runs = [_run("eval", "a", 0, 0.1, 0.6, 0.5), _run("eval", "a", 1, 0.1, 0.8, 0.7)]
    [row] = summarize(runs)
    assert row["personalized_acc_after_final"] == (pytest.approx(0.7), pytest.approx(0.1))
    assert row["global_accuracy_final"] == (pytest.approx(0.6), pytest.approx(0.1))
    assert row["completed"] == 2 and row["seeds"] == 2


def _clients(values):
    return {f"c{i}": {"val_acc_after": v} for i, v in enumerate(values)}


def test_paired_test_over_seed_and_client():
    a = [_run("eval", "fedhft", s, 0.1, 0, 0, _clients([0.9, 0.8, 0.95, 0.85, 0.9])) for s in (0, 1)]
    b = [_run("eval", "hetlora", s, 0.1, 0, 0, _clients([0.7, 0.6, 0.75, 0.65, 0.71])) for s in (0, 1)]
    t = paired_test(a + b, "s", "fedhft", "hetlora")
    assert t["pairs"] == 10 and t["mean_diff"] == pytest.approx(0.198)
    assert t["p_value"] < 0.01 and t["significant"]
    same = paired_test(a + [dict(r, strategy="hetlora") for r in a], "s", "fedhft", "hetlora")
    assert same["mean_diff"] == 0 and same["p_value"] == 1.0 and not same["significant"]


def test_compare_names_the_best_other_strategy_and_ignores_local_only():
    runs = [
        _run("eval", "fedhft", 0, 0.1, 0.80, 0.70),
        _run("eval", "hetlora", 0, 0.1, 0.75, 0.72),
        _run("eval", "flexlora", 0, 0.1, 0.78, 0.60),
        _run("eval", "local-only", 0, 0.1, 0.95, 0.5),
        _run("eval", "fedhft-k1", 0, 0.1, 0.99, 0.99),  # a FedHFT variant is never the baseline
        _run("eval", "fedhft-residual-k3", 0, 0.1, 0.99, 0.99),  # nor one of an earlier default, kept in the log
    ]
    [c] = compare(summarize(runs), runs)
    assert c["personalized_acc_after_final"]["best_baseline"] == "flexlora"
    assert c["personalized_acc_after_final"]["diff"] == pytest.approx(0.02)
    assert c["global_accuracy_final"]["best_baseline"] == "hetlora"
    assert c["global_accuracy_final"]["diff"] == pytest.approx(-0.02)


def test_per_client_final_takes_each_clients_last_stored_round(tmp_path):
    rows = [
        {"round": 0, "client": "c0", "status": "stored", "metrics": json.dumps({"val_acc_after": 0.5})},
        {"round": 1, "client": "c0", "status": "stored", "metrics": {"val_acc_after": 0.7, "val_examples": 4}},
        {"round": 2, "client": "c0", "status": "outcome", "metrics": None},
    ]
    (tmp_path / "clients.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert per_client_final(tmp_path) == {"c0": {"val_acc_after": 0.7, "val_examples": 4}}


def test_per_client_final_adds_each_clients_final_cluster_and_concept_group(tmp_path):
    rows = [
        {"round": 3, "client": c, "status": "stored", "metrics": {"val_acc_after": a}}
        for c, a in (("c0", 0.9), ("c1", 0.8), ("c2", 0.6))
    ]
    (tmp_path / "clients.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    doc = {
        "memberships": {"c0": [0.2, 0.8], "c1": [0.9, 0.1], "c2": []},  # c2: a strategy without clusters
        "data": {"concept_groups": {"c0": 1, "c1": 0, "c2": 1}},
    }
    (tmp_path / "results.json").write_text(json.dumps(doc))
    assert per_client_final(tmp_path) == {
        "c0": {"val_acc_after": 0.9, "cluster": 1, "group": 1},
        "c1": {"val_acc_after": 0.8, "cluster": 0, "group": 0},
        "c2": {"val_acc_after": 0.6, "group": 1},
    }


def test_an_ablation_is_fedhft_with_its_settings(tmp_path):
    from benchmarks.sweep import FULL, SETTINGS, sim_config

    cfg = sim_config(SETTINGS["sst2-a5.0"], "fedhft-k1", 0, 3e-3, FULL, tmp_path / "r", [])
    assert cfg.strategy == "fedhft" and cfg.strategy_options == {"num_clusters": 1}
    assert cfg.engine == "inprocess" and cfg.train_pool == "eval" and cfg.alpha == 5.0
    warm = sim_config(SETTINGS["sst2-a5.0"], "fedhft-warmup2", 0, 3e-3, FULL, tmp_path / "r", [], train_pool="tune")
    assert warm.warmup_rounds == 2 and warm.train_pool == "tune"
    # strategy options given with a variant are added to its own, never replace them
    more = sim_config(
        SETTINGS["sst2-a5.0"], "fedhft-k2", 0, 3e-3, FULL, tmp_path / "r", [], strategy_options={"explore": 0.0}
    )
    assert more.strategy_options == {"num_clusters": 2, "per_cluster": "all", "explore": 0.0}


def _args(strategies, quick=False, reference=True):
    import argparse

    return argparse.Namespace(strategies=",".join(strategies), quick=quick, reference=reference)


def test_the_plan_tunes_once_then_goes_seed_by_seed_and_ablates_only_the_non_iid_settings():
    from benchmarks.sweep import ABLATION_SETTINGS, REFERENCE, TUNE_ONCE, TUNE_SEED, plan

    steps = plan(
        _args(["fedhft", "hetlora", "fedhft-k1"]), ["sst2-a5.0", "sst2-a0.3", "mrpc-a5.0"], [0, 1], (1e-3, 1e-2)
    )
    tunes = [s for s in steps if s[0] == "tune"]
    assert steps[: len(tunes)] == tunes  # every tuning run comes first
    assert {(s[1], s[2], s[3], s[4]) for s in tunes} == {
        (TUNE_ONCE, strategy, TUNE_SEED, lr) for strategy in ("fedhft", "hetlora") for lr in (1e-3, 1e-2)
    }
    seeds = [s[3] for s in steps if s[0] == "eval"]
    assert seeds == sorted(seeds)  # seed 0 covers every setting before seed 1 starts
    assert {s[1] for s in steps if s[0] == "eval" and s[3] == 0} == {"sst2-a5.0", "sst2-a0.3", "mrpc-a5.0"}
    ablations = [s for s in steps if s[2] == "fedhft-k1"]
    assert {s[1] for s in ablations} == {"sst2-a0.3"} and "sst2-a0.3" in ABLATION_SETTINGS
    assert [s[:3] for s in steps[-2:]] == [
        ("reference", REFERENCE["setting"], "fedhft"),
        ("reference", REFERENCE["setting"], None),
    ]
    assert not any(
        s[0] == "reference" for s in plan(_args(["fedhft"], reference=False), ["sst2-a5.0"], [0], (1e-3, 1e-2))
    )


def test_per_dataset_tuning_tunes_each_dataset_at_its_reference_setting():
    from benchmarks.sweep import TUNE_SETTING, chosen_lr, plan

    args = _args(["fedhft"])
    args.tune_per_dataset = True
    steps = plan(args, ["sst2-a0.3", "mrpc-a5.0"], [0], (1e-3, 1e-2))
    assert {s[1] for s in steps if s[0] == "tune"} == {TUNE_SETTING["sst2"], TUNE_SETTING["mrpc"]}
    runs = [
        _run("tune", "fedhft", 100, 1e-3, 0.9, 0.5, setting="mrpc-a5.0"),
        _run("tune", "fedhft", 100, 1e-2, 0.8, 0.5, setting="mrpc-a5.0"),
        _run("tune", "fedhft", 100, 1e-2, 0.9, 0.5, setting="sst2-a5.0"),
    ]
    assert chosen_lr(runs, "mrpc-a5.0", "fedhft", (1e-3, 1e-2), per_dataset=True) == 1e-3
    assert chosen_lr(runs, "mrpc-a5.0", "fedhft", (1e-3, 1e-2)) == 1e-2  # tuned once, at sst2-a5.0


def test_an_ablation_runs_at_fedhfts_tuned_rate_and_the_reference_picks_the_best_baseline():
    from benchmarks.sweep import best_baseline, chosen_lr

    runs = [
        _run("tune", "fedhft", 100, 1e-3, 0.7, 0.5, setting="sst2-a5.0"),
        _run("tune", "fedhft", 100, 1e-2, 0.8, 0.5, setting="sst2-a5.0"),
        _run("tune", "hetlora", 100, 1e-3, 0.9, 0.5, setting="sst2-a5.0"),
    ]
    assert chosen_lr(runs, "sst2-a0.3", "fedhft-k1", (1e-3, 1e-2)) == 1e-2
    assert chosen_lr(runs, "sst2-a0.3", "hetlora", (1e-3, 1e-2)) == 1e-3
    scores = {"fedhft": (0.80, 0.7), "hetlora": (0.75, 0.7), "flexlora": (0.78, 0.6), "local-only": (0.9, 0.5)}
    evals = [_run("eval", name, 0, 0.1, pers, glob, setting="x") for name, (pers, glob) in scores.items()]
    assert best_baseline(evals, "x") == "flexlora"  # local-only is a reference, not a baseline


def test_curves_average_the_seeds_per_round_and_accumulate_the_megabytes(tmp_path):
    from benchmarks._sweep_plots import curves, plot_curves

    def line(i, glob, pers):
        return {"round": i, "accuracy": glob, "personalized": {"acc_after": pers}, "bytes_up": 1e6, "bytes_down": 2e6}

    runs = [
        {
            **_run("eval", "fedhft", seed, 0.01, 0.8, 0.7, setting="x"),
            "rounds": [line(0, 0.5 + seed / 10, 0.6), line(1, 0.7, 0.8 + seed / 10), line(2, 0.9, 0.9)][: 3 - seed],
        }
        for seed in (0, 1)
    ]
    c = curves(runs, "x")["fedhft"]
    assert list(c["round"]) == [0, 1]  # the rounds every seed reached
    assert c["global"] == pytest.approx([0.55, 0.7]) and c["personalized"] == pytest.approx([0.6, 0.85])
    assert c["mb"] == pytest.approx([3.0, 6.0])
    assert plot_curves(runs, tmp_path) == ["curves_x.png"] and (tmp_path / "curves_x.png").stat().st_size > 0


def test_the_cost_note_projects_the_unfinished_steps_at_the_mean_rate():
    from benchmarks.sweep import FULL, REFERENCE, cost_note

    runs = [
        {**_run("tune", "fedhft", 100, 0.01, 0.8, 0.7), "wall_s": 100.0},
        {**_run("eval", "fedhft", 0, 0.01, 0.8, 0.7), "wall_s": 300.0},
    ]
    steps = [
        ("tune", "s", "fedhft", 100, 0.01),
        ("eval", "s", "fedhft", 0, None),
        ("eval", "s", "hetlora", 0, None),
        ("reference", "s", "fedhft", 0, None),
        ("reference", "s", None, 0, None),
    ]
    scale = REFERENCE["clients"] * REFERENCE["rounds"] / (FULL["clients"] * FULL["rounds"])
    hours = 200.0 * (1 + 2 * scale) / 3600
    assert cost_note(runs, steps) == (
        "Cost: 2 runs took 200 s each on average (0.1 h); the unfinished part of the "
        f"plan needs about {hours:.1f} h more at that rate."
    )
    assert cost_note([], steps) == "Cost: no run finished yet."


def _append_rows(log, writer: str) -> None:
    for i in range(100):  # each row longer than a buffered writer's 8 kB chunk
        append_line(log, json.dumps({"writer": writer, "i": i, "pad": "x" * 20_000}))


def test_rows_appended_by_two_processes_at_once_stay_whole_lines(tmp_path):
    log = tmp_path / "runs.jsonl"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_rows, args=(log, w)) for w in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    rows = [json.loads(x) for x in log.read_text().splitlines()]  # a torn line would not parse
    assert sorted((r["writer"], r["i"]) for r in rows) == [(w, i) for w in ("a", "b") for i in range(100)]


def test_a_legacy_single_log_is_split_into_per_setting_logs_without_losing_a_row(tmp_path):
    rows = [{"setting": st, "strategy": f"s{i}", "seed": i} for i, st in enumerate(["sst2-a0.3", "mrpc-a5.0"] * 3)]
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
    append_line(run_log(tmp_path, "sst2-a0.3"), json.dumps(rows[4]))  # a row already in the new layout
    split_legacy_log(tmp_path)
    assert not (tmp_path / "runs.jsonl").exists()
    assert [p.name for p in run_logs(tmp_path)] == ["runs-mrpc-a5.0.jsonl", "runs-sst2-a0.3.jsonl"]
    got = [json.loads(x) for p in run_logs(tmp_path) for x in p.read_text().splitlines()]
    assert sorted(got, key=lambda r: r["seed"]) == rows[:5]
    split_legacy_log(tmp_path)  # nothing left to move: a no-op
    assert sum(len(p.read_text().splitlines()) for p in run_logs(tmp_path)) == 5


def _ablation_row(strategy: str, seed: int, pers: float, glob: float, setting: str = "sst2-a0.3") -> dict:
    h = {"personalized_acc_after": {"final": pers}, "global_accuracy": {"final": glob}}
    return {"kind": "eval", "setting": setting, "strategy": strategy, "seed": seed, "headline": h}


def test_the_ablation_table_compares_each_variant_with_its_own_default_on_shared_seeds():
    runs = [
        _ablation_row("fedhft", 0, 0.80, 0.70),
        _ablation_row("fedhft", 1, 0.90, 0.60),
        _ablation_row("fedhft-k1", 0, 0.85, 0.75),  # seed 0 only: compared with fedhft's seed 0
        _ablation_row("fedhft-allclusters", 0, 0.79, 0.66),  # the default before fedhft's: against fedhft
        _ablation_row("fedhft-k2", 0, 0.78, 0.65),  # the default before fedhft-allclusters: against it
        _ablation_row("fedhft-k2-nomask", 0, 0.74, 0.60),  # an old default's ablation: against it
        _ablation_row("fedhft-residual", 0, 0.70, 0.50),  # replaced by fedhft-k2: against it
        _ablation_row("fedhft-residual-k1", 0, 0.76, 0.40),  # against fedhft-residual, not fedhft
        _ablation_row("fedavg-lora", 0, 0.99, 0.99),  # not a FedHFT variant: no row
        _ablation_row("fedhft-k1", 0, 0.10, 0.10, setting="sst2-a5.0"),  # not an ablation setting
    ]
    rows = [x for x in ablation_table(runs).splitlines() if x.startswith("| sst2")]
    cells = [[c.strip() for c in x.strip("|").split("|")] for x in rows]
    want = [
        ["sst2-a0.3", "fedhft-k1", "fedhft", "0", "0.850", "+0.050", "-", "-", "-", "-", "0.750", "+0.050"],
        ["sst2-a0.3", "fedhft-allclusters", "fedhft", "0", "0.790", "-0.010", "-", "-", "-", "-", "0.660", "-0.040"],
        ["sst2-a0.3", "fedhft-k2", "fedhft-allclusters", "0", "0.780", "-0.010", "-", "-", "-", "-", "0.650", "-0.010"],
        ["sst2-a0.3", "fedhft-k2-nomask", "fedhft-k2", "0", "0.740", "-0.040", "-", "-", "-", "-", "0.600", "-0.050"],
        ["sst2-a0.3", "fedhft-residual", "fedhft-k2", "0", "0.700", "-0.080", "-", "-", "-", "-", "0.500", "-0.150"],
        [
            "sst2-a0.3",
            "fedhft-residual-k1",
            "fedhft-residual",
            "0",
            "0.760",
            "+0.060",
            "-",
            "-",
            "-",
            "-",
            "0.400",
            "-0.100",
        ],
    ]
    assert cells == want
    assert ablation_table([_ablation_row("fedhft", 0, 0.8, 0.7)]) == ""


def test_a_variant_with_settings_of_its_own_is_planned_and_tabled_only_there():
    from benchmarks.sweep import ablation_table, plan

    steps = plan(_args(["fedhft", "fedhft-domains", "fedhft-k1"]), ["sst2-a0.3", "amazon-natural"], [0], (1e-2,))
    variants = {(s[1], s[2]) for s in steps if s[2] != "fedhft"}
    assert variants == {("amazon-natural", "fedhft-domains"), ("sst2-a0.3", "fedhft-k1")}
    runs = [
        _ablation_row("fedhft", 0, 0.80, 0.70, setting="amazon-natural"),
        _ablation_row("fedhft-domains", 0, 0.78, 0.71, setting="amazon-natural"),
        _ablation_row("fedhft-allclusters", 0, 0.79, 0.70, setting="amazon-natural"),  # reported, not an ablation here
    ]
    rows = [x for x in ablation_table(runs).splitlines() if x.startswith("| amazon")]
    cells = [[c.strip() for c in x.strip("|").split("|")] for x in rows]
    assert cells == [
        ["amazon-natural", "fedhft-domains", "fedhft", "0", "0.780", "-0.020", "-", "-", "-", "-", "0.710", "+0.010"]
    ]


def test_overrides_that_change_what_a_run_measures_join_its_sizing():
    got = sizing_overrides(
        ["local_steps=0", "local_epochs=2", "batch_size=32", "lr_decay=0.8", "data_root=/d", "model=/w"]
    )
    assert got == {"local_steps": 0, "local_epochs": 2, "batch_size": 32, "lr_decay": 0.8}
    assert sizing_overrides([]) == {} and sizing_overrides(["data_root=/x"]) == {}


def test_a_resumed_sweep_reads_only_the_rows_of_its_own_sizing(tmp_path):
    import argparse

    from benchmarks.sweep import FULL, Sweep

    epochs = {**FULL, **sizing_overrides(["local_steps=0", "local_epochs=2", "batch_size=32"])}
    for sizing, strategy in ((FULL, "hetlora"), (epochs, "fedhft")):
        row = {**_run("eval", strategy, 0, 0.01, 0.9, 0.8), "status": "completed"}
        append_line(run_log(tmp_path, "s"), json.dumps({**row, "sizing": json.dumps(sizing, sort_keys=True)}))
    args = argparse.Namespace(resume=True, report_only=False)
    assert [r["strategy"] for r in Sweep(args, FULL, tmp_path).runs] == ["hetlora"]
    assert [r["strategy"] for r in Sweep(args, epochs, tmp_path).runs] == ["fedhft"]


def test_a_bad_override_is_refused_before_any_run_with_every_problem(tmp_path, capsys):
    from benchmarks.sweep import main

    assert main(["--report-only", "--out", str(tmp_path), "batch_size=[", "clientz=3"]) == 2
    err = capsys.readouterr().err
    assert "batch_size" in err and "did you mean 'clients'" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())

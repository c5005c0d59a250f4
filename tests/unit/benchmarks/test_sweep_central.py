"""The sweep's centralized bound: its rate is chosen on the tuning half (never the test set), it decays
like the runs' rate, and settings of one dataset share one bound per seed."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from benchmarks import _sweep_bound as bound
from benchmarks import sweep as sw


@pytest.fixture(autouse=True)
def no_label_prior(monkeypatch):
    """The held-out majority label's accuracy, 0 unless a test sets one (the real one reads the data)."""
    monkeypatch.setattr(bound, "held_out_floor", lambda cfg: 0.0)


def test_the_bound_takes_the_rate_with_the_best_held_out_accuracy_and_a_tie_the_smaller():
    assert bound.choose_central_lr({0.003: 0.80, 0.01: 0.85, 0.03: 0.50}) == 0.01
    assert bound.choose_central_lr({0.03: 0.80, 0.003: 0.80, 0.01: 0.70}) == 0.003


def test_a_rate_at_the_majority_labels_accuracy_is_not_chosen_while_one_beats_it():
    # MRPC's tuning half: 1e-2 collapsed to "paraphrase" (0.678, the majority share), 3e-3 overfit (0.634).
    scores = {0.003: 0.634, 0.01: 0.678, 0.03: 0.678}
    assert bound.choose_central_lr(scores) == 0.01
    assert bound.choose_central_lr({**scores, 0.001: 0.70}, floor=0.678) == 0.001
    assert bound.choose_central_lr(scores, floor=0.678) == 0.01  # none beats it: the best of all, as before
    assert bound.choose_central_lr({0.003: 0.70, 0.01: 0.85}, floor=0.9) == 0.01


def test_a_bound_that_no_grid_rate_lifts_above_the_label_prior_tries_lower_rates(tmp_path, monkeypatch):
    tried = []

    def fake_bound(cfg, held_out=0):  # a unit test's stand-in: high rates collapse, 3e-3 overfits
        tried.append(cfg.lr)
        acc = {0.03: 0.678, 0.01: 0.678, 0.003: 0.634, 0.001: 0.72, 0.0003: 0.70}[cfg.lr] if held_out else 0.8
        return {"accuracy": acc, "lr": cfg.lr, "seconds": 1.0}

    monkeypatch.setattr(bound, "centralized_bound", fake_bound)
    monkeypatch.setattr(bound, "held_out_floor", lambda cfg: 0.678)
    central = bound.centralized_bounds(_sweep(tmp_path), ["mrpc-a5.0"], [0], (0.003, 0.01, 0.03))
    assert tried == [0.003, 0.01, 0.03, 0.001, 0.0003, 0.001]  # 1e-3 beats the prior and is the lowest: one more
    assert central["mrpc-a5.0/s0"]["lr"] == 0.001


def _sweep(tmp_path, **flags):
    flags = {"resume": True, "report_only": False, "overrides": [], "tune_per_dataset": False, **flags}
    args = argparse.Namespace(**flags)
    return sw.Sweep(args, sw.FULL, tmp_path)


def test_the_rate_is_tuned_on_held_out_tuning_examples_and_one_dataset_shares_a_bound(tmp_path, monkeypatch):
    calls = []

    def fake_bound(cfg, held_out=0):  # a unit test's stand-in: the real bound runs in the accuracy benchmark
        calls.append((cfg.dataset, cfg.seed, cfg.lr, cfg.train_pool, held_out))
        acc = {0.003: 0.7, 0.01: 0.8, 0.03: 0.5}[cfg.lr] if held_out else 0.9 + cfg.seed / 100
        return {"accuracy": acc, "lr": cfg.lr, "seconds": 1.0}

    monkeypatch.setattr(bound, "centralized_bound", fake_bound)
    lrs = (0.003, 0.01, 0.03)
    central = bound.centralized_bounds(_sweep(tmp_path), ["sst2-a0.3", "sst2-a5.0"], [0, 1], lrs)

    tuning = [c for c in calls if c[4]]
    assert [c[2] for c in tuning] == list(lrs)
    assert all(c[1] == sw.TUNE_SEED and c[3] == "tune" and c[4] == bound.CENTRAL_HELD_OUT for c in tuning)
    bounds = [c for c in calls if not c[4]]
    assert bounds == [("sst2", 0, 0.01, "eval", 0), ("sst2", 1, 0.01, "eval", 0)]  # a5.0 reuses a0.3's
    stamped = {"accuracy": 0.91, "lr": 0.01, "seconds": 1.0, "max_steps": bound.CENTRAL_MAX_STEPS}
    assert central["sst2-a5.0/s1"] == central["sst2-a0.3/s1"] == {**stamped, "host": central["sst2-a0.3/s1"]["host"]}
    assert central["sst2-a0.3/s1"]["host"]["versions"]["torch"].startswith("2.")  # the machine that made it

    calls.clear()
    again = bound.centralized_bounds(_sweep(tmp_path), ["sst2-a0.3", "sst2-a5.0"], [0, 1], lrs)
    assert calls == [] and again == central  # resumed from centralized.json and centralized-tuning.json
    assert json.loads((tmp_path / "centralized-tuning.json").read_text())["sst2-a5.0/lr0.01"]["accuracy"] == 0.8


def test_each_dataset_tunes_its_bounds_rate_on_its_own_tuning_half_even_when_strategies_tune_once(
    tmp_path, monkeypatch
):
    calls = []

    def fake_bound(cfg, held_out=0):  # a unit test's stand-in, as above
        calls.append((cfg.dataset, cfg.train_pool, cfg.lr, held_out))
        best = {"sst2": 0.01, "agnews": 0.003}[cfg.dataset]
        return {"accuracy": 0.9 - abs(cfg.lr - best) if held_out else 0.8, "lr": cfg.lr, "seconds": 1.0}

    monkeypatch.setattr(bound, "centralized_bound", fake_bound)
    central = bound.centralized_bounds(_sweep(tmp_path), ["sst2-a0.3", "agnews-a0.3"], [0], (0.003, 0.01, 0.03))
    assert (central["sst2-a0.3/s0"]["lr"], central["agnews-a0.3/s0"]["lr"]) == (0.01, 0.003)
    tuned = json.loads((tmp_path / "centralized-tuning.json").read_text())
    assert {k.split("/")[0] for k in tuned} == {sw.TUNE_SETTING["sst2"], sw.TUNE_SETTING["agnews"]}
    assert {(c[0], c[1]) for c in calls if c[3]} == {("sst2", "tune"), ("agnews", "tune")}


def test_the_bound_of_sentence_pairs_reads_as_many_tokens_as_their_runs(tmp_path):
    assert bound._central_cfg(_sweep(tmp_path), "mrpc-a5.0", 0, 0.001).max_seq_len == 64
    assert bound._central_cfg(_sweep(tmp_path), "sst2-a5.0", 0, 0.001).max_seq_len == sw.FULL["max_seq_len"]


def test_the_rate_ladder_goes_down_by_the_grids_steps():
    assert [bound.lower_rate(x) for x in (0.03, 0.01, 0.003, 0.001, 0.0003)] == [0.01, 0.003, 0.001, 0.0003, 0.0001]


def test_a_bound_that_wins_at_the_grids_lowest_rate_tries_lower_ones_and_stops_at_an_inner_best(tmp_path, monkeypatch):
    tried = []

    def fake_bound(cfg, held_out=0):  # accuracy rises as the rate falls, down to 1e-3
        tried.append(cfg.lr)
        acc = {0.03: 0.4, 0.01: 0.6, 0.003: 0.8, 0.001: 0.85, 0.0003: 0.82}[cfg.lr] if held_out else 0.9
        return {"accuracy": acc, "lr": cfg.lr, "seconds": 1.0}

    monkeypatch.setattr(bound, "centralized_bound", fake_bound)
    central = bound.centralized_bounds(_sweep(tmp_path), ["sst2-a5.0"], [0], (0.003, 0.01, 0.03))
    assert tried == [0.003, 0.01, 0.03, 0.001, 0.0003, 0.001]  # two rates below the grid, then the bound
    assert central["sst2-a5.0/s0"]["lr"] == 0.001


def test_bounds_made_under_the_old_step_cap_are_neither_reported_nor_reused(tmp_path, monkeypatch):
    old = {"accuracy": 0.79, "lr": 0.003, "steps": 600, "seconds": 1.0}  # logged before max_steps was
    (tmp_path / "centralized.json").write_text(json.dumps({"sst2-a5.0/s0": old}))
    (tmp_path / "centralized-tuning.json").write_text(json.dumps({"sst2-a5.0/lr0.003": old}))
    report = bound.centralized_bounds(_sweep(tmp_path, report_only=True), ["sst2-a5.0"], [0], (0.003, 0.01))
    assert report == {}
    monkeypatch.setattr(bound, "centralized_bound", lambda cfg, held_out=0: {"accuracy": 0.8, "lr": cfg.lr})
    fresh = bound.centralized_bounds(_sweep(tmp_path), ["sst2-a5.0"], [0], (0.003, 0.01))
    assert fresh["sst2-a5.0/s0"]["max_steps"] == bound.CENTRAL_MAX_STEPS


def test_the_bounds_rate_decays_by_the_factor_every_so_many_steps():
    pytest.importorskip("torch")
    from devices import load_catalog
    from simulate import fit_plan, train_centralized
    from simulate._evaluate import EncodedSet

    rng = np.random.default_rng(0)
    data = EncodedSet(rng.integers(5, 90, (16, 8)), np.ones((16, 8), np.int64), rng.integers(0, 2, 16))
    plan = fit_plan(load_catalog()["rpi5"].plan, 2, 8, 4)
    out = train_centralized("tiny", plan, 2, data, data, 7, 0.02, lr_decay=0.5, decay_every=3)
    assert out["lr_final"] == pytest.approx(0.02 * 0.5**2)  # decayed after steps 3 and 6 of 7
    assert (out["lr_decay"], out["decay_every"], out["steps"]) == (0.5, 3, 7)
    constant = train_centralized("tiny", plan, 2, data, data, 3, 0.02)
    assert constant["lr_final"] == 0.02 and constant["lr_decay"] == 1.0


def test_the_held_out_examples_are_drawn_outside_the_training_subset():
    from benchmarks.accuracy import held_out_examples
    from simulate import subsample

    pool = [object() for _ in range(100)]
    train = subsample(pool, 60, 3, 11)
    held = held_out_examples(pool, train, 30, 3)
    assert len(held) == 30 and not {id(e) for e in held} & {id(e) for e in train}
    assert held == held_out_examples(pool, train, 30, 3)  # seeded


def test_the_bounds_training_subset_shrinks_to_leave_its_held_out_examples_and_a_tiny_pool_is_refused():
    from benchmarks.accuracy import tuning_train_size

    assert tuning_train_size(30000, 3000, 500) == 3000  # a large pool: the runs' training size
    assert tuning_train_size(1834, 3000, 500) == 1334  # MRPC's tuning half: 500 stay out to score the rate
    assert tuning_train_size(1834, 3000, 0) == 3000  # scored on the test set: nothing held out
    with pytest.raises(ValueError, match="too few to hold out 500.*at most 400"):
        tuning_train_size(800, 3000, 500)


def test_the_label_priors_accuracy_predicts_the_training_majority_on_the_scored_examples():
    from benchmarks.accuracy import label_prior_accuracy
    from simulate import Example

    train = [Example("t", y) for y in (1, 0, 1, 1)]
    assert label_prior_accuracy(train, [Example("s", y) for y in (1, 1, 0, 0)]) == 0.5
    assert label_prior_accuracy(train, [Example("s", y) for y in (0, 0, 1)]) == pytest.approx(1 / 3)
    assert np.isnan(label_prior_accuracy(train, []))

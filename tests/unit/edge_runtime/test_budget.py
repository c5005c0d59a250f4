"""Budget guard: simulated battery, deadline, memory shape chooser and the RSS watcher."""

from __future__ import annotations

import pytest

from edge_runtime import (
    DeadlineGuard,
    LowBattery,
    OverBudget,
    RssWatcher,
    SimulatedBattery,
    SystemBattery,
    check_battery,
    choose_shape,
    rss_mb,
)
from edge_runtime._budget import MemoryModel, MemoryPlan, ShapeLimits

MODEL = MemoryModel(hidden=64, intermediate=128, heads=1, ranks=(4, 8), modules=2, trainable_params=5000)


def test_simulated_battery_drains_per_step_and_persists(tmp_path):
    path = tmp_path / "battery.json"
    bat = SimulatedBattery.load_or_create(path, level=30.0, drain_per_step=2.0)
    for _ in range(5):
        bat.on_step()
    assert bat.read() == (20.0, False)
    bat.save()
    again = SimulatedBattery.load_or_create(path, level=90.0, drain_per_step=2.0)
    assert again.level == 20.0  # carried over rounds and restarts, not reset by the defaults


def test_simulated_battery_charges_up_to_its_capacity():
    bat = SimulatedBattery(capacity_pct=80, level=79.95, charging=True, charge_per_step=0.1)
    bat.on_step()
    assert bat.level == 80.0
    with pytest.raises(ValueError, match="capacity_pct"):
        SimulatedBattery(capacity_pct=0)


@pytest.mark.parametrize(
    "level, charging, expected",
    [
        (15.0, False, LowBattery(15.0, 20.0, False)),
        (15.0, True, None),  # plugged in: train
        (25.0, False, None),
        (15.0, None, LowBattery(15.0, 20.0, False)),  # unknown charging state counts as battery
    ],
)
def test_check_battery(level, charging, expected):
    bat = SimulatedBattery(level=level)
    bat.charging = charging
    assert check_battery(bat, 20.0) == expected


def test_no_battery_means_mains_power(monkeypatch):
    import psutil

    monkeypatch.setattr(psutil, "sensors_battery", lambda: None)
    assert SystemBattery().read() == (None, None)
    assert check_battery(SystemBattery(), 99.0) is None


def test_deadline_guard_uses_the_median_step_time():
    now = [1000.0]
    guard = DeadlineGuard(deadline_ts=1010.0, reserve_s=1.0, clock=lambda: now[0])
    assert not guard.would_miss()
    for seconds in (1.0, 1.0, 30.0):  # one outlier must not stop the round
        guard.record(seconds)
    now[0] = 1007.5
    assert not guard.would_miss()  # 1007.5 + 1 (median) + 1 (reserve) <= 1010
    now[0] = 1008.5
    assert guard.would_miss()
    missed = guard.missed()
    assert (missed.elapsed_s, missed.deadline_s, missed.steps_done) == (8.5, 10.0, 3)
    assert not DeadlineGuard(None).would_miss()


def test_choose_shape_keeps_the_plan_shape_when_it_fits():
    plan = choose_shape(MODEL, ShapeLimits(16, 128), 16, 128, base_mb=100, budget_mb=10_000)
    assert isinstance(plan, MemoryPlan) and (plan.batch_size, plan.seq_len) == (16, 128)


def test_choose_shape_shrinks_batch_before_sequence_then_gives_up():
    need = lambda b, s: 100 + MODEL.optimizer_mb() + MODEL.activations_mb(b, s)  # noqa: E731
    budget = need(4, 128) / 0.9 + 0.01
    plan = choose_shape(MODEL, ShapeLimits(16, 128), 16, 128, base_mb=100, budget_mb=budget)
    assert (plan.batch_size, plan.seq_len) == (4, 128)
    budget = need(1, 64) / 0.9 + 0.01
    plan = choose_shape(MODEL, ShapeLimits(16, 128), 16, 128, base_mb=100, budget_mb=budget)
    assert (plan.batch_size, plan.seq_len) == (1, 64)  # batch 1 at 128 does not fit; halve the sequence
    over = choose_shape(MODEL, ShapeLimits(16, 128, min_seq=8), 16, 128, base_mb=100, budget_mb=100)
    assert isinstance(over, OverBudget) and over.where == "plan" and over.budget_mb == 100
    assert over.rss_mb == 100 < over.peak_mb  # refused on the estimate: the process held only its base


def test_choose_shape_respects_the_task_and_static_bundles():
    plan = choose_shape(MODEL, ShapeLimits(16, 128), 4, 32, base_mb=100, budget_mb=10_000)
    assert (plan.batch_size, plan.seq_len) == (4, 32)
    static = choose_shape(MODEL, ShapeLimits(8, 64, 64, static=True), 2, 16, base_mb=100, budget_mb=10_000)
    assert (static.batch_size, static.seq_len) == (8, 64)  # a static graph takes only its own shape


def test_watcher_trips_at_the_margin_before_the_budget():
    samples = iter([100.0, 150.0, 179.0, 181.0, 250.0])
    watcher = RssWatcher(200.0, margin=0.9, sampler=lambda: next(samples))
    for _ in range(3):
        watcher.check()
    assert not watcher.tripped.is_set()
    watcher.check()  # 181 >= 180 = 90 % of 200
    assert watcher.tripped.is_set() and watcher.over_budget("train") == OverBudget(181.0, 200.0, "train", 181.0)


def test_watcher_thread_catches_growth_between_checks():
    value = [100.0]
    with RssWatcher(200.0, interval_s=0.01, sampler=lambda: value[0]) as watcher:
        value[0] = 195.0
        # Nobody calls check(): only the sampling thread can trip it (wait, don't sleep a fixed time).
        assert watcher.tripped.wait(5.0) and watcher.peak_mb == 195.0


def test_rss_is_measured():
    import mmap

    before = rss_mb()
    # A fresh anonymous mapping, every page touched: new resident memory even in a long-lived
    # process whose allocator could otherwise serve 40 MB from pages it already holds.
    block = mmap.mmap(-1, 40 * 2**20)
    for offset in range(0, len(block), mmap.PAGESIZE):
        block[offset] = 1
    assert rss_mb() > before + 30
    block.close()

"""train_round on a tiny torch bundle: masked update layout, learning, and the typed outcomes."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from fedhft.layout import init_trainable, mask_from_rows, masked_update_layout, rows_per_module, scatter_update
from fedhft.protocol import Hyper, Task
from edge_runtime import (
    DataSource,
    DeadlineMissed,
    LowBattery,
    OverBudget,
    RoundResult,
    SimulatedBattery,
    Stopped,
    TrainBudget,
    evaluate,
    load_examples,
    rss_mb,
    train_round,
)


def make_task(session, *, steps=20, lr=3e-2, deadline_s=300.0, seed=0, round_=1) -> Task:
    m = session.manifest
    rng = np.random.default_rng(seed)
    rows = {s.b_name: rng.choice(s.rows, rows_per_module(m.plan, s.rows), replace=False) for s in m.mask_layout}
    return Task(
        "f",
        "c",
        round_,
        f"t{round_}",
        m.tier,
        m.backend,
        "b",
        "0" * 64,
        m.plan.to_dict(),
        Hyper(lr, steps, 0, m.plan.batch_size, m.plan.max_seq_len),
        time.time() + deadline_s,
        init_trainable(m.plan, m.dims, seed),
        mask_from_rows(m.plan, m.dims, rows),
    )


@pytest.fixture
def source(toy_csv):
    return DataSource(load_examples(toy_csv, num_labels=2))


def full_loss(session, source, state, mask) -> float:
    session.set_state(state)
    session.begin_round(mask, 1e-3)
    data = source.at(session.bundle_dir, 32)
    return evaluate(session, data.train, 16, False)[1]


def test_round_learns_and_the_update_has_the_masked_layout(tiny_session, source):
    task = make_task(tiny_session)
    result = train_round(tiny_session, task, source, TrainBudget(memory_budget_mb=4096))
    assert isinstance(result, RoundResult), result
    m = tiny_session.manifest
    specs = masked_update_layout(m.plan, m.dims, task.mask)
    assert [(s.name, s.shape) for s in specs] == [(k, v.shape) for k, v in result.update.items()]
    assert all(v.dtype == np.float32 for v in result.update.values())
    met = result.metrics
    assert met["loss_last"] < met["loss_first"] and met["val_loss_after"] < met["val_loss_before"]
    assert met["steps"] == 20 and met["examples_used"] == result.num_examples > 0
    assert 0 < met["peak_rss_mb"] < 4096 and met["step_time_median_s"] > 0
    # Moving the start state along the uploaded update lowers the local loss.
    trained = scatter_update(m.plan, m.dims, task.start_state, result.update, task.mask)
    assert full_loss(tiny_session, source, trained, task.mask) < full_loss(
        tiny_session, source, task.start_state, task.mask
    )


def test_masked_off_rows_do_not_move(tiny_session, source):
    task = make_task(tiny_session, steps=5, seed=1)
    result = train_round(tiny_session, task, source)
    m = tiny_session.manifest
    for sl in m.mask_layout:
        off = task.mask[sl.offset : sl.offset + sl.rows] == 0
        assert np.array_equal(result.trained[sl.b_name][off], task.start_state[sl.b_name][off])


@pytest.mark.parametrize("value", [0.5, 0.999, 2.0, -1.0, float("nan")])
def test_a_mask_entry_other_than_0_or_1_is_refused_not_rounded(tiny_session, source, value):
    """The manifest's mask.values [0.0, 1.0] are the only values (docs/MANIFEST.md, PROTOCOL.md section
    11): a session refuses any other, naming the rule, so train_round on such a task raises before
    training (the agent reports it as outcome error)."""
    task = make_task(tiny_session, steps=3)
    mask = task.mask.copy()
    mask[0] = value
    with pytest.raises(ValueError, match=r"^mask must hold only 0\.0 and 1\.0$"):
        tiny_session.begin_round(mask, 1e-3)
    with pytest.raises(ValueError, match=r"^mask must hold only 0\.0 and 1\.0$"):
        train_round(tiny_session, replace(task, mask=mask), source)
    tiny_session.begin_round(task.mask, 1e-3)  # the same mask with its 0/1 entry back is accepted


def test_low_battery_skips_the_round_before_training(tiny_session, source):
    battery = SimulatedBattery(level=10.0)
    result = train_round(tiny_session, make_task(tiny_session), source, TrainBudget(battery=battery))
    assert result == LowBattery(10.0, 20.0, False)


def test_battery_draining_below_half_the_threshold_stops_mid_round(tiny_session, source):
    battery = SimulatedBattery(level=25.0, drain_per_step=5.0)
    result = train_round(tiny_session, make_task(tiny_session, steps=50), source, TrainBudget(battery=battery))
    assert isinstance(result, LowBattery) and result.level < 10.0


def test_deadline_too_close_reports_deadline_missed(tiny_session, source):
    result = train_round(
        tiny_session, make_task(tiny_session, deadline_s=0.5), source, TrainBudget(deadline_reserve_s=1.0)
    )
    assert isinstance(result, DeadlineMissed) and result.steps_done == 0


def test_shutdown_request_stops_between_steps(tiny_session, source):
    calls = iter(range(100))
    result = train_round(
        tiny_session, make_task(tiny_session), source, TrainBudget(should_stop=lambda: next(calls) >= 3)
    )
    assert result == Stopped(3)


def test_budget_below_the_process_reports_over_budget_before_training(tiny_session, source):
    result = train_round(tiny_session, make_task(tiny_session), source, TrainBudget(memory_budget_mb=rss_mb() / 2))
    assert isinstance(result, OverBudget) and result.where == "plan"


class GrowingSession:
    """Wraps the real session; every step also allocates (and keeps) 16 MB, like a leak or a big batch."""

    def __init__(self, inner):
        self.inner, self.manifest, self.bundle_dir, self.blocks = inner, inner.manifest, inner.bundle_dir, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def train_step(self, ids, attn, labels):
        self.blocks.append(np.ones(2 * 2**20))  # 16 MB, pages touched
        return self.inner.train_step(ids, attn, labels)


def test_rss_watcher_stops_training_before_the_budget(tiny_session, source):
    # Warm up so the estimate sees the real steady state, then give 120 MB of headroom over it.
    train_round(tiny_session, make_task(tiny_session, steps=2), source)
    budget = (rss_mb() + 120) / 0.9
    session = GrowingSession(tiny_session)
    result = train_round(session, make_task(tiny_session, steps=200), source, TrainBudget(memory_budget_mb=budget))
    assert isinstance(result, OverBudget) and result.where == "train", result
    assert 0.9 * budget <= result.peak_mb < budget  # stopped at the margin, never past the budget
    assert len(session.blocks) < 200
    session.blocks.clear()


@pytest.mark.parametrize(
    "peak, before, probe, target, expected",
    [
        (110.0, 100.0, 2, 16, 16),  # 5 MB per example: 16 fits under the 180 MB limit
        (140.0, 100.0, 2, 16, 4),  # 20 MB per example: (180 - 100) // 20
        (100.0, 100.0, 2, 16, 16),  # no measurable growth: keep the plan's batch
        (179.0, 100.0, 1, 16, 1),
        (175.0, 100.0, 1, 16, 1),
    ],
)
def test_probe_step_growth_picks_the_batch(peak, before, probe, target, expected):
    from edge_runtime import RssWatcher
    from edge_runtime._trainer import _batch_after_probe

    watcher = RssWatcher(200.0, margin=0.9, sampler=lambda: peak)
    watcher.check()
    assert _batch_after_probe(watcher, before, probe, target) == expected


def test_deadline_is_read_in_server_time(tiny_session, source):
    # The server clock runs 200 s ahead: a deadline 150 s ahead in server time passed 50 s ago here.
    task = make_task(tiny_session, deadline_s=150.0)
    result = train_round(tiny_session, task, source, TrainBudget(clock_offset_s=200.0))
    assert isinstance(result, DeadlineMissed)
    ok = train_round(
        tiny_session, make_task(tiny_session, steps=2, deadline_s=-50.0), source, TrainBudget(clock_offset_s=-100.0)
    )
    assert isinstance(ok, RoundResult)

"""One round of local training under the device's budgets: start state + mask in, masked update out.

``train_round`` returns a ``RoundResult`` or one of the typed outcomes (``OverBudget``,
``LowBattery``, ``DeadlineMissed``, ``Stopped``); it raises only for real errors (a state that does
not fit the bundle, a diverged loss), which the agent reports as an ``error`` outcome.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from fedhft.layout import gather_update
from edge_runtime._budget import (
    DEFAULT_MARGIN,
    Battery,
    DeadlineGuard,
    DeadlineMissed,
    LowBattery,
    MemoryPlan,
    OverBudget,
    RssWatcher,
    SystemBattery,
    check_battery,
    choose_shape,
    host_baseline_mb,
    memory_model,
    rss_mb,
    shape_limits,
)
from edge_runtime._data import DataSource, Encoded, eval_batches, iter_batches

#: The first step runs at this fraction of the chosen batch: its measured RSS growth, scaled up,
#: decides the batch of the remaining steps (the estimate alone under-predicted ORT by ~40 %).
PROBE_FRACTION = 0.25


@dataclass
class TrainBudget:
    """Limits of one round. ``memory_budget_mb=None`` disables the memory guard (a mains server)."""

    memory_budget_mb: float | None = None
    margin: float = DEFAULT_MARGIN
    battery: Battery = field(default_factory=SystemBattery)
    battery_threshold: float = 20.0
    deadline_reserve_s: float = 1.0
    should_stop: Callable[[], bool] = lambda: False
    progress_every: int = 10
    log: Callable[..., None] = lambda event, **kv: None
    clock_offset_s: float = 0.0  # server clock minus this device's clock (deadlines are server time)


@dataclass(frozen=True)
class Stopped:
    """Training was interrupted by a shutdown request; nothing is reported, the task resumes on restart."""

    steps_done: int


@dataclass(frozen=True)
class RoundResult:
    round: int
    task_id: str
    update: dict[str, np.ndarray]
    trained: dict[str, np.ndarray]
    num_examples: int
    metrics: dict[str, float]


def evaluate(session, data: Encoded, batch_size: int, static: bool) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of the current weights on ``data``."""
    if len(data) == 0:
        return float("nan"), float("nan")
    correct, loss_sum = 0, 0.0
    for ids, attn, labels, real in eval_batches(data, batch_size, static):
        logits = np.asarray(session.logits(ids, attn), dtype=np.float64)[:real]
        labels = labels[:real]
        shifted = logits - logits.max(axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss_sum += float(-logp[np.arange(real), labels].sum())
        correct += int((logits.argmax(axis=1) == labels).sum())
    return correct / len(data), loss_sum / len(data)


def plan_memory(session, want_batch: int, want_seq: int, budget: TrainBudget) -> MemoryPlan | OverBudget:
    limits = shape_limits(session.manifest)
    if budget.memory_budget_mb is None:
        if limits.static:
            return MemoryPlan(limits.max_batch, limits.max_seq, 0.0)
        return MemoryPlan(max(1, min(want_batch, limits.max_batch)),
                          max(limits.min_seq, min(want_seq, limits.max_seq)), 0.0)
    return choose_shape(memory_model(session.manifest, session.bundle_dir), limits, want_batch, want_seq, rss_mb(),
                        budget.memory_budget_mb, budget.margin)


def _check_before_step(guard: DeadlineGuard, watcher: RssWatcher | None, budget: TrainBudget, steps: int):
    if budget.should_stop():
        return Stopped(steps)
    if watcher is not None and watcher.tripped.is_set():
        return watcher.over_budget("train")
    if guard.would_miss():
        return guard.missed()
    # Mid-round, only a critically low battery aborts: the work done so far would otherwise be lost.
    low = check_battery(budget.battery, budget.battery_threshold / 2.0)
    if low is not None:
        return LowBattery(low.level, budget.battery_threshold, low.charging)
    return None


@dataclass
class _Loop:
    losses: list[float] = field(default_factory=list)
    seen: set = field(default_factory=set)
    batch: int = 1


def _batches(train: Encoded, batch: int, seed: int, steps: int, static: bool):
    """Batches of row indices (labels are looked up per batch) so the loop can count examples seen."""
    index = np.arange(len(train))
    return iter_batches(Encoded(train.input_ids, train.attention_mask, index), batch, seed, steps=steps,
                        drop_last=static)


def _batch_after_probe(watcher: RssWatcher, rss_before: float, probe: int, target: int) -> int:
    """Largest batch <= target whose extrapolated peak (growth of the probe step, scaled linearly
    from rss_before) stays under the watcher's limit; 0 when not even one example fits."""
    growth = max(0.0, watcher.peak_mb - rss_before)
    if growth == 0.0:
        return target
    per_example = growth / probe  # linear in the batch: conservative, fixed costs count as per-example
    return int(min(target, (watcher.limit_mb - rss_before) // per_example))


def _run_steps(session, task, train: Encoded, mem: MemoryPlan, budget: TrainBudget, watcher, guard, static: bool):
    """The optimizer steps of one round; returns the loop record or a typed outcome."""
    hyper = task.hyper
    total = int(hyper.local_steps) if hyper.local_steps > 0 else \
        max(1, int(hyper.epochs)) * math.ceil(len(train) / mem.batch_size)
    probing = watcher is not None and not static and mem.batch_size > 1
    loop = _Loop(batch=max(1, int(mem.batch_size * PROBE_FRACTION)) if probing else mem.batch_size)
    batches = _batches(train, loop.batch, task.round, total, static)
    rss_before = rss_mb()
    while len(loop.losses) < total:
        stop = _check_before_step(guard, watcher, budget, len(loop.losses))
        if stop is not None:
            return stop
        try:
            ids, attn, rows = next(batches)
        except StopIteration:
            break
        _step(session, loop, guard, ids, attn, rows, train, hyper.lr)
        budget.battery.on_step()
        if watcher is not None:
            watcher.check()
        if probing and len(loop.losses) == 1 and not watcher.tripped.is_set():
            probing, probe = False, loop.batch
            loop.batch = _batch_after_probe(watcher, rss_before, probe, mem.batch_size)
            if loop.batch < 1:
                return watcher.over_budget("train")
            batches = _batches(train, loop.batch, task.round + 1, total - 1, static)
            budget.log("batch_chosen", round=task.round, probe_batch=probe, batch_size=loop.batch,
                       rss_mb=round(watcher.peak_mb, 1), limit_mb=round(watcher.limit_mb, 1))
        n = len(loop.losses)
        if budget.progress_every and (n % budget.progress_every == 0 or n == total):
            budget.log("progress", round=task.round, step=n, steps=total, loss=round(loop.losses[-1], 5),
                       step_ms=round(1000 * guard.median_step_s(), 1),
                       rss_mb=round(watcher.peak_mb, 1) if watcher else None)
    return loop


def _step(session, loop: _Loop, guard: DeadlineGuard, ids, attn, rows, train: Encoded, lr: float) -> None:
    t0 = time.perf_counter()
    loss = session.train_step(ids, attn, train.labels[rows])
    guard.record(time.perf_counter() - t0)
    if not math.isfinite(loss):
        raise FloatingPointError(f"training loss became {loss} at step {len(loop.losses) + 1}: "
                                 f"the learning rate {lr} is too high for this device's data; lower it")
    loop.losses.append(float(loss))
    loop.seen.update(int(r) for r in rows)


def train_round(session, task, data: DataSource, budget: TrainBudget | None = None):
    """Train one task. Returns RoundResult | OverBudget | LowBattery | DeadlineMissed | Stopped."""
    budget = budget or TrainBudget()
    low = check_battery(budget.battery, budget.battery_threshold)
    if low is not None:
        return low
    hyper = task.hyper
    mem = plan_memory(session, int(hyper.batch_size), int(hyper.seq_len), budget)
    if isinstance(mem, OverBudget):
        return mem
    static = shape_limits(session.manifest).static
    local = data.at(session.bundle_dir, mem.seq_len)
    manifest = session.manifest
    start = {k: np.asarray(v, dtype=np.float32) for k, v in task.start_state.items()}
    session.set_state(start)
    session.begin_round(np.asarray(task.mask, dtype=np.float32), float(hyper.lr))
    watcher = RssWatcher(budget.memory_budget_mb, budget.margin) if budget.memory_budget_mb else None
    guard = DeadlineGuard(task.deadline_ts - budget.clock_offset_s if task.deadline_ts else None,
                          budget.deadline_reserve_s)
    if watcher is not None:
        watcher.__enter__()
    try:
        acc_before, vloss_before = evaluate(session, local.val, mem.batch_size, static)
        loop = _run_steps(session, task, local.train, mem, budget, watcher, guard, static)
        if not isinstance(loop, _Loop):
            return loop
        acc_after, vloss_after = evaluate(session, local.val, mem.batch_size, static)
    finally:
        if watcher is not None:
            watcher.__exit__(None, None, None)
    if watcher is not None and watcher.tripped.is_set():
        return watcher.over_budget("train")
    trained = session.get_state()
    update = gather_update(manifest.plan, manifest.dims, start, trained, task.mask)
    metrics = _metrics(loop, guard, mem, watcher, budget, (acc_before, acc_after, vloss_before, vloss_after))
    return RoundResult(task.round, task.task_id, update, trained, len(loop.seen), metrics)


def _metrics(loop: _Loop, guard: DeadlineGuard, mem: MemoryPlan, watcher, budget: TrainBudget, evals) -> dict[str, float]:
    acc_before, acc_after, vloss_before, vloss_after = evals
    level, _ = budget.battery.read()
    out = {
        "loss_first": loop.losses[0] if loop.losses else float("nan"),
        "loss_last": loop.losses[-1] if loop.losses else float("nan"),
        "loss_mean": float(np.mean(loop.losses)) if loop.losses else float("nan"),
        "val_acc_before": acc_before, "val_acc_after": acc_after,
        "val_loss_before": vloss_before, "val_loss_after": vloss_after,
        "examples_used": float(len(loop.seen)), "steps": float(len(loop.losses)),
        "batch_size": float(loop.batch), "seq_len": float(mem.seq_len),
        "step_time_median_s": guard.median_step_s(),
        "train_time_s": guard.clock() - guard.started,
        "peak_rss_mb": watcher.peak_mb if watcher is not None else rss_mb(),
    }
    if budget.memory_budget_mb:
        out["memory_budget_mb"] = float(budget.memory_budget_mb)
    out["host_baseline_mb"] = round(host_baseline_mb(), 1)  # > 0 only under 'bundle' accounting
    if level is not None:
        out["battery_pct"] = float(level)
    # The wire carries finite floats only; an empty validation part has no accuracy.
    return {k: round(float(v), 6) for k, v in out.items() if math.isfinite(v)}

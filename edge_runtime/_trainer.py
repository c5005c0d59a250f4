"""One round of local training under the device's budgets: start state + mask in, masked update out.

``train_round`` returns a ``RoundResult`` or one of the typed outcomes (``OverBudget``,
``LowBattery``, ``DeadlineMissed``, ``Stopped``); it raises only for real errors (a state that does
not fit the bundle, a diverged loss), which the agent reports as an ``error`` outcome.

Its data is any ``TrainingData``: the agent's ``DataSource`` (a file, tokenized per bundle and
split into train and local validation on the device), or ``PreparedData`` (token ids made once by
the caller, with an explicit evaluation set), which an in-process engine uses to train many
clients without re-reading or re-tokenizing their files every round.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from fedhft.layout import gather_update
from edge_runtime._budget import (
    DEFAULT_MARGIN,
    Battery,
    DeadlineGuard,
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
from edge_runtime._data import Encoded, eval_batches, iter_batches

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


class LocalSets(Protocol):
    """The training part and the evaluation part of a device's data, tokenized at one length."""

    train: Encoded
    val: Encoded


class TrainingData(Protocol):
    """What ``train_round`` reads its data from: the sets for a bundle at the round's ``seq_len``
    (``round_shape(...).seq_len``). ``DataSource`` and ``PreparedData`` implement it."""

    def at(self, bundle_dir: str | Path, seq_len: int) -> LocalSets: ...


@dataclass(frozen=True)
class PreparedData:
    """Token ids made by the caller: ``train`` is trained on, ``val`` is the evaluation set that
    ``val_acc_before``/``val_acc_after`` are measured on (e.g. a client's local test shard; it may
    be empty). Both are at one sequence length, the round's: tokenize at
    ``round_shape(session, task, budget).seq_len`` with the bundle's tokenizer."""

    train: Encoded
    val: Encoded

    def __post_init__(self) -> None:
        problems = [
            f"{name}: {p}" for name, part in (("train", self.train), ("val", self.val)) for p in _encoded_problems(part)
        ]
        if not problems and len(self.train) == 0:
            problems.append("train has no examples: give at least one")
        if not problems and len(self.val) and self.val.input_ids.shape[1] != self.seq_len:
            problems.append(
                f"val has {self.val.input_ids.shape[1]} tokens per example, train {self.seq_len}: "
                "tokenize both at the round's seq_len"
            )
        if problems:
            raise ValueError("PreparedData: " + "; ".join(problems))

    @property
    def seq_len(self) -> int:
        return int(self.train.input_ids.shape[1])

    def at(self, bundle_dir: str | Path, seq_len: int) -> "PreparedData":
        if int(seq_len) != self.seq_len:
            raise ValueError(
                f"the data was tokenized at {self.seq_len} tokens, this round of {bundle_dir} trains at "
                f"{seq_len}: tokenize it at round_shape(session, task, budget).seq_len"
            )
        return self


def _encoded_problems(part: Encoded) -> list[str]:
    ids, attn, labels = (np.asarray(a) for a in (part.input_ids, part.attention_mask, part.labels))
    if ids.ndim != 2 or attn.shape != ids.shape or labels.shape != (ids.shape[0],):
        return [
            f"input_ids {ids.shape}, attention_mask {attn.shape} and labels {labels.shape} must be [N, S], "
            "[N, S] and [N]"
        ]
    return [
        f"{n} is {a.dtype}, use int64"
        for n, a in (("input_ids", ids), ("attention_mask", attn), ("labels", labels))
        if a.dtype != np.int64
    ]


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


@dataclass(frozen=True)
class ShardScore:
    """A model's scores on one local shard: accuracy, mean cross-entropy, balanced accuracy (mean
    per-class recall over the classes present, so a one-class predictor cannot look good on a
    skewed shard) and the shard size (the weight of this client in fleet-wide means)."""

    accuracy: float
    loss: float
    balanced_accuracy: float
    examples: int


def balanced_accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Mean recall over the classes present in ``labels`` (nan for an empty shard)."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    if labels.size == 0:
        return float("nan")
    return float(np.mean([np.mean(predictions[labels == c] == c) for c in np.unique(labels)]))


def majority_accuracy(train_labels: np.ndarray, shard_labels: np.ndarray) -> float:
    """Accuracy on ``shard_labels`` of always predicting the most frequent training label (ties:
    the smallest label): the label-prior reference a personalized model must beat."""
    train_labels, shard_labels = np.asarray(train_labels), np.asarray(shard_labels)
    if train_labels.size == 0 or shard_labels.size == 0:
        return float("nan")
    return float(np.mean(shard_labels == np.bincount(train_labels).argmax()))


def score_shard(session, data: Encoded, batch_size: int, static: bool) -> ShardScore:
    """The current weights' ``ShardScore`` on ``data``."""
    if len(data) == 0:
        return ShardScore(float("nan"), float("nan"), float("nan"), 0)
    loss_sum, preds = 0.0, []
    for ids, attn, labels, real in eval_batches(data, batch_size, static):
        logits = np.asarray(session.logits(ids, attn), dtype=np.float64)[:real]
        labels = labels[:real]
        shifted = logits - logits.max(axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss_sum += float(-logp[np.arange(real), labels].sum())
        preds.append(logits.argmax(axis=1))
    pred = np.concatenate(preds)
    return ShardScore(
        float(np.mean(pred == data.labels)), loss_sum / len(data), balanced_accuracy(data.labels, pred), len(data)
    )


def evaluate(session, data: Encoded, batch_size: int, static: bool) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of the current weights on ``data``."""
    score = score_shard(session, data, batch_size, static)
    return score.accuracy, score.loss


def plan_memory(session, want_batch: int, want_seq: int, budget: TrainBudget) -> MemoryPlan | OverBudget:
    limits = shape_limits(session.manifest)
    if budget.memory_budget_mb is None:
        if limits.static:
            return MemoryPlan(limits.max_batch, limits.max_seq, 0.0)
        return MemoryPlan(
            max(1, min(want_batch, limits.max_batch)), max(limits.min_seq, min(want_seq, limits.max_seq)), 0.0
        )
    return choose_shape(
        memory_model(session.manifest, session.bundle_dir),
        limits,
        want_batch,
        want_seq,
        rss_mb(),
        budget.memory_budget_mb,
        budget.margin,
    )


def round_shape(session, task, budget: "TrainBudget | None" = None) -> MemoryPlan | OverBudget:
    """The (batch, seq_len) ``train_round`` will use for ``task`` on ``session`` under ``budget``
    (before the first step's memory probe, which may lower the batch only)."""
    hyper = task.hyper
    return plan_memory(session, int(hyper.batch_size), int(hyper.seq_len), budget or TrainBudget())


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
    return iter_batches(
        Encoded(train.input_ids, train.attention_mask, index), batch, seed, steps=steps, drop_last=static
    )


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
    total = (
        int(hyper.local_steps)
        if hyper.local_steps > 0
        else max(1, int(hyper.epochs)) * math.ceil(len(train) / mem.batch_size)
    )
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
            budget.log(
                "batch_chosen",
                round=task.round,
                probe_batch=probe,
                batch_size=loop.batch,
                rss_mb=round(watcher.peak_mb, 1),
                limit_mb=round(watcher.limit_mb, 1),
            )
        n = len(loop.losses)
        if budget.progress_every and (n % budget.progress_every == 0 or n == total):
            budget.log(
                "progress",
                round=task.round,
                step=n,
                steps=total,
                loss=round(loop.losses[-1], 5),
                step_ms=round(1000 * guard.median_step_s(), 1),
                rss_mb=round(watcher.peak_mb, 1) if watcher else None,
            )
    return loop


def _step(session, loop: _Loop, guard: DeadlineGuard, ids, attn, rows, train: Encoded, lr: float) -> None:
    t0 = time.perf_counter()
    loss = session.train_step(ids, attn, train.labels[rows])
    guard.record(time.perf_counter() - t0)
    if not math.isfinite(loss):
        raise FloatingPointError(
            f"training loss became {loss} at step {len(loop.losses) + 1}: "
            f"the learning rate {lr} is too high for this device's data; lower it"
        )
    loop.losses.append(float(loss))
    loop.seen.update(int(r) for r in rows)


def train_round(session, task, data: TrainingData, budget: TrainBudget | None = None):
    """Train one task on ``data.at(bundle, seq_len)``: its ``train`` part is trained on, its ``val``
    part evaluated before and after. The session's trainable state and optimizer are set from the
    task (``set_state`` + ``begin_round``), so one session serves many clients in turn.
    Returns RoundResult | OverBudget | LowBattery | DeadlineMissed | Stopped."""
    budget = budget or TrainBudget()
    low = check_battery(budget.battery, budget.battery_threshold)
    if low is not None:
        return low
    hyper = task.hyper
    mem = round_shape(session, task, budget)
    if isinstance(mem, OverBudget):
        return mem
    static = shape_limits(session.manifest).static
    local = data.at(session.bundle_dir, mem.seq_len)
    manifest = session.manifest
    start = {k: np.asarray(v, dtype=np.float32) for k, v in task.start_state.items()}
    session.set_state(start)
    session.begin_round(np.asarray(task.mask, dtype=np.float32), float(hyper.lr))
    watcher = RssWatcher(budget.memory_budget_mb, budget.margin) if budget.memory_budget_mb else None
    guard = DeadlineGuard(
        task.deadline_ts - budget.clock_offset_s if task.deadline_ts else None, budget.deadline_reserve_s
    )
    if watcher is not None:
        watcher.__enter__()
    try:
        before = score_shard(session, local.val, mem.batch_size, static)
        loop = _run_steps(session, task, local.train, mem, budget, watcher, guard, static)
        if not isinstance(loop, _Loop):
            return loop
        after = score_shard(session, local.val, mem.batch_size, static)
    finally:
        if watcher is not None:
            watcher.__exit__(None, None, None)
    if watcher is not None and watcher.tripped.is_set():
        return watcher.over_budget("train")
    trained = session.get_state()
    update = gather_update(manifest.plan, manifest.dims, start, trained, task.mask)
    metrics = _metrics(loop, guard, mem, watcher, budget, (before, after))
    metrics.update(_shard_metrics(before, after, majority_accuracy(local.train.labels, local.val.labels)))
    return RoundResult(task.round, task.task_id, update, trained, len(loop.seen), metrics)


def _metrics(
    loop: _Loop, guard: DeadlineGuard, mem: MemoryPlan, watcher, budget: TrainBudget, evals
) -> dict[str, float]:
    before, after = evals
    level, _ = budget.battery.read()
    out = {
        "loss_first": loop.losses[0] if loop.losses else float("nan"),
        "loss_last": loop.losses[-1] if loop.losses else float("nan"),
        "loss_mean": float(np.mean(loop.losses)) if loop.losses else float("nan"),
        "val_acc_before": before.accuracy,
        "val_acc_after": after.accuracy,
        "val_loss_before": before.loss,
        "val_loss_after": after.loss,
        "examples_used": float(len(loop.seen)),
        "steps": float(len(loop.losses)),
        "batch_size": float(loop.batch),
        "seq_len": float(mem.seq_len),
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


def _shard_metrics(before: ShardScore, after: ShardScore, majority: float) -> dict[str, float]:
    """The personalization metrics of the local shard (the server reads them: SHARD_KEYS)."""
    out = {
        "val_bal_acc_before": before.balanced_accuracy,
        "val_bal_acc_after": after.balanced_accuracy,
        "val_majority_acc": majority,
        "val_examples": float(after.examples),
    }
    return {k: round(float(v), 6) for k, v in out.items() if math.isfinite(v)}

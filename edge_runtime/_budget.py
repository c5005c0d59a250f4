"""Budgets of one training round: memory (peak RSS), battery and time, with typed outcomes.

A device that cannot finish a round is not an error: it reports one of ``OverBudget``,
``LowBattery`` or ``DeadlineMissed`` (plain dataclasses) and the coordinator counts it.

Memory is guarded twice: ``choose_shape`` picks the largest batch/sequence whose *estimated* peak
fits, and ``RssWatcher`` samples the real RSS on a light thread every ~25 ms plus after every step,
so that training stops at a safety margin (90 % by default) BEFORE the budget is reached. The
process is never allowed to run into the OOM killer: a killed process reports nothing.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from devices import ACTIVATION_FACTOR, RUNTIME_BASELINE_MB

MB = 1024.0 * 1024.0
DEFAULT_MARGIN = 0.90
#: Resident MB a runtime adds once loaded: the planner's figures (torch includes transformers).
RUNTIME_MB = RUNTIME_BASELINE_MB


@dataclass(frozen=True)
class OverBudget:
    peak_mb: float  # the round's peak: measured ("train", an open that went over) or estimated ("plan", "open")
    budget_mb: float
    where: str  # "plan" (estimate before training), "open" (loading the bundle), "train" (measured)
    rss_mb: float  # what the budget counted of this process when it refused: the guard's promise is rss_mb <= budget

    @property
    def measured(self) -> bool:
        """The process reached ``peak_mb`` (it was not only estimated)."""
        return self.rss_mb >= self.peak_mb

    def reason(self) -> str:
        return (
            f"peak RSS {self.peak_mb:.0f} MB would exceed the memory budget {self.budget_mb:.0f} MB "
            f"({self.where}); "
            f"raise memory_budget_mb= or use a smaller tier"
        )


@dataclass(frozen=True)
class LowBattery:
    level: float  # percent
    threshold: float
    charging: bool

    def reason(self) -> str:
        return f"battery {self.level:.0f}% is below {self.threshold:.0f}% and not charging: plug the device in"


@dataclass(frozen=True)
class DeadlineMissed:
    elapsed_s: float
    deadline_s: float  # seconds that were available from the start of training
    steps_done: int

    def reason(self) -> str:
        return (
            f"the round deadline ({self.deadline_s:.1f} s available) would be missed after {self.steps_done} steps "
            f"({self.elapsed_s:.1f} s): the server should give this device fewer local steps or a later deadline"
        )


# ----------------------------------------------------------------------------- memory


# What the memory budget counts. 'process' (the default, for real devices): the whole RSS of this
# process. 'bundle' (the simulation host): RSS above the baseline measured once the backend's runtime
# libraries are imported but before any bundle is loaded. A simulated phone runs ExecuTorch through
# its Python bindings, which pull in torch (~370 MB) that a native Android app linking the C++
# runtime never pays; 'bundle' charges what the bundle itself costs (weights, activations,
# optimizer state, workspaces) against the tier's budget instead.
MEMORY_ACCOUNTING = ("process", "bundle")
_host_baseline_mb = 0.0


def set_host_baseline(mb: float) -> None:
    global _host_baseline_mb
    _host_baseline_mb = max(0.0, float(mb))


def host_baseline_mb() -> float:
    return _host_baseline_mb


def rss_mb() -> float:
    """The memory the budget counts, MB: process RSS minus the host baseline (0 unless 'bundle')."""
    return max(0.0, process_rss_mb() - _host_baseline_mb)


def process_rss_mb() -> float:
    """Resident set size of this process, MB."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / MB
    except ImportError:  # /proc works on every Linux and Android
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


class RssWatcher:
    """Samples RSS on a daemon thread; ``tripped`` once it crosses ``margin * budget_mb``.

    The training loop checks ``tripped`` (and calls ``check()``) after every step, and stops
    before the next one; the thread catches growth inside a long step so the loop can stop as soon
    as the step returns.
    """

    def __init__(
        self,
        budget_mb: float,
        margin: float = DEFAULT_MARGIN,
        interval_s: float = 0.025,
        sampler: Callable[[], float] = rss_mb,
    ):
        self.budget_mb, self.margin, self.interval_s, self._sample = budget_mb, margin, interval_s, sampler
        self.limit_mb = margin * budget_mb
        self.peak_mb = 0.0
        self.tripped = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> float:
        now = self._sample()
        self.peak_mb = max(self.peak_mb, now)
        if now >= self.limit_mb:
            self.tripped.set()
        return now

    def reset_peak(self) -> None:
        self.peak_mb = 0.0
        self.check()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.check()

    def __enter__(self) -> "RssWatcher":
        self.check()
        self._thread = threading.Thread(target=self._run, name="rss-watcher", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        self.check()

    def over_budget(self, where: str) -> OverBudget:
        return OverBudget(round(self.peak_mb, 1), self.budget_mb, where, round(self.peak_mb, 1))


@dataclass(frozen=True)
class ShapeLimits:
    """What the bundle accepts: static shapes allow exactly (max_batch, max_seq)."""

    max_batch: int
    max_seq: int
    min_seq: int = 8
    static: bool = False


@dataclass(frozen=True)
class MemoryModel:
    """Closed-form peak estimate (same structure as devices/_planner.py, from the bundle's dims)."""

    hidden: int
    intermediate: int
    heads: int
    ranks: tuple[int, ...]
    modules: int  # LoRA target modules per layer
    trainable_params: int
    activation_factor: float = 1.0

    def activations_mb(self, batch: int, seq: int) -> float:
        tokens = batch * seq
        per_token = sum(
            6 * self.hidden + self.intermediate + self.heads * seq + 2 * r * self.modules for r in self.ranks
        )
        working = 2 * (self.intermediate + self.heads * seq + 4 * self.hidden)
        return 4.0 * tokens * (per_token * self.activation_factor + working) / MB

    def optimizer_mb(self) -> float:
        return 16.0 * self.trainable_params / MB  # param + grad + two AdamW moments, fp32


def _activation_factor(backend: str) -> float:
    """The planner's activation factor for ``backend`` (torch's, the largest, for one it does not know)."""
    return float(ACTIVATION_FACTOR.get(backend, ACTIVATION_FACTOR["torch"]))


def _heads(bundle_dir, hidden: int) -> int:
    """Attention heads from the bundle's config.json; else hidden/32 (MiniLM 384/12, BERT-base 768/24)."""
    try:
        return int(json.loads((Path(bundle_dir) / "config.json").read_text())["num_attention_heads"])
    except (OSError, ValueError, KeyError, TypeError):
        return max(1, hidden // 32)


def memory_model(manifest, bundle_dir=None) -> MemoryModel:
    """A MemoryModel for a bundle's manifest (no runtime import)."""
    dims, plan = manifest.dims, manifest.plan
    params = sum(math.prod(s.shape) for s in manifest.trainable)
    heads = _heads(bundle_dir, dims.hidden) if bundle_dir is not None else max(1, dims.hidden // 32)
    return MemoryModel(
        dims.hidden,
        dims.intermediate,
        heads,
        tuple(plan.ranks),
        len(plan.target_modules()),
        params,
        _activation_factor(manifest.backend),
    )


def shape_limits(manifest) -> ShapeLimits:
    """Batch/sequence bounds from the manifest's ``input_ids`` signature."""
    spec = next(i for i in manifest.inputs if i.name == "input_ids")
    b, s = spec.shape
    if isinstance(b, int) and isinstance(s, int):
        return ShapeLimits(b, s, s, static=True)
    max_b = int(spec.bounds.get("batch", [1, manifest.plan.batch_size])[1]) if not isinstance(b, int) else b
    lo_s, hi_s = spec.bounds.get("seq", [8, manifest.plan.max_seq_len]) if not isinstance(s, int) else (s, s)
    return ShapeLimits(max_b, int(hi_s), int(lo_s), static=False)


@dataclass(frozen=True)
class MemoryPlan:
    batch_size: int
    seq_len: int
    estimate_mb: float


def _halvings(top: int, bottom: int) -> list[int]:
    out, value = [], top
    while value > bottom:
        out.append(value)
        value //= 2
    return out + [bottom]


def choose_shape(
    model: MemoryModel,
    limits: ShapeLimits,
    want_batch: int,
    want_seq: int,
    base_mb: float,
    budget_mb: float,
    margin: float = DEFAULT_MARGIN,
) -> MemoryPlan | OverBudget:
    """The largest (batch, seq) <= what the task wants whose estimated peak stays under the margin.

    Sequence length is kept longest (truncation throws data away; a smaller batch only adds noise),
    so the batch shrinks to 1 before the sequence does. ``base_mb`` is RSS with the session loaded.
    """
    limit = margin * budget_mb
    if limits.static:
        candidates = [(limits.max_batch, limits.max_seq)]
    else:
        seq_top = max(limits.min_seq, min(want_seq, limits.max_seq))
        batch_top = max(1, min(want_batch, limits.max_batch))
        candidates = [(b, s) for s in _halvings(seq_top, limits.min_seq) for b in _halvings(batch_top, 1)]
    fixed = base_mb + model.optimizer_mb()
    for batch, seq in candidates:
        est = fixed + model.activations_mb(batch, seq)
        if est <= limit:
            return MemoryPlan(batch, seq, round(est, 1))
    smallest = candidates[-1]
    return OverBudget(round(fixed + model.activations_mb(*smallest), 1), budget_mb, "plan", round(base_mb, 1))


def open_estimate_mb(manifest, bundle_bytes: int, runtime_loaded: bool) -> float:
    """MB that loading the bundle adds to this process (runtime libraries + weights)."""
    return (0.0 if runtime_loaded else RUNTIME_MB.get(manifest.backend, 250.0)) + bundle_bytes / MB


# ----------------------------------------------------------------------------- battery


class Battery(Protocol):
    def read(self) -> tuple[float | None, bool | None]:
        """(percent or None when there is no battery, charging or None when unknown)."""

    def on_step(self) -> None:
        """Account for one training step (a real battery drains by itself)."""


class SystemBattery:
    """The device's real battery through psutil; servers have none (treated as mains power)."""

    def read(self) -> tuple[float | None, bool | None]:
        try:
            import psutil

            info = psutil.sensors_battery() if hasattr(psutil, "sensors_battery") else None
        except (ImportError, OSError, RuntimeError):  # a broken power_supply node must not stop training
            info = None
        if info is None:
            return None, None
        return float(min(100.0, max(0.0, info.percent))), info.power_plugged

    def on_step(self) -> None:
        pass

    def save(self) -> None:
        pass


@dataclass
class SimulatedBattery:
    """A battery for simulation: drains ``drain_per_step`` percent per step, persisted across rounds.

    ``capacity_pct`` is the most it charges to (an aged battery holds less than 100 %).
    """

    capacity_pct: float = 100.0
    drain_per_step: float = 0.05
    charging: bool = False
    level: float | None = None
    charge_per_step: float = 0.1
    path: Path | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 < self.capacity_pct <= 100:
            raise ValueError(f"capacity_pct must be in (0, 100], got {self.capacity_pct}")
        if self.level is None:
            self.level = self.capacity_pct
        self.level = float(min(self.capacity_pct, max(0.0, self.level)))

    def read(self) -> tuple[float | None, bool | None]:
        return self.level, self.charging

    def on_step(self) -> None:
        delta = self.charge_per_step if self.charging else -self.drain_per_step
        self.level = float(min(self.capacity_pct, max(0.0, self.level + delta)))

    def save(self) -> None:
        if self.path is not None:
            from edge_runtime._checkpoint import atomic_write_json

            state = {k: v for k, v in asdict(self).items() if k != "path"}
            atomic_write_json(self.path, state)

    @classmethod
    def load_or_create(cls, path: Path, **defaults) -> "SimulatedBattery":
        """The persisted battery at ``path`` (its level carries over between rounds and restarts)."""
        path = Path(path)
        if path.is_file():
            try:
                saved = json.loads(path.read_text())
                return cls(**{**defaults, "level": saved.get("level")}, path=path)
            except (ValueError, TypeError):
                pass  # a corrupt file only loses the simulated level; start from the defaults
        return cls(**defaults, path=path)


def check_battery(battery: Battery, threshold_pct: float) -> LowBattery | None:
    """LowBattery when on battery below the threshold; unknown charging counts as on battery."""
    level, charging = battery.read()
    if level is None or charging:
        return None
    if level < threshold_pct:
        return LowBattery(round(level, 2), threshold_pct, bool(charging))
    return None


# ----------------------------------------------------------------------------- time


class DeadlineGuard:
    """Says when the next step would end after the round's deadline (using the median step time).

    ``reserve_s`` keeps time for encoding and uploading the update after the last step.
    """

    def __init__(self, deadline_ts: float | None, reserve_s: float = 1.0, clock: Callable[[], float] = time.time):
        self.deadline_ts, self.reserve_s, self.clock = deadline_ts, reserve_s, clock
        self.started = clock()
        self.step_times: list[float] = []

    def record(self, seconds: float) -> None:
        self.step_times.append(seconds)

    def median_step_s(self) -> float:
        return statistics.median(self.step_times) if self.step_times else 0.0

    def would_miss(self) -> bool:
        if not self.deadline_ts:
            return False
        return self.clock() + self.median_step_s() + self.reserve_s > self.deadline_ts

    def missed(self) -> DeadlineMissed:
        available = (self.deadline_ts or self.started) - self.started
        return DeadlineMissed(round(self.clock() - self.started, 3), round(available, 3), len(self.step_times))

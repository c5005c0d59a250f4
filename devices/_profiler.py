"""Measure this device (memory, cores, battery, matmul speed) and pick its tier.

The profile travels in the MQTT hello message as JSON (``to_dict`` / ``from_dict``), so it holds
only plain numbers and strings. Profiling must be cheap enough to run at every start: the matmul
micro-benchmark stops after a fixed time budget (well under a second) and torch is imported only
when this machine could have a CUDA device at all.
"""

from __future__ import annotations

import glob
import importlib.util
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

PROFILE_SCHEMA_VERSION = 1
#: Each profile key -> the JSON type it must have (``from_dict`` checks it and names the key).
_PROFILE_KINDS = {
    "total_memory_mb": "number",
    "available_memory_mb": "number",
    "cpu_count": "integer",
    "battery_percent": "number or null",
    "charging": "true, false or null",
    "matmul_gflops": "number",
    "platform": "string",
    "machine": "string",
    "has_cuda": "true, false or null",
    "schema_version": "integer",
}
#: Keys an older sender may leave out (their defaults stand in).
_OPTIONAL_PROFILE_KEYS = frozenset({"has_cuda", "schema_version"})


def _read_profile_value(kind: str, value: Any) -> Any:
    """``value`` as the Python type of ``kind``; TypeError naming the expected JSON type otherwise."""
    if value is None and kind.endswith("or null"):
        return None
    if kind.startswith("true, false") and isinstance(value, bool):
        return value
    if kind.startswith("number") and isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # an integer beyond float range
            raise TypeError("a finite JSON number") from None
    if kind == "integer" and not isinstance(value, bool):
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            return int(value)
    if kind == "string" and isinstance(value, str):
        return value
    raise TypeError(kind if kind.startswith("true") else f"a JSON {kind}")


@dataclass(frozen=True)
class DeviceProfile:
    """What this device can give a training round, as measured now."""

    total_memory_mb: float = field(metadata={"help": "physical memory, MB"})
    available_memory_mb: float = field(metadata={"help": "memory available to a new process now, MB"})
    cpu_count: int = field(metadata={"help": "logical CPUs"})
    battery_percent: float | None = field(metadata={"help": "battery charge in percent; None when there is no battery"})
    charging: bool | None = field(metadata={"help": "on external power; None when unknown or no battery"})
    matmul_gflops: float = field(metadata={"help": "measured sustained fp32 numpy matmul GFLOP/s (all cores)"})
    platform: str = field(metadata={"help": "operating system, e.g. Linux or Android"})
    machine: str = field(metadata={"help": "CPU architecture, e.g. x86_64 or aarch64"})
    has_cuda: bool = field(default=False, metadata={"help": "a CUDA device is usable by torch"})
    schema_version: int = field(default=PROFILE_SCHEMA_VERSION, metadata={"help": "profile format version"})

    def __post_init__(self) -> None:
        errors = []
        finite = all(math.isfinite(v) for v in (self.total_memory_mb, self.available_memory_mb, self.matmul_gflops))
        if not finite:
            errors.append("memory and matmul_gflops must be finite numbers")
        if not (self.total_memory_mb > 0 and self.available_memory_mb >= 0):
            errors.append(
                f"memory must be positive, got total {self.total_memory_mb} available {self.available_memory_mb}"
            )
        if self.cpu_count < 1:
            errors.append(f"cpu_count must be >= 1, got {self.cpu_count}")
        if self.battery_percent is not None and not 0.0 <= self.battery_percent <= 100.0:
            errors.append(f"battery_percent must be in [0, 100] or None, got {self.battery_percent}")
        if not self.matmul_gflops > 0:
            errors.append(f"matmul_gflops must be > 0, got {self.matmul_gflops}")
        if errors:
            raise ValueError("invalid DeviceProfile: " + "; ".join(errors))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DeviceProfile":
        """Inverse of ``to_dict``, under the protocol's 1.x rule: keys this side does not know (a newer
        device's additions) are ignored; a missing required key, a value of the wrong type or a
        newer ``schema_version`` (the profile's major version) raise ValueError naming the key."""
        if not isinstance(d, Mapping):
            raise ValueError(f"DeviceProfile must be a JSON object, got {type(d).__name__}")
        version = d.get("schema_version", PROFILE_SCHEMA_VERSION)
        if type(version) is not int or version < 1:
            raise ValueError(
                f"DeviceProfile.schema_version must be a positive integer (the profile's major "
                f"version), got {version!r}: send {PROFILE_SCHEMA_VERSION}"
            )
        if version > PROFILE_SCHEMA_VERSION:
            raise ValueError(
                f"DeviceProfile schema_version {version} is a newer major version than this side "
                f"reads ({PROFILE_SCHEMA_VERSION}): update fedhft here, or send a version "
                f"{PROFILE_SCHEMA_VERSION} profile"
            )
        missing = sorted(name for name in _PROFILE_KINDS if name not in _OPTIONAL_PROFILE_KEYS and name not in d)
        if missing:
            raise ValueError(
                f"DeviceProfile is missing required field(s) {missing}: send every field that "
                "`fedhft devices profile` prints"
            )
        values, errors = {}, []
        for name, kind in _PROFILE_KINDS.items():
            if name in d:
                try:
                    values[name] = _read_profile_value(kind, d[name])
                except TypeError as exc:
                    errors.append(f"DeviceProfile.{name} must be {exc}, got {d[name]!r}")
        if errors:
            raise ValueError("; ".join(errors) + ": send the values `fedhft devices profile` prints")
        values.pop("schema_version", None)
        if values.get("has_cuda") is None:
            values["has_cuda"] = False
        return cls(**values)

    def should_skip_round(self, battery_threshold: float) -> bool:
        """True when on battery below the threshold (an unknown charging state counts as battery)."""
        if self.battery_percent is None or self.charging:
            return False
        return self.battery_percent < battery_threshold


def measure_matmul_gflops(n: int = 256, seconds: float = 0.25) -> float:
    """Sustained fp32 GFLOP/s of an ``n x n`` numpy matmul, repeated for about ``seconds``.

    One untimed call first, so that BLAS thread start-up and page faults do not count; the best of
    several short repeats, so that a background hiccup does not make a fast device look slow.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=out)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0, reps = time.perf_counter(), 0
        while reps < 4 or time.perf_counter() - t0 < 0.02:
            np.matmul(a, b, out=out)
            reps += 1
        best = max(best, 2.0 * n**3 * reps / (time.perf_counter() - t0) / 1e9)
    return best


def device_gflops(quick: bool = True) -> float:
    """The device's matmul GFLOP/s: the better of all BLAS threads and one thread.

    Multi-threaded OpenBLAS collapses when other processes load the cores (measured on a shared
    2-core machine: 0.5 GFLOP/s with 2 threads vs 18 with 1), which would put a busy device in the
    lowest tier for no lasting reason. One thread is a floor that contention cannot break.
    """
    n, seconds = (256, 0.15) if quick else (512, 0.5)
    multi = measure_matmul_gflops(n, seconds)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # an optional helper (scikit-learn brings it): without it, trust all threads
        return multi
    with threadpool_limits(limits=1, user_api="blas"):
        single = measure_matmul_gflops(n, seconds * 0.6)
    return max(multi, single)


def _memory_mb() -> tuple[float, float]:
    try:
        import psutil

        vm = psutil.virtual_memory()
        return vm.total / 2**20, vm.available / 2**20
    except ImportError:  # psutil is a dependency, but /proc works on every Linux and Android
        info = {}
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                key, value = line.split(":", 1)
                info[key] = float(value.split()[0]) / 1024.0
        return info["MemTotal"], info.get("MemAvailable", info["MemFree"])


def _battery() -> tuple[float | None, bool | None]:
    try:
        import psutil

        battery = psutil.sensors_battery() if hasattr(psutil, "sensors_battery") else None
    except (ImportError, OSError, RuntimeError):  # some kernels expose a broken power_supply node
        battery = None
    if battery is None:
        return None, None
    return float(min(100.0, max(0.0, battery.percent))), battery.power_plugged


def _has_cuda() -> bool:
    """True when torch sees a CUDA device; torch is imported only if it and a GPU node exist.

    Importing torch costs ~200 MB and seconds, which a phone without a GPU should not pay in order
    to learn that it has none.
    """
    if "torch" not in sys.modules:
        if importlib.util.find_spec("torch") is None:
            return False
        if not (glob.glob("/dev/nvidia[0-9]*") or glob.glob("/dev/nvhost-*") or glob.glob("/dev/nvgpu*")):
            return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # a broken CUDA install must not stop a device from joining: it trains on CPU
        return False


def _platform_name() -> str:
    # Android reports "Linux" from platform.system(); its env has ANDROID_ROOT.
    return "Android" if "ANDROID_ROOT" in os.environ or hasattr(sys, "getandroidapilevel") else platform.system()


def profile_device(quick: bool = True) -> DeviceProfile:
    """Profile this device now. ``quick`` uses a smaller, shorter matmul (~0.25 s vs ~0.8 s in all)."""
    total, available = _memory_mb()
    percent, charging = _battery()
    gflops = device_gflops(quick)
    return DeviceProfile(
        total_memory_mb=round(total, 1),
        available_memory_mb=round(available, 1),
        cpu_count=os.cpu_count() or 1,
        battery_percent=percent,
        charging=charging,
        matmul_gflops=round(gflops, 2),
        platform=_platform_name(),
        machine=platform.machine(),
        has_cuda=_has_cuda(),
    )


def recommend_tier(
    profile: DeviceProfile, catalog: Mapping[str, Any] | None = None, *, memory_share: float = 0.5
) -> str:
    """The largest tier (by memory budget, then compute) that this device can run.

    A tier fits when its memory budget is at most ``memory_share`` of the memory available now (the
    rest stays with the OS and the foreground apps, which mobile OSes kill last) and the device's
    measured matmul speed reaches the tier's compute estimate. ``catalog`` defaults to the
    packaged tiers. Raises ValueError naming the smallest tier's needs when none fits.
    """
    if catalog is None:
        from devices._catalog import load_catalog

        catalog = load_catalog()
    if not catalog:
        raise ValueError("the tier catalog is empty")
    tiers = sorted(catalog.values(), key=lambda t: (t.memory_budget_mb, t.compute_gflops))
    usable = memory_share * profile.available_memory_mb
    fitting = [t for t in tiers if t.memory_budget_mb <= usable and t.compute_gflops <= profile.matmul_gflops]
    if fitting:
        return fitting[-1].name
    low = tiers[0]
    raise ValueError(
        f"no tier fits this device ({usable:.0f} MB usable = {memory_share:.0%} of "
        f"{profile.available_memory_mb:.0f} MB "
        f"available, {profile.matmul_gflops:.1f} GFLOP/s): the smallest tier {low.name!r} needs "
        f"{low.memory_budget_mb:.0f} MB and {low.compute_gflops:.1f} GFLOP/s. Free memory or close apps and "
        "profile again"
    )


def profile_report(quick: bool = True) -> dict[str, Any]:
    """What ``fedhft devices profile`` prints: ``profile`` (exactly the hello payload; the
    recommendation stays beside it, since the server picks the tier itself), ``recommended_tier``
    (None when no tier fits) and ``no_tier_reason`` (why not, and what to do; None when one fits)."""
    profile = profile_device(quick=quick)
    try:
        tier, reason = recommend_tier(profile), None
    except ValueError as exc:
        tier, reason = None, str(exc)
    return {"profile": profile.to_dict(), "recommended_tier": tier, "no_tier_reason": reason}

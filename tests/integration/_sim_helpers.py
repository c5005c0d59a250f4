"""Helpers shared by the simulation integration tests."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def write_toy_sentiment(path: Path, n: int = 240) -> Path:
    """A learnable toy sentiment file (a user dataset path, so the tests need no shared data)."""
    pos, neg = ["good", "great", "superb", "lovely"], ["bad", "awful", "boring", "poor"]
    with open(path, "w") as fh:
        for i in range(n):
            y = i % 2
            fh.write(json.dumps({"text": f"a {(pos if y else neg)[i % 4]} film {i % 7}", "label": y}) + "\n")
    return path


def tiny_inprocess(tmp: Path, **settings) -> dict:
    """Settings of an in-process run of the tiny model on torch bundles (memory budgets and progress off,
    the bundle cache and run dir in ``tmp``), with ``settings`` on top."""
    base = {
        "engine": "inprocess",
        "model": "tiny",
        "backend": "torch",
        "max_seq_len": 16,
        "memory_budget": "off",
        "bundle_cache": str(tmp / "cache"),
        "out": str(tmp / "run"),
        "progress": "false",
    }
    return {**base, **settings}


def simulate_argv(settings: dict) -> list[str]:
    """The ``fedhft simulate`` command line of these settings (``key=value`` each)."""
    return [sys.executable, "-m", "fedhft", "simulate", *(f"{k}={v}" for k, v in settings.items())]


def pid_gone(pid: int) -> bool:
    """The pid is dead, or reused by something that is not ours."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
        return True
    return b"fedhft" not in cmd and b"mosquitto" not in cmd

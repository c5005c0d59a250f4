"""Helpers shared by the simulation integration tests."""

from __future__ import annotations

import json
from pathlib import Path


def write_toy_sentiment(path: Path, n: int = 240) -> Path:
    """A learnable toy sentiment file (a user dataset path, so the tests need no shared data)."""
    pos, neg = ["good", "great", "superb", "lovely"], ["bad", "awful", "boring", "poor"]
    with open(path, "w") as fh:
        for i in range(n):
            y = i % 2
            fh.write(json.dumps({"text": f"a {(pos if y else neg)[i % 4]} film {i % 7}", "label": y}) + "\n")
    return path


def pid_gone(pid: int) -> bool:
    """The pid is dead, or reused by something that is not ours."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
        return True
    return b"fedhft" not in cmd and b"mosquitto" not in cmd

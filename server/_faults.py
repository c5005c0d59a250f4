"""Fault injection for the reliability suite: ``FEDHFT_FAULT=<point>[:<n>]`` makes the server
SIGKILL itself the n-th time (default: the first) it reaches ``<point>``. A no-op unless set.

Points, in the order a round passes them:

* ``before_tasks``  - a round is persisted (``open``) but none of its tasks is published yet;
* ``after_publish`` - every task of the round was handed to the broker (given a moment to leave);
* ``intake``        - an intake batch's updates are committed, not yet acknowledged to the broker;
* ``aggregate``     - the round is closed and aggregated, nothing of it written yet;
* ``write_state``   - the strategy state file is written, the global state and the commit are not.

SIGKILL, not an exception: nothing (finally blocks, atexit, paho's DISCONNECT) runs, as in a
power cut or the OOM killer.
"""

from __future__ import annotations

import os
import signal
import sys
import time

POINTS = ("before_tasks", "after_publish", "intake", "aggregate", "write_state")
ENV = "FEDHFT_FAULT"
_counts: dict[str, int] = {}


def parse_fault(spec: str) -> tuple[str, int] | None:
    """``"intake:2"`` -> ("intake", 2); "" -> None. Raises ValueError naming the valid points."""
    if not spec:
        return None
    point, _, n = spec.partition(":")
    if point not in POINTS or (n and not n.isdigit()) or (n and int(n) < 1):
        raise ValueError(f"{ENV}={spec!r}: use <point>[:<n>] with a point in {POINTS} and n >= 1")
    return point, int(n or 1)


def fault_point(name: str, settle_s: float = 0.0) -> None:
    """Die here by SIGKILL if ``FEDHFT_FAULT`` names this point and occurrence. ``settle_s``: wait
    first (what was handed to paho's network thread leaves the process)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, n = parse_fault(spec)
    if name != point:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == n:
        time.sleep(settle_s)
        print(f"fedhft server: {ENV}={spec}: SIGKILL at {name} #{n}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

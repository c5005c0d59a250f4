"""Child process handling: a dead child is reported with its log tail; stop_all leaves nothing."""

from __future__ import annotations

import sys
import time
from types import SimpleNamespace

import pytest

from simulate import SimulationError
from simulate._procs import Child, Children
from simulate._run import _check_children


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_dead_child_is_reported_with_its_log(tmp_path):
    kids = Children()
    kids.add(Child("server", _py("import time; time.sleep(30)"), tmp_path / "server.log"))
    kids.add(Child("dev-001", _py("import sys; print('data file is broken'); sys.exit(3)"), tmp_path / "dev.log"))
    try:
        deadline = time.monotonic() + 10
        while kids.items[1].alive and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(SimulationError) as err:
            _check_children(kids, SimpleNamespace(broker=None))
        text = str(err.value)
        assert "edge device dev-001" in text and "code 3" in text and "data file is broken" in text
    finally:
        kids.stop_all(timeout=5)
    assert not any(c.alive for c in kids.items)


def test_stop_all_kills_a_child_that_ignores_sigterm(tmp_path):
    kids = Children()
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    )
    child = kids.add(Child("stubborn", _py(code), tmp_path / "s.log"))
    deadline = time.monotonic() + 10
    while "ready" not in child.tail() and time.monotonic() < deadline:
        time.sleep(0.05)
    killed = kids.stop_all(timeout=1.0)
    assert killed == [child.pid] and not child.alive
    assert kids.stop_all() == []  # safe to call again

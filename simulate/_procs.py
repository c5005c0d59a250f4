"""Child processes of a simulation (server, edge devices): started in their own process group with
their output in a log file, watched, and stopped by pid: SIGTERM to the group, then SIGKILL.

Each child gets Linux's parent-death signal (util-linux ``setpriv --pdeathsig TERM``, which then
execs the command under the same pid), so that even a SIGKILLed ``fedhft simulate`` leaves no
orphaned devices behind. It fires when the forking *thread* exits, so it is only used from the
main thread.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


def _pdeathsig_prefix() -> list[str]:
    if threading.current_thread() is not threading.main_thread():
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM"] if setpriv else []


def repo_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: this checkout importable (a non-installed checkout works too),
    offline Hugging Face, and ``extra``."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def fedhft_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedhft", *args]


@dataclass
class Child:
    name: str
    cmd: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict, repr=False)
    proc: subprocess.Popen | None = None
    started: float = 0.0

    def start(self) -> "Child":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*_pdeathsig_prefix(), *self.cmd],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env or None,
                start_new_session=True,
            )
        self.started = time.time()
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])

    def signal_group(self, sig: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)  # its own session: pgid == pid
        except (ProcessLookupError, PermissionError):
            pass


class Children:
    """Every child of a run; ``stop_all`` is safe to call any number of times."""

    def __init__(self) -> None:
        self.items: list[Child] = []

    def add(self, child: Child) -> Child:
        self.items.append(child.start())
        return child

    def died(self, names: set[str] | None = None) -> list[Child]:
        """Children that exited on their own with a non-zero code (a clean exit 0 is not a death)."""
        return [c for c in self.items if (names is None or c.name in names) and c.returncode not in (None, 0)]

    def stop_all(self, timeout: float = 10.0) -> list[int]:
        """SIGTERM every live group, wait up to ``timeout`` in total, SIGKILL what is left. Returns
        the pids that needed SIGKILL."""
        for c in self.items:
            c.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for c in self.items:
            if c.proc is None:
                continue
            try:
                c.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        killed = []
        for c in self.items:
            if c.alive:
                killed.append(c.pid)
                c.signal_group(signal.SIGKILL)
                try:
                    c.proc.wait(timeout=5.0)
                except subprocess.TimeoutExpired:
                    pass
        return killed

    @property
    def pids(self) -> list[int]:
        return [c.pid for c in self.items if c.pid is not None]

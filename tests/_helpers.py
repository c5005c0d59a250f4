"""Helpers shared by the unit, integration and reliability tests: toy data, subprocesses, polling."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable

REPO = Path(__file__).resolve().parents[1]
POS = ["good", "great", "excellent", "wonderful", "superb"]
NEG = ["bad", "awful", "terrible", "poor", "boring"]


def write_toy_data(path: Path, n: int, seed: int) -> Path:
    """A learnable toy sentiment task (CSV): one sentiment word among filler words, string labels."""
    rng = random.Random(seed)
    with open(path, "w") as fh:
        fh.write("text,label\n")
        for i in range(n):
            y = i % 2
            words = [rng.choice(POS if y else NEG), rng.choice(["movie", "film", "plot", "the"])]
            rng.shuffle(words)
            fh.write(f'"{" ".join(words)}",{"pos" if y else "neg"}\n')
    return path


class Proc:
    """A subprocess in its own session, logging to a file; stopped by its pid."""

    def __init__(self, name: str, cmd: list[str], log_path: Path, env: dict | None = None):
        self.name, self.cmd, self.log_path = name, cmd, log_path
        self._log = open(log_path, "ab")
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "FEDHFT_FAULT": ""}
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.pid = self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, sig: int) -> None:
        if self.alive:
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        """SIGTERM (or ``sig``), then SIGKILL; a stopped (SIGSTOP) process is continued first."""
        if self.alive:
            try:
                os.kill(self.pid, signal.SIGCONT)
                os.kill(self.pid, sig)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(10)
            except ProcessLookupError:
                pass
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode

    def tail(self, n: int = 30) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return f"--- {self.name} (pid {self.pid}, rc {self.proc.poll()}) ---\n" + "\n".join(lines[-n:])

    def events(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out


def wait_for(
    predicate: Callable[[], object],
    timeout: float,
    what: str,
    procs: Iterable[Proc] = (),
    must_live: Iterable[Proc] = (),
    every: float = 0.2,
):
    """Poll ``predicate`` until truthy (returned); on timeout, fail with the processes' log tails.
    A process of ``must_live`` that exits ends the wait at once (its log says why)."""
    deadline = time.monotonic() + timeout
    must_live = list(must_live)
    while True:
        value = predicate()
        if value:
            return value
        dead = [p for p in must_live if not p.alive]
        if dead or time.monotonic() > deadline:
            why = f"{dead[0].name} exited" if dead else f"timed out after {timeout}s"
            tails = "\n".join(p.tail() for p in [*must_live, *procs])
            raise AssertionError(f"{why} waiting for {what}\n{tails}")
        time.sleep(every)

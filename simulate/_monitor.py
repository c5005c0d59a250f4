"""Follow a running server from outside: its per-round metrics and its client-round records, read
through the server package's read-only readers (``server.read_metrics``, ``read_client_rounds``,
``count_clients``), evaluate each committed round in a background thread, and draw progress.
"""

from __future__ import annotations

import atexit
import queue
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Callable, TextIO

from server import ClientRoundStatus
from simulate._evaluate import EncodedSet, Evaluator, evaluate_round

FINAL = (ClientRoundStatus.STORED, ClientRoundStatus.REJECTED, ClientRoundStatus.OUTCOME, ClientRoundStatus.DROPPED)


def read_metrics(state_dir: Path) -> list[dict]:
    """The server's per-round metrics (``fedhft server`` appends one line per committed round)."""
    from server import read_metrics as server_metrics

    return server_metrics(state_dir)


def client_rounds(state_dir: Path) -> list[dict]:
    """Every (round, client) record with its reported metrics parsed; [] before the server starts."""
    from server import read_client_rounds

    return read_client_rounds(state_dir)


def joined_clients(state_dir: Path) -> int:
    from server import count_clients

    return count_clients(state_dir)


class EvalWorker:
    """Evaluates committed rounds one after another on a daemon thread (the devices keep training
    meanwhile). ``results`` maps round -> evaluation dict; errors are kept, never raised there."""

    def __init__(self, model: str, state_dir: Path, data: EncodedSet, batch: int, threads: int = 1):
        self.model, self.state_dir, self.data, self.batch, self.threads = model, state_dir, data, batch, threads
        self.todo: queue.Queue = queue.Queue()
        self.results: dict[int, dict] = {}
        self.error: str | None = None
        self._thread = threading.Thread(target=self._loop, name="fedhft-sim-eval", daemon=True)
        self._thread.start()

    def submit(self, idx: int) -> None:
        self.todo.put(idx)

    def _loop(self) -> None:
        try:
            ev = Evaluator(self.model, threads=self.threads)
        except Exception:
            self.error = traceback.format_exc()
            return
        while True:
            idx = self.todo.get()
            if idx is None:
                return
            try:
                self.results[idx] = evaluate_round(ev, self.state_dir, idx, self.data, self.batch)
            except Exception as exc:  # one unreadable state must not hide the others
                self.results[idx] = {"round": idx, "accuracy": None, "error": f"{type(exc).__name__}: {exc}"}

    def finish(self, timeout: float | None = None, cancel: bool = False) -> None:
        """Evaluate what is queued, then stop; ``cancel`` drops the rounds not started yet (after
        Ctrl-C the user wants the prompt back, not minutes of evaluation)."""
        while cancel:
            try:
                self.todo.get_nowait()
            except queue.Empty:
                break
        self.todo.put(None)
        self._thread.join(timeout)


class Progress:
    """A simulation's progress on ``stream`` (stdout).

    On a terminal: a live rich bar (rounds committed; clients done in the open round; the latest
    accuracy). Anywhere else (a log file, CI, nohup) a bar is drawn only once, at the end, so there
    it prints plain lines instead: one when a round commits (clients stored/selected, elapsed,
    ETA) and one when that round's accuracy is known. Evaluation runs behind the rounds, so the two
    lines of a round are not adjacent; each says which round it is about. ``enabled=False``
    (``progress=false``) prints neither: callers that run many simulations (benchmarks, tests)
    keep their own output readable.
    """

    def __init__(
        self,
        rounds: int,
        clients: int,
        enabled: bool = True,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.rounds, self.clients, self.enabled = rounds, clients, enabled
        self.stream = stream if stream is not None else sys.stdout
        self._clock, self._t0, self._first_round_at = clock, clock(), None
        self._logged_commits: set[int] = set()
        self._logged_evals: set[int] = set()
        self._bar = self._start_bar() if enabled and _isatty(self.stream) else None
        self.lines = enabled and self._bar is None  # plain lines: not a terminal, or rich missing

    def _start_bar(self):
        try:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress as RichProgress,
                TextColumn,
                TimeElapsedColumn,
            )
        except ImportError:
            return None
        bar = RichProgress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            transient=False,
            console=Console(file=self.stream),
        )
        bar.start()
        self._task = bar.add_task("rounds", total=self.rounds, info="waiting for devices")
        atexit.register(self._stop_bar)  # an exception past run_simulation must not leave the cursor hidden
        return bar

    def update(self, state_dir: Path, committed: list[dict], records: list[dict], evals: dict[int, dict]) -> None:
        """One poll of the running server: ``committed`` is its metrics lines, ``records`` its
        client-round records, ``evals`` round -> evaluation (filled by the EvalWorker)."""
        if records and self._first_round_at is None:
            self._first_round_at = self._clock()
        if self._bar is not None:
            info = status_line(state_dir, committed, records, evals, self.clients)
            self._bar.update(self._task, completed=len(committed), info=info)
        elif self.lines:
            self._print_new(committed, evals)

    def close(self, evals: dict[int, dict] | None = None, committed: list[dict] | None = None) -> None:
        """Stop; call it after the last evaluation with its results, so that the last accuracy
        shown is the final round's (the evaluation of a round finishes after its commit)."""
        if self._bar is not None:
            if committed is not None:
                self._bar.update(self._task, completed=len(committed), info=final_info(committed, evals or {}))
            self._stop_bar()
        elif self.lines and (evals or committed):
            self._print_new(committed or [], evals or {})
            self.lines = False

    def _stop_bar(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
            atexit.unregister(self._stop_bar)

    def _print_new(self, committed: list[dict], evals: dict[int, dict]) -> None:
        for m in committed:
            if m["round"] not in self._logged_commits:
                self._logged_commits.add(m["round"])
                self._say(self.commit_line(m, len(self._logged_commits)))
        for idx in sorted(list(evals)):  # the EvalWorker's thread adds to it meanwhile
            if idx not in self._logged_evals:
                self._logged_evals.add(idx)
                self._say(eval_line(evals[idx]))

    def commit_line(self, m: dict, done: int) -> str:
        now = self._clock()
        line = (
            f"round {m['round']} committed ({done} of {self.rounds} rounds): "
            f"{clients_done(m)}; elapsed {_hms(now - self._t0)}"
        )
        if done >= self.rounds:
            return line + ", evaluating the last round"
        since = now - (self._first_round_at if self._first_round_at is not None else self._t0)
        return line + f", ETA {_hms(since / done * (self.rounds - done))}"

    def _say(self, line: str) -> None:
        print(line, file=self.stream, flush=True)


def clients_done(m: dict) -> str:
    """``3/4 clients stored (dropped 1)`` from a metrics line: every client that did not store is counted."""
    missing = [
        (label, m.get(key) or 0)
        for label, key in (
            ("rejected", "rejected_clients"),
            ("device reported failure", "outcome_clients"),
            ("dropped", "dropped"),
        )
    ]
    why = ", ".join(f"{label} {n}" for label, n in missing if n)
    return f"{m.get('stored', 0)}/{m.get('selected', 0)} clients stored" + (f" ({why})" if why else "")


def eval_line(e: dict) -> str:
    if e.get("accuracy") is None:
        return f"round {e['round']} test accuracy: evaluation failed ({e.get('error', 'no result')})"
    return f"round {e['round']} test accuracy {e['accuracy']:.3f}"


def final_info(committed: list[dict], evals: dict[int, dict]) -> str:
    """The bar's last words: the final round's accuracy, or why it is missing."""
    if not committed:
        return "no round committed"
    last = committed[-1]["round"]
    acc = (evals.get(last) or {}).get("accuracy")
    return f"round {last}: {clients_done(committed[-1])}, " + (
        f"acc r{last} {acc:.3f}" if acc is not None else f"acc r{last} n/a"
    )


def _hms(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


def status_line(
    state_dir: Path, committed: list[dict], records: list[dict], evals: dict[int, dict], clients: int
) -> str:
    joined = joined_clients(state_dir)
    if not records:
        return f"devices joined {joined}/{clients}"
    current = max(r["round"] for r in records)
    rows = [r for r in records if r["round"] == current]
    done = sum(r["status"] in FINAL for r in rows)
    acc = [e for e in list(evals.values()) if e.get("accuracy") is not None]  # the EvalWorker adds meanwhile
    last = max(acc, key=lambda e: e["round"]) if acc else None
    shown = f", acc r{last['round']} {last['accuracy']:.3f}" if last else ""
    state = "committed" if any(m["round"] == current for m in committed) else f"{done}/{len(rows)} clients done"
    return f"round {current}: {state}{shown}"

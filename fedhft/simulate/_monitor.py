"""Follow a running server from outside: its metrics.jsonl and its SQLite records (read-only),
evaluate each committed round in a background thread, and draw progress.

FORMAT DEPENDENCY (no ``import server``): ``<state>/metrics.jsonl`` holds one JSON object per
committed round (server/_metrics.py ``round_metrics``); ``<state>/server.sqlite`` table
``client_rounds`` (round, client, tier, backend, status, bytes, num_examples, metrics JSON,
outcome, reason) holds what each device reported (server/_store.py ``_SCHEMA``).
"""
from __future__ import annotations

import json
import queue
import sqlite3
import threading
import traceback
from pathlib import Path

from fedhft.jsonlines import read_jsonl
from fedhft.simulate._evaluate import EncodedSet, Evaluator, evaluate_round

FINAL = ("stored", "rejected", "outcome", "dropped")


def read_metrics(state_dir: Path) -> list[dict]:
    """The server's per-round metrics (``fedhft server`` appends one line per committed round)."""
    return read_jsonl(Path(state_dir) / "metrics.jsonl")


def _connect(state_dir: Path) -> sqlite3.Connection | None:
    db = Path(state_dir) / "server.sqlite"
    if not db.is_file():
        return None
    conn = sqlite3.connect(f"file:{db.resolve()}?mode=ro", uri=True, timeout=2.0)
    conn.row_factory = sqlite3.Row
    return conn


def client_rounds(state_dir: Path) -> list[dict]:
    """Every (round, client) record with its reported metrics parsed; [] before the server starts."""
    try:
        conn = _connect(state_dir)
        if conn is None:
            return []
        try:
            rows = conn.execute("SELECT round, client, tier, backend, status, bytes, num_examples, metrics, "
                                "outcome, reason FROM client_rounds ORDER BY round, client").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return []  # the server is mid-commit or the schema is not there yet
    out = []
    for r in rows:
        d = dict(r)
        try:
            d["metrics"] = json.loads(d["metrics"] or "{}")
        except json.JSONDecodeError:
            d["metrics"] = {}
        out.append(d)
    return out


def joined_clients(state_dir: Path) -> int:
    try:
        conn = _connect(state_dir)
        if conn is None:
            return 0
        try:
            return int(conn.execute("SELECT COUNT(*) FROM clients").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


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
    """A rich progress bar (rounds; clients done in the open round; last accuracy), or plain
    lines when rich is missing or ``enabled`` is False."""

    def __init__(self, rounds: int, clients: int, enabled: bool = True):
        self.rounds, self.clients, self._bar, self._last = rounds, clients, None, ""
        if enabled:
            try:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, \
                    TimeElapsedColumn

                self._bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                         TextColumn("{task.fields[info]}"), TimeElapsedColumn(), transient=False)
                self._bar.start()
                self._task = self._bar.add_task("rounds", total=rounds, info="waiting for devices")
            except ImportError:
                self._bar = None
        self.enabled = enabled

    def update(self, committed: int, info: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=committed, info=info)
        elif self.enabled and info != self._last:
            print(f"[{committed}/{self.rounds}] {info}", flush=True)
        self._last = info

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def status_line(state_dir: Path, committed: list[dict], records: list[dict], evals: dict[int, dict],
                clients: int) -> str:
    joined = joined_clients(state_dir)
    if not records:
        return f"devices joined {joined}/{clients}"
    current = max(r["round"] for r in records)
    rows = [r for r in records if r["round"] == current]
    done = sum(r["status"] in FINAL for r in rows)
    acc = [e for e in evals.values() if e.get("accuracy") is not None]
    last = max(acc, key=lambda e: e["round"]) if acc else None
    shown = f", acc r{last['round']} {last['accuracy']:.3f}" if last else ""
    state = "committed" if any(m["round"] == current for m in committed) else f"{done}/{len(rows)} clients done"
    return f"round {current}: {state}{shown}"

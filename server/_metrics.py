"""Per-round metrics (one JSON line per committed round in ``<state>/metrics.jsonl``) and the
``fedhft server status`` report, both computed from the durable store."""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import time
from collections import Counter
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from fedhft.jsonlines import read_jsonl
from fedhft.protocol import ServerState
from server._store import DB_NAME, METRICS_FILE, ClientRoundStatus, RoundState, Store, StoreError

log = logging.getLogger("fedhft.server")

#: What clients call their accuracy / loss; ``val_acc_after`` / ``val_loss_after`` are what `fedhft edge`
#: reports (local validation after the round's training).
ACCURACY_KEYS = ("accuracy", "val_acc_after", "acc", "eval_accuracy")
LOSS_KEYS = ("loss", "val_loss_after")


def _accuracy(metrics: dict) -> float | None:
    return next((float(metrics[k]) for k in ACCURACY_KEYS if k in metrics), None)


#: The shard scores ``fedhft edge`` reports per round (see edge_runtime's ``score_shard``).
SHARD_KEYS = ("val_acc_before", "val_acc_after", "val_bal_acc_before", "val_bal_acc_after", "val_majority_acc")
#: The share of clients whose mean is the "worst clients" figure.
WORST_SHARE = 0.10


def personalized_summary(client_metrics: list[dict[str, float]]) -> dict[str, Any] | None:
    """Fleet-wide personalized scores of one round from the clients' shard metrics: means weighted
    by shard size (``val_examples``) of each ``SHARD_KEYS`` score, and the unweighted mean of the
    worst 10% of clients (at least one) on accuracy after local training. None when no client
    reported a shard."""
    rows = [m for m in client_metrics if m.get("val_examples", 0) > 0 and "val_acc_after" in m]
    if not rows:
        return None
    weights = np.array([float(m["val_examples"]) for m in rows])
    out: dict[str, Any] = {"clients": len(rows), "examples": int(weights.sum())}
    for key in SHARD_KEYS:
        have = [(w, float(m[key])) for w, m in zip(weights, rows) if key in m]
        out[key.removeprefix("val_")] = (
            float(np.average([v for _, v in have], weights=[w for w, _ in have])) if have else None
        )
    after = np.sort([float(m["val_acc_after"]) for m in rows])
    out["worst10_acc_after"] = float(after[: max(1, int(np.ceil(WORST_SHARE * len(after))))].mean())
    return out


def round_metrics(store: Store, idx: int, extra: dict[str, Any]) -> dict[str, Any]:
    """The metrics line of round ``idx``: counts by status, client-reported accuracy (mean and per
    tier), bytes, rejections by reason, outcomes by kind, plus ``extra`` (durations, clusters)."""
    summary = store.round_summary(idx)
    return metrics_line(idx, summary["tasks"], summary["rejections"], extra)


def metrics_line(idx: int, tasks: list[dict], rejections: dict[str, int], extra: dict[str, Any]) -> dict[str, Any]:
    """``round_metrics`` from the round's client records (``client_rounds`` rows as dicts: status,
    tier, bytes, outcome and metrics as JSON text) and its rejection counts by reason."""
    status = Counter(t["status"] for t in tasks)
    acc_all, acc_tier, loss, shards = [], {}, [], []
    for t in tasks:
        if t["status"] != ClientRoundStatus.STORED:
            continue
        m = json.loads(t["metrics"] or "{}")
        shards.append(m)
        a = _accuracy(m)
        if a is not None:
            acc_all.append(a)
            acc_tier.setdefault(t["tier"], []).append(a)
        lv = next((m[k] for k in LOSS_KEYS if k in m), None)
        if lv is not None:
            loss.append(float(lv))
    out = {
        "round": idx,
        "selected": len(tasks),
        "stored": status.get(ClientRoundStatus.STORED, 0),
        "rejected_clients": status.get(ClientRoundStatus.REJECTED, 0),
        "outcome_clients": status.get(ClientRoundStatus.OUTCOME, 0),
        "dropped": status.get(ClientRoundStatus.DROPPED, 0),
        "accuracy_mean": float(np.mean(acc_all)) if acc_all else None,
        "accuracy_by_tier": {k: float(np.mean(v)) for k, v in sorted(acc_tier.items())},
        "loss_mean": float(np.mean(loss)) if loss else None,
        "bytes_up": int(sum(t["bytes"] or 0 for t in tasks if t["status"] == ClientRoundStatus.STORED)),
        "rejections": dict(sorted(rejections.items())),
        "outcomes": dict(
            sorted(Counter(t["outcome"] for t in tasks if t["status"] == ClientRoundStatus.OUTCOME).items())
        ),
        "clients_by_tier": dict(sorted(Counter(t["tier"] for t in tasks).items())),
        "personalized": personalized_summary(shards),
    }
    out.update(extra)
    return out


def append_metrics(state_dir: Path, line: dict[str, Any]) -> None:
    """Append one JSON line and fsync (the line for a committed round must not vanish)."""
    path = Path(state_dir) / METRICS_FILE
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(state_dir: Path) -> list[dict]:
    return read_jsonl(Path(state_dir) / METRICS_FILE)


def repair_metrics(store: Store) -> None:
    """After a crash between a commit and its metrics line, write the missing lines from the store."""
    have = {m.get("round") for m in read_metrics(store.dir)}
    for r in store.rounds():
        if r.state == RoundState.COMMITTED and r.metrics is not None and r.idx not in have:
            append_metrics(store.dir, r.metrics)


#: The ``meta`` row where ``run_server`` records who serves this state dir (pid, host) and its
#: state: ``running`` from start-up, ``finished`` / ``offline`` written on a clean stop.
SERVER_META = "server"


class Liveness(str, Enum):
    """Whether a server is serving a state dir now, as far as ``fedhft server status`` can tell."""

    RUNNING = "running"  # the recorded server process is alive on this host
    STOPPED = "stopped"  # it stopped cleanly (finished its rounds, or was told to stop)
    CRASHED = "crashed"  # recorded as running, but its process is gone (kill -9, power loss)
    UNKNOWN = "unknown"  # no record (an older fedhft wrote the dir), or it runs on another host


def record_server_state(store: Store, state: ServerState, now: float | None = None) -> None:
    """Record in the store that this process serves it (``running``) or has stopped (``finished`` /
    ``offline``); never raises: a full disk must not turn a clean stop into a traceback."""
    t = time.time() if now is None else now
    try:
        old = json.loads(store.get_meta(SERVER_META) or "{}")
        rec = {
            "state": state,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": t if state == ServerState.RUNNING else old.get("started"),
            "updated": t,
        }
        store.set_meta(SERVER_META, json.dumps(rec, sort_keys=True))
    except (sqlite3.Error, ValueError) as exc:
        log.warning("could not record server state %r in %s: %s", state, store.dir, exc)


def server_liveness(record: dict | None) -> tuple[Liveness, str]:
    """(liveness, why) from the ``server`` meta record."""
    if not record:
        return Liveness.UNKNOWN, "this state dir has no server record (written by an older fedhft)"
    if record.get("state") == ServerState.FINISHED:
        return Liveness.STOPPED, "it finished its rounds and stopped"
    if record.get("state") != ServerState.RUNNING:
        return Liveness.STOPPED, "it was stopped before its last round (SIGTERM or Ctrl-C) and can resume"
    pid, host = record.get("pid"), record.get("host")
    if host != socket.gethostname():
        return Liveness.UNKNOWN, f"recorded as running on host {host!r} (pid {pid}); it cannot be checked from here"
    if _same_process_alive(pid, record.get("started")):
        return Liveness.RUNNING, f"pid {pid}"
    return Liveness.CRASHED, f"recorded as running as pid {pid}, which is gone: it stopped without a clean exit"


def _same_process_alive(pid, started) -> bool:
    """Alive, and not a later process that reuses the pid (it would have started after the record)."""
    import psutil

    try:
        proc = psutil.Process(int(pid))
        return proc.status() != psutil.STATUS_ZOMBIE and (started is None or proc.create_time() <= started + 2.0)
    except (psutil.Error, TypeError, ValueError):
        return False


def _open_readonly(state_dir: Path) -> Store:
    """The store of ``state_dir``; StoreError naming the problem and the fix for anything else."""
    if not state_dir.exists():
        raise StoreError(
            f"{state_dir} does not exist: pass the --state DIR that `fedhft server` ran with "
            "(for a simulation: RUN_DIR/server)"
        )
    if not state_dir.is_dir():
        raise StoreError(f"{state_dir} is a file, not a state dir: pass the --state DIR that `fedhft server` ran with")
    if not (state_dir / DB_NAME).is_file() and (state_dir / "server" / DB_NAME).is_file():
        raise StoreError(
            f"{state_dir} is a simulation's run dir, not a server state dir: pass --state {state_dir / 'server'}"
        )
    return Store(state_dir, readonly=True)


def server_status(state_dir: str | Path, now: float | None = None) -> dict[str, Any]:
    """What ``fedhft server status`` prints: whether a server is running and when it last was,
    rounds, clients by tier and state, last metrics. Raises StoreError for a bad state dir."""
    state_dir = Path(state_dir)
    store = _open_readonly(state_dir)
    try:
        rounds, clients = store.rounds(), store.clients()
        run, server = store.get_meta("run"), store.get_meta(SERVER_META)
    except sqlite3.Error as exc:
        raise StoreError(
            f"{state_dir / DB_NAME} is not a readable fedhft server database ({exc}): pass the "
            "--state DIR that `fedhft server` ran with"
        ) from None
    finally:
        store.close()
    record = json.loads(server) if server else None
    liveness, why = server_liveness(record)
    by_tier: dict[str, Counter] = {}
    for c in clients:
        by_tier.setdefault(c.tier or "(none)", Counter())[c.state] += 1
    times = [c.last_seen for c in clients] + [t for r in rounds for t in (r.started, r.closed, r.committed) if t]
    times += [record["updated"]] if record and record.get("updated") else []
    metrics = read_metrics(state_dir)
    reported_online = sum(c.online for c in clients)
    return {
        "state_dir": str(state_dir),
        "now": time.time() if now is None else now,
        "server": {
            "liveness": liveness.value,
            "why": why,
            "record": record,
            "last_active": max(times) if times else None,
        },
        "run": json.loads(run) if run else None,
        "rounds": [
            {"round": r.idx, "state": r.state, "started": r.started, "closed": r.closed, "committed": r.committed}
            for r in rounds
        ],
        "committed_rounds": sum(1 for r in rounds if r.state == RoundState.COMMITTED),
        # Only a running server keeps the online flags true; a stopped one leaves them as last reported.
        "clients": {
            "total": len(clients),
            "online": {Liveness.RUNNING: reported_online, Liveness.UNKNOWN: None}.get(liveness, 0),
            "last_reported_online": reported_online,
            "by_tier": {t: dict(c) for t, c in sorted(by_tier.items())},
        },
        "last_metrics": metrics[-1] if metrics else None,
    }


def format_status(status: dict[str, Any]) -> str:
    """The text of ``fedhft server status``: every number says what it counts."""
    now, srv = status["now"], status["server"]
    lines = [f"state dir: {status['state_dir']}", _server_line(srv, now)]
    run = status.get("run") or {}
    if run:
        lines.append("run: " + ", ".join(f"{k}={v}" for k, v in sorted(run.items())))
    rounds = status["rounds"]
    lines.append(f"rounds: {status['committed_rounds']} committed of {len(rounds)} started")
    for r in rounds[-5:]:
        lines.append(f"  round {r['round']:>4}: {r['state']}")
    lines += _client_lines(status["clients"], srv["liveness"])
    m = status.get("last_metrics")
    if m:
        lines += [
            f"last committed round ({m['round']}):",
            f"  clients stored {m['stored']} of {m['selected']} selected; rejected "
            f"{m.get('rejected_clients', 0)}, "
            f"device-reported failures {m.get('outcome_clients', 0)}, dropped {m.get('dropped', 0)}",
            f"  mean client-reported accuracy (each client's local validation set): {_num(m['accuracy_mean'])}",
            f"  rejections by reason: {_counts(m['rejections'])}; device failures by kind: {_counts(m['outcomes'])}",
            f"  round duration {_secs(m.get('round_s'))}, aggregation {_secs(m.get('aggregation_s'))}",
        ]
    return "\n".join(lines)


def _server_line(srv: dict, now: float) -> str:
    last = srv.get("last_active")
    seen = f"last activity {_when(last, now)}" if last else "no activity recorded"
    rec = srv.get("record") or {}
    if srv["liveness"] == Liveness.RUNNING:
        return f"server: running ({srv['why']}, since {_when(rec.get('started'), now)}); {seen}"
    if srv["liveness"] == Liveness.STOPPED:
        return f"server: NOT running: {srv['why']} {_when(rec.get('updated'), now)}; {seen}"
    if srv["liveness"] == Liveness.CRASHED:
        return f"server: NOT running: {srv['why']}; {seen}"
    return f"server: not known to be running: {srv['why']}; {seen}"


def _client_lines(c: dict, liveness: str) -> list[str]:
    if liveness == Liveness.RUNNING:
        head, states = f"clients: {c['total']} registered, {c['online']} online", "state by tier"
    elif c["online"] is None:
        head = (
            f"clients: {c['total']} registered, {c['last_reported_online']} online when last reported "
            "(whether the server still runs is unknown)"
        )
        states = "last reported state by tier"
    else:
        head = f"clients: {c['total']} registered, none online (the server is not running)"
        states = "state each client last reported before the server stopped, by tier"
    lines = [head, f"  {states}:"] if c["by_tier"] else [head]
    for tier, counts in c["by_tier"].items():
        lines.append(f"    {tier:<16} " + ", ".join(f"{s} {n}" for s, n in sorted(counts.items())))
    return lines


def _when(ts: float | None, now: float) -> str:
    if ts is None:
        return "(time unknown)"
    stamp = datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    ago = max(0, int(now - ts))
    span = (
        f"{ago} s"
        if ago < 120
        else f"{ago // 60} min"
        if ago < 7200
        else f"{ago // 3600} h"
        if ago < 172800
        else f"{ago // 86400} days"
    )
    return f"at {stamp} ({span} ago)"


def _counts(d: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) if d else "none"


def _secs(value) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"

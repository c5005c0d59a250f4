"""Per-round metrics (one JSON line per committed round in ``<state>/metrics.jsonl``) and the
``fedhft server status`` report, both computed from the durable store."""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from fedhft.jsonlines import read_jsonl
from server._store import METRICS_FILE, Store

#: What clients call their accuracy / loss; ``val_acc_after`` / ``val_loss_after`` are what `fedhft edge`
#: reports (local validation after the round's training).
ACCURACY_KEYS = ("accuracy", "val_acc_after", "acc", "eval_accuracy")
LOSS_KEYS = ("loss", "val_loss_after")


def _accuracy(metrics: dict) -> float | None:
    return next((float(metrics[k]) for k in ACCURACY_KEYS if k in metrics), None)


def round_metrics(store: Store, idx: int, extra: dict[str, Any]) -> dict[str, Any]:
    """The metrics line of round ``idx``: counts by status, client-reported accuracy (mean and per
    tier), bytes, rejections by reason, outcomes by kind, plus ``extra`` (durations, clusters)."""
    summary = store.round_summary(idx)
    tasks = summary["tasks"]
    status = Counter(t["status"] for t in tasks)
    acc_all, acc_tier, loss = [], {}, []
    for t in tasks:
        if t["status"] != "stored":
            continue
        m = json.loads(t["metrics"] or "{}")
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
        "stored": status.get("stored", 0),
        "rejected_clients": status.get("rejected", 0),
        "outcome_clients": status.get("outcome", 0),
        "dropped": status.get("dropped", 0),
        "accuracy_mean": float(np.mean(acc_all)) if acc_all else None,
        "accuracy_by_tier": {k: float(np.mean(v)) for k, v in sorted(acc_tier.items())},
        "loss_mean": float(np.mean(loss)) if loss else None,
        "bytes_up": int(sum(t["bytes"] or 0 for t in tasks if t["status"] == "stored")),
        "rejections": dict(sorted(summary["rejections"].items())),
        "outcomes": dict(sorted(Counter(t["outcome"] for t in tasks if t["status"] == "outcome").items())),
        "clients_by_tier": dict(sorted(Counter(t["tier"] for t in tasks).items())),
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
        if r.state == "committed" and r.metrics is not None and r.idx not in have:
            append_metrics(store.dir, r.metrics)


def server_status(state_dir: str | Path) -> dict[str, Any]:
    """What ``fedhft server status`` prints: rounds, clients by tier and state, last metrics."""
    store = Store(state_dir, readonly=True)
    try:
        rounds = store.rounds()
        clients = store.clients()
        run = store.get_meta("run")
    finally:
        store.close()
    by_tier: dict[str, Counter] = {}
    for c in clients:
        by_tier.setdefault(c.tier or "(none)", Counter())[c.state] += 1
    metrics = read_metrics(Path(state_dir))
    return {
        "state_dir": str(state_dir),
        "run": json.loads(run) if run else None,
        "rounds": [{"round": r.idx, "state": r.state, "started": r.started, "closed": r.closed,
                    "committed": r.committed} for r in rounds],
        "committed_rounds": sum(1 for r in rounds if r.state == "committed"),
        "clients": {"total": len(clients), "online": sum(c.online for c in clients),
                    "by_tier": {t: dict(c) for t, c in sorted(by_tier.items())}},
        "last_metrics": metrics[-1] if metrics else None,
    }


def format_status(status: dict[str, Any]) -> str:
    lines = [f"state dir: {status['state_dir']}"]
    run = status.get("run") or {}
    if run:
        lines.append("run: " + ", ".join(f"{k}={v}" for k, v in sorted(run.items())))
    rounds = status["rounds"]
    lines.append(f"rounds: {status['committed_rounds']} committed of {len(rounds)} started")
    for r in rounds[-5:]:
        lines.append(f"  round {r['round']:>4}: {r['state']}")
    c = status["clients"]
    lines.append(f"clients: {c['total']} registered, {c['online']} online")
    for tier, states in c["by_tier"].items():
        lines.append(f"  {tier:<12} " + ", ".join(f"{s}={n}" for s, n in sorted(states.items())))
    m = status.get("last_metrics")
    if m:
        lines.append(f"last metrics (round {m['round']}): stored {m['stored']}/{m['selected']}, "
                     f"accuracy {_num(m['accuracy_mean'])}, rejections {m['rejections']}, outcomes {m['outcomes']}, "
                     f"round {m.get('round_s')} s, aggregation {m.get('aggregation_s')} s")
    return "\n".join(lines)


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"

"""The reliability suite's harness: real processes (Mosquitto, `fedhft server`, `fedhft edge`),
tiny torch bundles, toy data, read-only views of the durable state, and the figures counter.

Every process is started in its own session and stopped by its pid (SIGTERM, then SIGKILL) by
whoever started it; a test's waits poll the durable state with generous timeouts and never
assert on wall-clock time (the CI machine is shared and has 2 cores).
"""

from __future__ import annotations

import json
import sqlite3
import sys
from collections import Counter
from pathlib import Path
from typing import Iterable

from devices import AdapterPlan
from tests._helpers import REPO, Proc, wait_for, write_toy_data  # noqa: F401  (re-exported to the tests)

FLEET = "rel"
SEED = 11
#: Tiny-model tiers (2 layers, hidden 64), named after catalog tiers. Budgets are passed per edge.
TIERS = {
    "android-low": AdapterPlan(depth=1, ranks=(2,), mask_density=0.25, batch_size=4, max_seq_len=16),
    "android-high": AdapterPlan(depth=2, ranks=(2, 4), mask_density=0.5, batch_size=4, max_seq_len=16),
    "jetson-orin-nano": AdapterPlan(depth=2, ranks=(4, 4), mask_density=1.0, batch_size=4, max_seq_len=16),
}


# ----------------------------------------------------------------------------- figures


class Figures:
    """What the suite measured, summed over its tests (`fedhft bench reliability` prints them)."""

    KEYS = (
        "scenarios_run",
        "scenarios_passed",
        "faults_injected",
        "rounds_completed",
        "updates_stored",
        "updates_lost",
        "updates_double_counted",
        "bad_inputs_tried",
        "bad_inputs_rejected",
        "intrusions_tried",
        "intrusions_refused",
    )

    def __init__(self) -> None:
        self.counts: Counter = Counter({k: 0 for k in self.KEYS})
        self.scenarios: dict[str, str] = {}
        self.details: dict[str, dict] = {}

    def add(self, **counts: int) -> None:
        for k, v in counts.items():
            if k not in self.KEYS:
                raise KeyError(f"unknown figure {k!r}: use one of {self.KEYS}")
            self.counts[k] += int(v)

    def to_dict(self) -> dict:
        return {
            "figures": dict(self.counts),
            "scenarios": dict(sorted(self.scenarios.items())),
            "details": self.details,
        }


# ----------------------------------------------------------------------------- bundles and data


def export_bundles(out: Path, tiers: Iterable[str] = tuple(TIERS)) -> Path:
    """One real torch bundle per tier of the tiny model (2 layers, 2 labels)."""
    from export import export_bundle

    for tier in tiers:
        if not (out / tier / "torch" / "manifest.json").is_file():
            export_bundle("tiny", 2, tier, TIERS[tier], "torch", out, progress=lambda _: None)
    return out


def server_yaml(path: Path, bundles: Path, **settings) -> Path:
    base = {
        "fleet": FLEET,
        "bundles_dir": str(bundles),
        "rounds": 2,
        "clients_per_round": 3,
        "min_clients": 3,
        "round_deadline_s": 120,
        "update_encoding": "fp16",
        "norm_bound": 100.0,
        "seed": SEED,
        "local_steps": 4,
        "lr": 0.01,
        "strategy": "fedhft",
        "warmup_rounds": 1,
    }
    base.update(settings)
    path.write_text("".join(f"{k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}\n" for k, v in base.items()))
    return path


# ----------------------------------------------------------------------------- processes


def server_cmd(cfg: Path, url: str, state: Path, fleet, *overrides: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fedhft",
        "--log-level",
        "INFO",
        "server",
        "--broker",
        url,
        "--state",
        str(state),
        "--config",
        str(cfg),
        "--credentials",
        str(fleet.dir / "server.json"),
        *overrides,
    ]


def edge_cmd(url: str, fleet, client: str, data: Path, state: Path, bundles: Path | None, *extra: str) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "fedhft",
        "edge",
        f"broker={url}",
        f"credentials={fleet.dir / 'clients' / f'{client}.json'}",
        f"data={data}",
        f"state={state}",
        "backend=torch",
        "threads=1",
        "ack_timeout_s=5",
        "progress_every=0",
        "log_format=json",
    ]
    if bundles is not None:
        cmd += [f"bundle_dir={bundles}"]
    return cmd + list(extra)


# ----------------------------------------------------------------------------- durable state (read-only)


class StateView:
    """Read-only queries on a server state dir's SQLite (a fresh connection per call: the server
    writes concurrently)."""

    def __init__(self, state: Path):
        self.state = Path(state)

    def _q(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        path = self.state / "server.sqlite"
        if not path.is_file():
            return []
        db = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, timeout=10)
        db.row_factory = sqlite3.Row
        try:
            return db.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # created, not yet initialised
                return []
            raise
        finally:
            db.close()

    def rounds(self) -> list[dict]:
        return [dict(r) for r in self._q("SELECT * FROM rounds ORDER BY idx")]

    def committed(self) -> list[int]:
        return [r["idx"] for r in self._q("SELECT idx FROM rounds WHERE state='committed' ORDER BY idx")]

    def round_state(self, idx: int) -> str | None:
        rows = self._q("SELECT state FROM rounds WHERE idx=?", (idx,))
        return rows[0]["state"] if rows else None

    def metrics(self, idx: int) -> dict | None:
        rows = self._q("SELECT metrics FROM rounds WHERE idx=?", (idx,))
        return json.loads(rows[0]["metrics"]) if rows and rows[0]["metrics"] else None

    def tasks(self, idx: int) -> dict[str, dict]:
        return {r["client"]: dict(r) for r in self._q("SELECT * FROM client_rounds WHERE round=?", (idx,))}

    def status(self, idx: int) -> dict[str, str]:
        return {c: t["status"] for c, t in self.tasks(idx).items()}

    def updates(self, idx: int | None = None) -> list[dict]:
        q = "SELECT round, client, task_id, digest, encoding, num_examples, length(payload) AS n FROM updates"
        rows = self._q(
            q + (" WHERE round=?" if idx is not None else "") + " ORDER BY round, client",
            (idx,) if idx is not None else (),
        )
        return [dict(r) for r in rows]

    def rejections(self, idx: int | None = None) -> list[dict]:
        q = "SELECT * FROM rejections" + (" WHERE round=?" if idx is not None else "") + " ORDER BY id"
        return [dict(r) for r in self._q(q, (idx,) if idx is not None else ())]

    def clients(self) -> dict[str, dict]:
        return {r["client"]: dict(r) for r in self._q("SELECT * FROM clients")}

    def file_of(self, idx: int, kind: str = "global") -> Path | None:
        rows = self._q(f"SELECT {kind}_file AS f FROM rounds WHERE idx=? AND state='committed'", (idx,))
        return self.state / rows[0]["f"] if rows and rows[0]["f"] else None


def read_state(path: Path) -> dict:
    from safetensors.numpy import load

    return load(Path(path).read_bytes())

"""Durable server state: one SQLite database (WAL) plus safetensors files for adapter states.

What must survive a ``kill -9`` is committed with ``synchronous=FULL`` before anyone is told about
it: an update's payload bytes are in the database BEFORE its PUBLISH is acknowledged, and a
round's new strategy state file is written atomically (temp, fsync, rename, dir fsync) BEFORE the
row that makes the round ``committed`` points at it. A state file that no committed row names is
garbage from a crash and is simply overwritten next time.

Layout of a state dir::

    server.sqlite (+ -wal, -shm)     registry, rounds, client-round records, updates, rejections
    states/strategy-r00003.safetensors   strategy.state_dict() after round 3 (meta as JSON inside)
    states/global-r00003.safetensors     the global adapter state after round 3 (for evaluation)
    states/clusters-r00003.safetensors   per-cluster states (clustered strategies only)
    metrics.jsonl                     one JSON line per committed round
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from fedhft.protocol import atomic_write

from server._task_ids import new_run_id

DB_NAME = "server.sqlite"
STATES_DIR = "states"
METRICS_FILE = "metrics.jsonl"
SCHEMA_VERSION = 1


class RoundState(StrEnum):
    """A round's progress (``rounds.state``), in order."""

    CONFIGURED = "configured"
    OPEN = "open"
    CLOSED = "closed"
    AGGREGATED = "aggregated"
    COMMITTED = "committed"


class ClientRoundStatus(StrEnum):
    """A selected client's status in one round (``client_rounds.status``). ``TASKED`` is the only
    one that a resume re-tasks; the others are final."""

    TASKED = "tasked"
    STORED = "stored"
    REJECTED = "rejected"
    OUTCOME = "outcome"
    DROPPED = "dropped"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS clients (
    client TEXT PRIMARY KEY, profile TEXT NOT NULL, tier TEXT, backend TEXT, backends TEXT NOT NULL,
    last_seen REAL NOT NULL, online INTEGER NOT NULL, state TEXT NOT NULL, battery REAL,
    registered REAL NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
    idx INTEGER PRIMARY KEY, state TEXT NOT NULL, started REAL, deadline REAL, closed REAL,
    committed REAL, salt INTEGER NOT NULL, metrics TEXT, strategy_file TEXT, global_file TEXT,
    clusters_file TEXT);
CREATE TABLE IF NOT EXISTS client_rounds (
    round INTEGER NOT NULL, client TEXT NOT NULL, task_id TEXT NOT NULL, tier TEXT NOT NULL,
    backend TEXT NOT NULL, assignment_digest TEXT NOT NULL, status TEXT NOT NULL,
    update_digest TEXT, bytes INTEGER, num_examples INTEGER, metrics TEXT, outcome TEXT,
    reason TEXT, ts REAL NOT NULL, PRIMARY KEY (round, client));
CREATE TABLE IF NOT EXISTS updates (
    round INTEGER NOT NULL, client TEXT NOT NULL, task_id TEXT NOT NULL, digest TEXT NOT NULL,
    encoding TEXT NOT NULL, num_examples INTEGER NOT NULL, payload BLOB NOT NULL,
    received REAL NOT NULL, PRIMARY KEY (round, client));
CREATE TABLE IF NOT EXISTS rejections (
    id INTEGER PRIMARY KEY AUTOINCREMENT, round INTEGER, client TEXT NOT NULL, task_id TEXT,
    reason TEXT NOT NULL, detail TEXT NOT NULL, digest TEXT, bytes INTEGER, ts REAL NOT NULL);
CREATE INDEX IF NOT EXISTS rejections_round ON rejections (round);
"""


class StoreError(RuntimeError):
    """The state dir cannot be used as it is; the message says why and what to do."""


@dataclass(frozen=True)
class ClientRecord:
    client: str
    profile: dict
    tier: str | None
    backend: str | None
    backends: list[str]
    last_seen: float
    online: bool
    state: str
    battery: float | None


@dataclass(frozen=True)
class TaskRecord:
    """One selected client of a round (the row written when the round is configured)."""

    round: int
    client: str
    task_id: str
    tier: str
    backend: str
    assignment_digest: str
    status: ClientRoundStatus = ClientRoundStatus.TASKED
    update_digest: str | None = None


@dataclass(frozen=True)
class StoredUpdate:
    """An accepted update: the exact encoded body bytes, as received."""

    round: int
    client: str
    task_id: str
    digest: str
    encoding: str
    num_examples: int
    payload: bytes
    metrics: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RoundRecord:
    idx: int
    state: RoundState
    started: float | None
    deadline: float | None
    closed: float | None
    committed: float | None
    salt: int
    metrics: dict | None
    strategy_file: str | None
    global_file: str | None
    clusters_file: str | None


@dataclass(frozen=True)
class ResumePoint:
    """Where a restarted server picks up. ``in_flight`` is the round to re-open (None: start
    ``next_round`` fresh); ``stored`` its clients whose updates are already durable (not re-tasked)."""

    last_committed: RoundRecord | None
    in_flight: RoundRecord | None
    tasks: list[TaskRecord]

    @property
    def next_round(self) -> int:
        return 0 if self.last_committed is None else self.last_committed.idx + 1

    @property
    def stored(self) -> list[str]:
        return [t.client for t in self.tasks if t.status == ClientRoundStatus.STORED]

    @property
    def to_retask(self) -> list[str]:
        return [t.client for t in self.tasks if t.status == ClientRoundStatus.TASKED]


def write_tensors(path: Path, tensors: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None) -> Path:
    """safetensors file written atomically; ``meta`` (JSON-able) travels in its metadata header."""
    extra = {"fedhft_meta": json.dumps(meta, sort_keys=True)} if meta is not None else None
    data = st_save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=extra)
    return atomic_write(path, data)


def read_tensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Inverse of ``write_tensors``: (tensors, meta)."""
    from safetensors import safe_open

    raw = Path(path).read_bytes()
    tensors = st_load(raw)
    with safe_open(str(path), framework="numpy") as f:
        header = f.metadata() or {}
    meta = json.loads(header["fedhft_meta"]) if "fedhft_meta" in header else {}
    return tensors, meta


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class Store:
    """The server's SQLite database. Not thread-safe by design: one worker thread owns it (the
    coordinator's), so that the write order is the processing order and no lock is needed."""

    def __init__(self, state_dir: str | Path, *, readonly: bool = False):
        self.dir, self.readonly = Path(state_dir), readonly
        if readonly:
            if not (self.dir / DB_NAME).is_file():
                raise StoreError(
                    f"{self.dir} holds no {DB_NAME}: it is not a fedhft server state dir "
                    f"(start `fedhft server --state {self.dir}` first)"
                )
            uri = f"file:{(self.dir / DB_NAME).resolve()}?mode=ro"
            self.db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        else:
            (self.dir / STATES_DIR).mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.dir / DB_NAME, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk when execute('COMMIT') returns; updates are acked after it.
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(_SCHEMA)
            self._check_schema()
        self.db.row_factory = sqlite3.Row

    def close(self) -> None:
        self.db.close()

    # -- transactions --------------------------------------------------------------------------
    def _tx(self):
        return _Transaction(self)

    def batch(self):
        """One transaction (one fsync) around many store calls: the coordinator wraps each intake
        batch in it (group commit), then acknowledges what the batch stored."""
        return _Transaction(self, outer=True)

    def _check_schema(self) -> None:
        row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            self.db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            raise StoreError(
                f"{self.dir / DB_NAME} has schema {row[0]}, this fedhft uses {SCHEMA_VERSION}: "
                "use a new --state dir (or the fedhft version that wrote it)"
            )

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self._tx():
            self.db.execute(
                "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value)
            )

    def run_id(self) -> str:
        """This state dir's run id (``server._task_ids``): random, made the first time it is asked
        for and kept, so a resume re-issues the same task ids and MQTT session. A dir that already
        holds tasks but no run id was written before run ids existed: it keeps ``""`` (untagged
        task ids, the fleet-wide session) so that its resume still matches."""
        saved = self.get_meta("run_id")
        if saved is not None or self.readonly:
            return saved or ""
        legacy = self.db.execute("SELECT 1 FROM client_rounds LIMIT 1").fetchone() is not None
        value = "" if legacy else new_run_id()
        self.set_meta("run_id", value)
        return value

    def bind_run(self, identity: Mapping[str, Any]) -> None:
        """Remember what run this state dir belongs to (fleet, strategy, ...); refuse another one."""
        text = _json(dict(identity))
        saved = self.get_meta("run")
        if saved is None:
            with self._tx():
                self.db.execute("INSERT INTO meta VALUES ('run', ?)", (text,))
            return
        old, new = json.loads(saved), json.loads(text)
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            raise StoreError(
                f"state dir {self.dir} belongs to another run: "
                f"{', '.join(f'{k}={old.get(k)!r} (now {new.get(k)!r})' for k in diff)}. "
                "Resume with the same settings, or pass a new --state dir"
            )

    # -- registry ------------------------------------------------------------------------------
    def upsert_client(
        self,
        client: str,
        profile: dict,
        tier: str | None,
        backend: str | None,
        backends: list[str],
        now: float,
        battery: float | None = None,
    ) -> None:
        with self._tx():
            self.db.execute(
                "INSERT INTO clients VALUES (?,?,?,?,?,?,1,'online',?,?) ON CONFLICT(client) DO UPDATE SET "
                "profile=excluded.profile, tier=excluded.tier, backend=excluded.backend, backends=excluded.backends, "
                "last_seen=excluded.last_seen, online=1, state='online', battery=excluded.battery",
                (client, _json(profile), tier, backend, _json(backends), now, battery, now),
            )

    def set_client_status(self, client: str, state: str, online: bool, battery: float | None, now: float) -> bool:
        """Liveness of a registered client; False when the client never said hello."""
        with self._tx():
            cur = self.db.execute(
                "UPDATE clients SET state=?, online=?, battery=COALESCE(?, battery), last_seen=? WHERE client=?",
                (state, int(online), battery, now, client),
            )
        return cur.rowcount > 0

    def clients(self) -> list[ClientRecord]:
        rows = self.db.execute("SELECT * FROM clients ORDER BY client").fetchall()
        return [
            ClientRecord(
                r["client"],
                json.loads(r["profile"]),
                r["tier"],
                r["backend"],
                json.loads(r["backends"]),
                r["last_seen"],
                bool(r["online"]),
                r["state"],
                r["battery"],
            )
            for r in rows
        ]

    # -- rounds --------------------------------------------------------------------------------
    def create_round(self, idx: int, salt: int, deadline: float, tasks: list[TaskRecord], now: float) -> None:
        """The round and every selected client's task, in one transaction (state ``configured``)."""
        with self._tx():
            self.db.execute(
                "INSERT INTO rounds (idx, state, started, deadline, salt) VALUES (?, ?, ?, ?, ?)",
                (idx, RoundState.CONFIGURED, now, deadline, salt),
            )
            self.db.executemany(
                "INSERT INTO client_rounds (round, client, task_id, tier, backend, assignment_digest, status, ts) "
                "VALUES (?,?,?,?,?,?,?,?)",
                [
                    (
                        t.round,
                        t.client,
                        t.task_id,
                        t.tier,
                        t.backend,
                        t.assignment_digest,
                        ClientRoundStatus.TASKED,
                        now,
                    )
                    for t in tasks
                ],
            )

    def set_round_state(
        self, idx: int, state: RoundState | str, *, deadline: float | None = None, closed: float | None = None
    ) -> None:
        if state not in set(RoundState):
            raise ValueError(f"unknown round state {state!r}: use one of {tuple(str(s) for s in RoundState)}")
        state = RoundState(state)
        with self._tx():
            self.db.execute(
                "UPDATE rounds SET state=?, deadline=COALESCE(?, deadline), closed=COALESCE(?, closed) WHERE idx=?",
                (state, deadline, closed, idx),
            )

    def round(self, idx: int) -> RoundRecord | None:
        row = self.db.execute("SELECT * FROM rounds WHERE idx=?", (idx,)).fetchone()
        return None if row is None else _round(row)

    def rounds(self) -> list[RoundRecord]:
        return [_round(r) for r in self.db.execute("SELECT * FROM rounds ORDER BY idx").fetchall()]

    def tasks(self, idx: int) -> list[TaskRecord]:
        rows = self.db.execute("SELECT * FROM client_rounds WHERE round=? ORDER BY client", (idx,)).fetchall()
        return [
            TaskRecord(
                r["round"],
                r["client"],
                r["task_id"],
                r["tier"],
                r["backend"],
                r["assignment_digest"],
                _stored(ClientRoundStatus, r["status"]),
                r["update_digest"],
            )
            for r in rows
        ]

    def task_ids(self, client: str) -> dict[str, int]:
        """Every task id ever given to ``client`` -> its round (to recognise replays)."""
        rows = self.db.execute("SELECT task_id, round FROM client_rounds WHERE client=?", (client,)).fetchall()
        return {r[0]: r[1] for r in rows}

    def resume_point(self) -> ResumePoint:
        """The last committed round, and the round in flight after it (if any) with its tasks."""
        committed = self.db.execute(
            "SELECT * FROM rounds WHERE state=? ORDER BY idx DESC LIMIT 1", (RoundState.COMMITTED,)
        ).fetchone()
        last = _round(committed) if committed else None
        nxt = 0 if last is None else last.idx + 1
        row = self.db.execute("SELECT * FROM rounds WHERE idx=?", (nxt,)).fetchone()
        if row is None:
            return ResumePoint(last, None, [])
        return ResumePoint(last, _round(row), self.tasks(nxt))

    # -- update intake -------------------------------------------------------------------------
    def store_updates(self, updates: list[StoredUpdate], now: float) -> None:
        """Payload bytes + ``stored`` status, one durable transaction for the whole batch (group
        commit: one fsync for many updates); the caller acknowledges the PUBLISHes after this."""
        if not updates:
            return
        with self._tx():
            self.db.executemany(
                "INSERT INTO updates VALUES (?,?,?,?,?,?,?,?)",
                [(u.round, u.client, u.task_id, u.digest, u.encoding, u.num_examples, u.payload, now) for u in updates],
            )
            self.db.executemany(
                "UPDATE client_rounds SET status=?, update_digest=?, bytes=?, num_examples=?, metrics=?, ts=? "
                "WHERE round=? AND client=?",
                [
                    (
                        ClientRoundStatus.STORED,
                        u.digest,
                        len(u.payload),
                        u.num_examples,
                        _json(u.metrics),
                        now,
                        u.round,
                        u.client,
                    )
                    for u in updates
                ],
            )

    def stored_digest(self, idx: int, client: str) -> str | None:
        row = self.db.execute("SELECT digest FROM updates WHERE round=? AND client=?", (idx, client)).fetchone()
        return None if row is None else row[0]

    def iter_updates(self, idx: int) -> Iterator[StoredUpdate]:
        """Stored updates of a round, ONE row in memory at a time (cursor), in client order."""
        keys = self.db.execute(
            "SELECT u.client FROM updates u JOIN client_rounds c ON c.round=u.round AND "
            "c.client=u.client WHERE u.round=? AND c.status=? ORDER BY u.client",
            (idx, ClientRoundStatus.STORED),
        ).fetchall()
        for (client,) in keys:
            r = self.db.execute(
                "SELECT u.*, c.metrics AS m FROM updates u JOIN client_rounds c "
                "ON c.round=u.round AND c.client=u.client WHERE u.round=? AND u.client=?",
                (idx, client),
            ).fetchone()
            yield StoredUpdate(
                r["round"],
                r["client"],
                r["task_id"],
                r["digest"],
                r["encoding"],
                r["num_examples"],
                bytes(r["payload"]),
                json.loads(r["m"] or "{}"),
            )

    def record_rejection(
        self,
        idx: int | None,
        client: str,
        task_id: str | None,
        reason: str,
        detail: str,
        digest: str | None,
        nbytes: int,
        now: float,
        final: bool = False,
    ) -> None:
        """Log a rejected update; ``final`` also marks the client's task ``rejected`` (it will not
        be waited for), which only a well-formed update for its own task may do."""
        with self._tx():
            self.db.execute(
                "INSERT INTO rejections (round, client, task_id, reason, detail, digest, bytes, ts) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (idx, client, task_id, reason, detail[:1024], digest, nbytes, now),
            )
            if final and idx is not None:
                self.db.execute(
                    "UPDATE client_rounds SET status=?, reason=?, update_digest=?, ts=? "
                    "WHERE round=? AND client=? AND status=?",
                    (ClientRoundStatus.REJECTED, reason, digest, now, idx, client, ClientRoundStatus.TASKED),
                )

    def unstore(self, idx: int, client: str, reason: str, detail: str, now: float) -> None:
        """Take a stored update out of the round (the aggregator could not use it): its status
        becomes ``rejected`` and a resume will not re-feed it; the payload stays for inspection."""
        with self._tx():
            self.db.execute(
                "UPDATE client_rounds SET status=?, reason=?, ts=? WHERE round=? AND client=?",
                (ClientRoundStatus.REJECTED, reason, now, idx, client),
            )
            self.db.execute(
                "INSERT INTO rejections (round, client, task_id, reason, detail, digest, bytes, ts) "
                "SELECT round, client, task_id, ?, ?, digest, LENGTH(payload), ? FROM updates "
                "WHERE round=? AND client=?",
                (reason, detail[:1024], now, idx, client),
            )

    def record_outcome(self, idx: int, client: str, kind: str, reason: str, metrics: dict, now: float) -> bool:
        with self._tx():
            cur = self.db.execute(
                "UPDATE client_rounds SET status=?, outcome=?, reason=?, metrics=?, ts=? "
                "WHERE round=? AND client=? AND status=?",
                (
                    ClientRoundStatus.OUTCOME,
                    kind,
                    reason[:1024],
                    _json(metrics),
                    now,
                    idx,
                    client,
                    ClientRoundStatus.TASKED,
                ),
            )
        return cur.rowcount > 0

    def mark_dropped(self, idx: int, now: float) -> int:
        """Every still-``tasked`` client of a closing round is ``dropped``."""
        with self._tx():
            cur = self.db.execute(
                "UPDATE client_rounds SET status=?, ts=? WHERE round=? AND status=?",
                (ClientRoundStatus.DROPPED, now, idx, ClientRoundStatus.TASKED),
            )
        return cur.rowcount

    def rejections(self, idx: int | None = None) -> list[dict]:
        q, args = (
            ("SELECT * FROM rejections WHERE round=? ORDER BY id", (idx,))
            if idx is not None
            else ("SELECT * FROM rejections ORDER BY id", ())
        )
        return [dict(r) for r in self.db.execute(q, args).fetchall()]

    def round_summary(self, idx: int) -> dict[str, Any]:
        """Counts and sums for the round's metrics line."""
        rows = self.db.execute("SELECT * FROM client_rounds WHERE round=?", (idx,)).fetchall()
        rej = self.db.execute(
            "SELECT reason, COUNT(*) FROM rejections WHERE round=? GROUP BY reason", (idx,)
        ).fetchall()
        return {"tasks": [dict(r) for r in rows], "rejections": {r[0]: r[1] for r in rej}}

    # -- commit --------------------------------------------------------------------------------
    def state_path(self, kind: str, idx: int) -> Path:
        return self.dir / STATES_DIR / f"{kind}-r{idx:05d}.safetensors"

    def commit_round(self, idx: int, files: Mapping[str, Path | None], metrics: dict, now: float) -> None:
        """Make round ``idx`` committed. The files must already be written (atomically)."""
        rel = {k: (str(Path(v).relative_to(self.dir)) if v else None) for k, v in files.items()}
        with self._tx():
            self.db.execute(
                "UPDATE rounds SET state=?, committed=?, metrics=?, strategy_file=?, global_file=?, "
                "clusters_file=? WHERE idx=?",
                (
                    RoundState.COMMITTED,
                    now,
                    _json(metrics),
                    rel.get("strategy"),
                    rel.get("global"),
                    rel.get("clusters"),
                    idx,
                ),
            )

    def path(self, relative: str) -> Path:
        return self.dir / relative


def _round(row: sqlite3.Row) -> RoundRecord:
    return RoundRecord(
        row["idx"],
        _stored(RoundState, row["state"]),
        row["started"],
        row["deadline"],
        row["closed"],
        row["committed"],
        row["salt"],
        json.loads(row["metrics"]) if row["metrics"] else None,
        row["strategy_file"],
        row["global_file"],
        row["clusters_file"],
    )


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on error); the connection is in autocommit
    mode, so every write the store makes is inside exactly one of these. Inside an outer
    ``Store.batch()`` an inner one does nothing: the batch commits everything at once."""

    def __init__(self, store: "Store", outer: bool = False):
        self.store, self.outer, self.active = store, outer, False

    def __enter__(self):
        if getattr(self.store, "_in_batch", False):
            if self.outer:
                raise RuntimeError("Store.batch() does not nest")
            return self.store.db
        self.store.db.execute("BEGIN IMMEDIATE")
        self.active = True
        self.store._in_batch = self.outer
        return self.store.db

    def __exit__(self, exc_type, exc, tb):
        if not self.active:
            return False
        self.store._in_batch = False
        self.store.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        return False


def now() -> float:
    return time.time()


def _stored(kind: type[StrEnum], value: str) -> StrEnum:
    """A status read back from the database, as its enum member."""
    try:
        return kind(value)
    except ValueError:
        raise StoreError(
            f"{DB_NAME} holds {kind.__name__} {value!r}, none of {[str(m) for m in kind]}: another "
            "fedhft version wrote this state dir; resume it with that version or use a new --state dir"
        ) from None

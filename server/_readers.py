"""Read-only views of a server's state dir for another process (the simulation's progress and
report): safe while the server runs, and quiet before it has written anything.

The server owns ``server.sqlite``; these readers open it read-only (``mode=ro``, a short busy
timeout) and never write, so a reader cannot block the server's commits. A state dir without the
database yet, or a read that meets a commit in progress or a schema not created yet, reads as
empty: the caller polls again.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from server._store import DB_NAME

#: The columns of a client-round record, in the order ``read_client_rounds`` gives them.
CLIENT_ROUND_FIELDS = (
    "round",
    "client",
    "tier",
    "backend",
    "status",
    "bytes",
    "num_examples",
    "metrics",
    "outcome",
    "reason",
)
_BUSY_TIMEOUT_S = 2.0


def _connect(state_dir: Path) -> sqlite3.Connection | None:
    db = Path(state_dir) / DB_NAME
    if not db.is_file():
        return None
    conn = sqlite3.connect(f"file:{db.resolve()}?mode=ro", uri=True, timeout=_BUSY_TIMEOUT_S)
    conn.row_factory = sqlite3.Row
    return conn


def read_client_rounds(state_dir: str | Path) -> list[dict]:
    """Every (round, client) record of the state dir, ordered by round then client: a dict of
    ``CLIENT_ROUND_FIELDS`` (``status`` a ``ClientRoundStatus`` string, ``metrics`` the device's
    reported metrics parsed, ``{}`` when none or unreadable); [] before the server has created them."""
    try:
        conn = _connect(Path(state_dir))
        if conn is None:
            return []
        try:
            rows = conn.execute(
                f"SELECT {', '.join(CLIENT_ROUND_FIELDS)} FROM client_rounds ORDER BY round, client"
            ).fetchall()
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


def count_clients(state_dir: str | Path) -> int:
    """How many devices have registered (said hello) with the server of this state dir; 0 before it has."""
    try:
        conn = _connect(Path(state_dir))
        if conn is None:
            return 0
        try:
            return int(conn.execute("SELECT COUNT(*) FROM clients").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0

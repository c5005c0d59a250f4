"""Reading the JSON-lines files the server appends to (``metrics.jsonl``) while others read them."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["read_jsonl"]


def read_jsonl(path: Path) -> list[dict]:
    """Every complete record of ``path`` ([] when it does not exist yet). A line that does not parse
    is skipped: it is being written right now, or was torn by a crash mid-write (the server's store
    keeps the round's metrics either way)."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out

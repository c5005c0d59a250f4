"""Structured log lines: ``event=<name> key=value ...`` (values JSON-quoted when they need it), so
that ``grep event=round_committed`` and log shippers can parse the server's story without regexes."""

from __future__ import annotations

import json
import logging


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))
    return json.dumps(text) if (not text or any(c in text for c in ' ="\n')) else text


def event(logger: logging.Logger, level: int, name: str, **fields) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, "event=%s %s", name, " ".join(f"{k}={_fmt(v)}" for k, v in fields.items()))

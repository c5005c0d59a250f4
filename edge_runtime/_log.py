"""Structured log: one event per line (JSON, or key=value), to stderr by default; no tty assumed."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import IO


class EventLog:
    """``log("round_done", round=3, loss=0.41)`` -> ``{"ts": ..., "event": "round_done", "client": ..., ...}``."""

    def __init__(self, client: str = "", stream: IO[str] | None = None, fmt: str = "json"):
        if fmt not in ("json", "kv"):
            raise ValueError(f"log format {fmt!r} is unknown: use json or kv")
        self.client, self.stream, self.fmt = client, stream, fmt
        self._lock = threading.Lock()  # paho's thread logs too; keep lines whole

    def __call__(self, event: str, severity: str = "info", **fields) -> None:
        record = {"ts": round(time.time(), 3), "severity": severity, "event": event, "client": self.client}
        record.update({k: v for k, v in fields.items() if v is not None})
        if self.fmt == "json":
            line = json.dumps(record, default=str, separators=(",", ":"))
        else:
            line = " ".join(
                f"{k}={json.dumps(v, default=str) if isinstance(v, str) and ' ' in v else v}" for k, v in record.items()
            )
        stream = self.stream or sys.stderr
        with self._lock:
            try:
                stream.write(line + "\n")
                stream.flush()
            except (OSError, ValueError):  # a closed pipe must not stop training
                pass

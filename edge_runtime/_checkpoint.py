"""The device's local checkpoint in ``--state DIR``: what a restart needs to resume a round.

Layout::

    state.json                 rounds done / in flight, one record per round (JSON)
    task.bin                   the raw Task payload being worked on (persisted before training)
    updates/r<round>.bin       the encoded Update payload, written BEFORE it is published
    outcomes/r<round>.bin      the encoded Outcome payload of a round that produced no update
    trained/r<round>.safetensors  trained tensors of the last round (debugging, resume metrics)
    bundles/<sha256>/          bundle cache, keyed by the bundle digest
    battery.json               the simulated battery's level

Every file is written atomically (temp file in the same folder, fsync, rename, fsync the folder),
so a kill at any instant leaves either the old or the new version, never a torn one. A re-upload
after a restart re-sends the very bytes in ``updates/``, so the server's dedupe on
(client, round, digest) sees the same update, never a second, different one.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

from fedhft.protocol import atomic_write

STATE_VERSION = 1
#: How many finished rounds keep their payload files (a week of hourly rounds needs no more).
KEEP_ROUNDS = 8


class RoundStatus(StrEnum):
    """Where the device is with one round, in order of progress (``state.json`` holds the strings)."""

    TRAINING = "training"  # task accepted, no result yet (a restart retrains: nothing was sent)
    UPLOADING = "uploading"  # update persisted; publish until acknowledged (same bytes every time)
    ACKED = "acked"  # server stored it (or already had it)
    REJECTED = "rejected"  # server refused it; recorded with the reason, never retried
    OUTCOME = "outcome"  # no update (over budget, low battery, deadline, error); outcome persisted


DONE_STATUSES = frozenset({RoundStatus.ACKED, RoundStatus.REJECTED, RoundStatus.OUTCOME})


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Readers (and a restart after a kill) see the old file or the whole new one, never a part:
    temp file in the same folder, fsync, rename, fsync the folder (the protocol's own helper)."""
    return atomic_write(path, data)


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def atomic_write_tensors(path: str | os.PathLike, tensors: dict) -> Path:
    from safetensors.numpy import save

    return atomic_write_bytes(path, save({k: v for k, v in sorted(tensors.items())}))


@dataclass
class RoundRecord:
    round: int
    task_id: str
    status: RoundStatus
    digest: str = ""  # sha256 of the update body (what the server dedupes on)
    reason: str = ""
    kind: str = ""  # the OutcomeKind, when status is OUTCOME
    uploads: int = 0  # how many times the update was published (retries re-send the same bytes)
    metrics: dict = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.status in DONE_STATUSES


class StateStore:
    """Round records and payload files under one state directory."""

    def __init__(self, state_dir: str | os.PathLike, client: str, fleet: str):
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.client, self.fleet = client, fleet
        self.rounds: dict[int, RoundRecord] = {}
        self._load()

    @property
    def path(self) -> Path:
        return self.dir / "state.json"

    def _load(self) -> None:
        if not self.path.is_file():
            return
        try:
            raw = json.loads(self.path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"{self.path} is corrupt ({exc}): it is written atomically, so something else changed it; "
                f"move it away to start this device fresh"
            ) from None
        if raw.get("version") != STATE_VERSION or raw.get("client") != self.client or raw.get("fleet") != self.fleet:
            raise ValueError(
                f"{self.path} belongs to client {raw.get('client')!r} of fleet {raw.get('fleet')!r} "
                f"(version {raw.get('version')}): give each device its own --state directory"
            )
        try:
            self.rounds = {
                int(r["round"]): RoundRecord(**{**r, "status": RoundStatus(r["status"])}) for r in raw.get("rounds", [])
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"{self.path} is corrupt (a round record: {exc!r}): it is written atomically, so "
                "something else changed it; move it away to start this device fresh"
            ) from None

    def save(self) -> None:
        rounds = [asdict(self.rounds[k]) for k in sorted(self.rounds)]
        atomic_write_json(
            self.path, {"version": STATE_VERSION, "client": self.client, "fleet": self.fleet, "rounds": rounds}
        )

    def record(self, rec: RoundRecord) -> None:
        self.rounds[rec.round] = rec
        self.save()
        self._prune()

    def get(self, round_: int) -> RoundRecord | None:
        return self.rounds.get(round_)

    def pending_uploads(self) -> list[RoundRecord]:
        return [r for _, r in sorted(self.rounds.items()) if r.status == RoundStatus.UPLOADING]

    # -- payload files

    def update_path(self, round_: int) -> Path:
        return self.dir / "updates" / f"r{round_}.bin"

    def outcome_path(self, round_: int) -> Path:
        return self.dir / "outcomes" / f"r{round_}.bin"

    @property
    def task_path(self) -> Path:
        return self.dir / "task.bin"

    @property
    def bundles_dir(self) -> Path:
        return self.dir / "bundles"

    def save_task(self, payload: bytes) -> None:
        atomic_write_bytes(self.task_path, payload)

    def load_task(self) -> bytes | None:
        return self.task_path.read_bytes() if self.task_path.is_file() else None

    def clear_task(self) -> None:
        self.task_path.unlink(missing_ok=True)

    def _prune(self) -> None:
        """Keep payloads of the newest KEEP_ROUNDS rounds only (a week-long run must not fill the disk)."""
        done = sorted(r for r, rec in self.rounds.items() if rec.done)
        for old in done[:-KEEP_ROUNDS]:
            self.update_path(old).unlink(missing_ok=True)
            self.outcome_path(old).unlink(missing_ok=True)
            (self.dir / "trained" / f"r{old}.safetensors").unlink(missing_ok=True)
        if len(self.rounds) > 10 * KEEP_ROUNDS:  # the records themselves stay small but must be bounded too
            for old in done[: len(self.rounds) - 10 * KEEP_ROUNDS]:
                self.rounds.pop(old, None)

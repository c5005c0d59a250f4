"""Task ids: unique per server run, stable within one.

A task id is ``r<round>-<client>-<assignment digest[:10]>.<run tag>``, where the run tag is the
first ``RUN_TAG_LEN`` hex digits of the state dir's run id (``Store.run_id``). The run id is made
once per state dir and kept, so a server resumed on the same state dir re-issues the same ids (a
device that trained before the crash can still upload), while a new state dir never repeats an
earlier run's ids: an update queued for (or trained under) another run cannot match a live task.
State dirs written before run ids existed have run id ``""`` and keep the untagged form.
"""

from __future__ import annotations

import secrets

RUN_TAG_LEN = 8


def new_run_id() -> str:
    return secrets.token_hex(16)


def run_tag(run_id: str) -> str:
    return run_id[:RUN_TAG_LEN]


def task_id_for(round_idx: int, client: str, digest: str, run_id: str = "") -> str:
    """Stable for a (run, round, client, assignment). Client ids never contain '.' (see
    ``fedhft.protocol.check_id``), so the tag after the last '.' is unambiguous."""
    base = f"r{round_idx}-{client}-{digest[:10]}"
    return f"{base}.{run_tag(run_id)}" if run_id else base


def task_run_tag(task_id: str) -> str | None:
    """The run tag a task id carries; None for an untagged (pre-run-id, or made-up) id."""
    head, dot, tag = task_id.rpartition(".")
    return tag if dot and head and tag else None


def other_run(task_id: str, run_id: str | None) -> str | None:
    """Why ``task_id`` belongs to another server run than ``run_id``, or None when it does not
    (same run, untagged, or no run id to compare with)."""
    tag = task_run_tag(task_id)
    if not run_id or tag is None or tag == run_tag(run_id):
        return None
    return (
        f"task {task_id!r} was issued by another server run ({tag}; this run is {run_tag(run_id)}): a message "
        "queued for, or trained under, an earlier run; the device gets this run's task instead"
    )


__all__ = ["RUN_TAG_LEN", "new_run_id", "other_run", "run_tag", "task_id_for", "task_run_tag"]

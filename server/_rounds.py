"""Round bookkeeping that needs no broker: client selection, assignment digests, the open round.

Everything here is deterministic given (seed, round, the set of clients), so that a restarted
server rebuilds exactly the assignments it handed out before the crash and can check them
against the digests it stored.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Mapping

import numpy as np

from server._registry import ClientEntry
from server._store import ClientRoundStatus, TaskRecord
from server._task_ids import task_id_for  # noqa: F401  (re-exported: the round planner names tasks with it)
from server._validation import Expected
from server.strategies import Aggregator, ClientAssignment, ClientInfo


def select_clients(eligible: list[ClientEntry], count: int, rng: np.random.Generator) -> list[ClientEntry]:
    """``count`` clients, spread over tiers: tiers take turns (in a seeded order), each tier
    offering its clients in a seeded order, so every tier is represented when count allows."""
    by_tier: dict[str, list[ClientEntry]] = {}
    for c in sorted(eligible, key=lambda c: c.client):
        by_tier.setdefault(c.tier or "", []).append(c)
    queues = {t: [cs[i] for i in rng.permutation(len(cs))] for t, cs in sorted(by_tier.items())}
    order = [t for t in sorted(queues)]
    order = [order[i] for i in rng.permutation(len(order))]
    picked: list[ClientEntry] = []
    while len(picked) < count and any(queues.values()):
        for t in order:
            if queues[t] and len(picked) < count:
                picked.append(queues[t].pop(0))
    return sorted(picked, key=lambda c: c.client)


def assignment_digest(a: ClientAssignment) -> str:
    """sha256 over everything the client is told (plan, mask, start state) and the membership."""
    h = hashlib.sha256(json.dumps(a.plan.to_dict(), sort_keys=True).encode())
    arrays = {
        "__mask__": a.mask,
        **({"__membership__": a.membership} if a.membership is not None else {}),
        **a.start_state,
    }
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


class CloseReason(StrEnum):
    """Why the open round closes now (``closed_by`` in its metrics line)."""

    ALL_ANSWERED = "all_answered"  # no selected client is still tasked
    QUORUM = "quorum"
    DEADLINE = "deadline"


@dataclass
class OpenRound:
    """The round in flight, in memory. The store holds its durable twin."""

    idx: int
    salt: int
    started: float
    deadline: float
    infos: dict[str, ClientInfo]
    assignments: dict[str, ClientAssignment]
    tasks: dict[str, TaskRecord]
    aggregator: Aggregator
    status: dict[str, ClientRoundStatus] = field(default_factory=dict)
    accepting: bool = True
    aggregated: int = 0
    agg_seconds: float = 0.0
    bytes_down: int = 0
    task_sent: dict[str, float] = field(default_factory=dict)  # client -> when its task was last published
    expected_cache: dict[str, Expected] = field(default_factory=dict)

    def expected(self, dims_for) -> Mapping[str, Expected]:
        if not self.expected_cache:
            for cid, a in self.assignments.items():
                t = self.tasks[cid]
                self.expected_cache[cid] = Expected(cid, self.idx, t.task_id, a.plan, dims_for(self.infos[cid]), a.mask)
        return self.expected_cache

    def count(self, *statuses: ClientRoundStatus) -> int:
        return sum(1 for s in self.status.values() if s in statuses)

    def should_close(self, now: float, quorum: float) -> CloseReason | None:
        """Why the round closes now, or None."""
        selected = len(self.status)
        if selected == 0 or self.count(ClientRoundStatus.TASKED) == 0:
            return CloseReason.ALL_ANSWERED
        if self.count(ClientRoundStatus.STORED) >= math.ceil(quorum * selected) and quorum < 1.0:
            return CloseReason.QUORUM
        if now >= self.deadline:
            return CloseReason.DEADLINE
        return None

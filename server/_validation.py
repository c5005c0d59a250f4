"""Check every update BEFORE it is stored or aggregated.

``check_update`` turns one PUBLISH (topic client + payload bytes) into exactly one of:

* ``Accepted``  - store it, ack it, aggregate it;
* ``Duplicate`` - the same (client, round, digest) is already stored: ack again, never aggregate twice;
* ``Rejected``  - a typed ``Rejection`` (a ``Reason`` + detail), recorded and never aggregated.

Nothing here raises for bad input: one hostile or broken device must not stop a round. The checks
run cheapest first (size before parsing, header before tensors).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Mapping

import numpy as np

from devices import AdapterPlan
from fedhft.layout import ModelDims, TensorSpec, masked_update_layout
from fedhft.protocol import ProtocolError, Reason, Rejection, Update, decode, max_update_payload_size, validate_update

from server._task_ids import other_run


@dataclass(frozen=True)
class Expected:
    """What the server expects from one client in the open round."""

    client: str
    round: int
    task_id: str
    plan: AdapterPlan
    dims: ModelDims
    mask: np.ndarray

    @cached_property
    def specs(self) -> list[TensorSpec]:
        # Cached: computing the layout costs more than checking a small update against it.
        return masked_update_layout(self.plan, self.dims, self.mask)

    @cached_property
    def max_payload(self) -> int:
        # The fp32 bound is the largest of all encodings (the task's encoding is checked once decoded).
        return max_update_payload_size(self.specs, "fp32")


@dataclass(frozen=True)
class IntakeContext:
    """The server's view that the checks need, read-only.

    ``round`` is the open round (None between rounds), ``accepting`` False once it has closed.
    ``stored_digest(client)`` gives the digest already stored for this round, ``known_tasks(client)``
    every task id ever issued to the client (task id -> round), ``stored_in_round(round, client)``
    the digest stored for any round (a late QoS 1 copy of a stored update is a duplicate, not a replay).
    ``encoding`` is the update encoding every task of the run asks for (``Hyper.encoding``); None
    accepts any. ``run_id`` is this server run's id (``Store.run_id``): an update whose task id
    carries another run's tag is ``stale_run``; None or "" skips that check.
    """

    fleet: str
    round: int | None
    accepting: bool
    expected: Mapping[str, Expected]
    stored_digest: Callable[[str], str | None]
    known_tasks: Callable[[str], Mapping[str, int]]
    norm_bound: float | None
    max_payload: int
    stored_in_round: Callable[[int, str], str | None] | None = None
    encoding: str | None = None
    run_id: str | None = None


@dataclass(frozen=True)
class Accepted:
    update: Update
    digest: str
    nbytes: int


@dataclass(frozen=True)
class Duplicate:
    update: Update
    digest: str


@dataclass(frozen=True)
class Rejected:
    """A refused update. ``final``: it was the client's own well-formed answer to its task, so the
    round stops waiting for this client (a garbled or replayed packet is not final: the real
    answer may still come)."""

    rejection: Rejection
    client: str
    round: int | None
    task_id: str | None
    digest: str
    nbytes: int
    final: bool = False

    @property
    def reason(self) -> Reason:
        return self.rejection.reason_code


Verdict = Accepted | Duplicate | Rejected
#: The codes a failed ``decode(payload, expect=Update)`` carries; any other code (a decoder that
#: raised an unexpected ProtocolError subclass) is recorded as MALFORMED.
_DECODE_REASONS = frozenset(
    {
        Reason.SCHEMA_VERSION,
        Reason.OVERSIZE,
        Reason.DIGEST_MISMATCH,
        Reason.WRONG_TYPE,
        Reason.TRUNCATED,
        Reason.BAD_DTYPE,
        Reason.MALFORMED,
    }
)


def _decode_error_reason(exc: ProtocolError) -> Reason:
    """The error's own code (never its text): the decoders set it where they raise."""
    return exc.code if exc.code in _DECODE_REASONS else Reason.MALFORMED


def check_update(topic_client: str, payload: bytes, ctx: IntakeContext) -> Verdict:
    """The verdict on one update PUBLISH (see the module docstring)."""
    digest_raw = hashlib.sha256(payload).hexdigest()
    exp = ctx.expected.get(topic_client)

    def reject(code: Reason, detail: str, msg: Update | None = None, final: bool = False) -> Rejected:
        return Rejected(
            Rejection(code, detail),
            topic_client,
            msg.round if msg else ctx.round,
            msg.task_id if msg else (exp.task_id if exp else None),
            msg.digest if msg else digest_raw,
            len(payload),
            final,
        )

    limit = min(ctx.max_payload, exp.max_payload) if exp is not None else ctx.max_payload
    if len(payload) > limit:
        return reject(
            Reason.OVERSIZE,
            f"update is {len(payload)} bytes, over the {limit}-byte bound for this client's "
            "plan: send only the masked rows, in the task's encoding",
        )
    try:
        msg = decode(payload, expect=Update, max_size=ctx.max_payload)
    except ProtocolError as exc:
        return reject(_decode_error_reason(exc), str(exc)[:500])
    assert isinstance(msg, Update)
    return _check_header(msg, topic_client, ctx, reject)


def _check_header(msg: Update, topic_client: str, ctx: IntakeContext, reject) -> Verdict:
    if msg.fleet != ctx.fleet:
        return reject(Reason.WRONG_FLEET, f"update is for fleet {msg.fleet!r}, this server runs {ctx.fleet!r}", msg)
    if msg.client != topic_client:
        return reject(
            Reason.CLIENT_MISMATCH, f"update says client {msg.client!r} but arrived on {topic_client!r}'s topic", msg
        )
    stale = other_run(msg.task_id, ctx.run_id)
    if stale is not None:  # before the round checks: its round number is another run's
        return reject(Reason.STALE_RUN, stale, msg)
    if (
        (ctx.round is None or msg.round != ctx.round)
        and ctx.stored_in_round is not None
        and ctx.stored_in_round(msg.round, topic_client) == msg.digest
    ):
        return Duplicate(msg, msg.digest)  # a redelivered copy that arrives after its round closed
    if ctx.round is None or msg.round < ctx.round:
        return reject(Reason.REPLAY, f"update for round {msg.round}, which is not open (open: {ctx.round})", msg)
    if msg.round > ctx.round:
        return reject(Reason.FUTURE_ROUND, f"update for round {msg.round}, but round {ctx.round} is the open one", msg)
    exp = ctx.expected.get(topic_client)
    if exp is None:
        return reject(Reason.NOT_TASKED, f"{topic_client!r} has no task in round {ctx.round}", msg)
    if msg.task_id != exp.task_id:
        if msg.task_id in ctx.known_tasks(topic_client):
            return reject(
                Reason.REPLAY, f"task {msg.task_id!r} is an old task; the current one is {exp.task_id!r}", msg
            )
        return reject(Reason.UNKNOWN_TASK, f"task {msg.task_id!r} was never given to {topic_client!r}", msg)
    stored = ctx.stored_digest(topic_client)
    if stored == msg.digest:
        return Duplicate(msg, msg.digest)
    if stored is not None:
        return reject(Reason.CONFLICT, f"another update ({stored[:12]}...) is already stored for this task", msg)
    if not ctx.accepting:
        return reject(Reason.ROUND_CLOSED, f"round {ctx.round} closed before this update arrived", msg)
    if ctx.encoding is not None and msg.encoding != ctx.encoding:
        # The task asked for it (fp16/int8 to save bandwidth and storage): storing another one
        # would quietly undo that choice.
        return reject(
            Reason.WRONG_ENCODING,
            f"update is encoded {msg.encoding} but its task asked for {ctx.encoding} "
            "(task.hyper.encoding): encode the update in the task's encoding",
            msg,
            final=True,
        )
    problems = validate_update(msg.tensors, exp.specs, ctx.norm_bound)
    if problems:
        detail = "; ".join(p.detail for p in problems[:4])
        return reject(problems[0].reason_code, detail, msg, final=True)
    return Accepted(msg, msg.digest, len(msg.encoded))

"""The typed codes both sides speak: why something was refused, how a task ended, what an ack or a chunk did.

Each is a ``StrEnum``: a member IS its wire string (``Reason.OVERSIZE == "oversize"``), so
messages, the server's state files and the device's checkpoint keep the exact bytes they had
when these were plain strings, while code compares and branches on members, never on text.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a payload or an update was refused: ``ProtocolError.code``, ``Rejection.reason_code``
    and the reason the server records and sends back in ``Ack.reason``. One list for all three."""

    # The decoders' verdict on the bytes (ProtocolError.code).
    PROTOCOL_ERROR = "protocol_error"
    OVERSIZE = "oversize"
    SCHEMA_VERSION = "schema_version"
    DIGEST_MISMATCH = "digest_mismatch"
    TRUNCATED = "truncated"
    WRONG_TYPE = "wrong_type"
    BAD_DTYPE = "bad_dtype"  # also a tensor check: a dtype the plan does not use
    MALFORMED = "malformed"
    BAD_TOPIC = "bad_topic"
    CHUNK_MISMATCH = "chunk_mismatch"
    # The server's intake checks on a decoded update, in check order.
    WRONG_FLEET = "wrong_fleet"
    CLIENT_MISMATCH = "client_mismatch"
    STALE_RUN = "stale_run"
    REPLAY = "replay"
    FUTURE_ROUND = "future_round"
    ROUND_CLOSED = "round_closed"
    NOT_TASKED = "not_tasked"
    UNKNOWN_TASK = "unknown_task"
    CONFLICT = "conflict"
    WRONG_ENCODING = "wrong_encoding"
    # The tensor checks (validate_update).
    MISSING_TENSOR = "missing_tensor"
    UNEXPECTED_TENSOR = "unexpected_tensor"
    BAD_SHAPE = "bad_shape"
    NON_FINITE = "non_finite"
    NORM_EXCEEDED = "norm_exceeded"
    # Recorded by the coordinator when a strategy refuses a stored update.
    AGGREGATION_ERROR = "aggregation_error"


class OutcomeKind(StrEnum):
    """Why a task produced no update (``Outcome.kind``)."""

    OVER_BUDGET = "over_budget"
    LOW_BATTERY = "low_battery"
    DEADLINE = "deadline"
    ERROR = "error"
    SKIPPED = "skipped"


class AckStatus(StrEnum):
    """The server's answer to an update (``Ack.status``)."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


class ClientState(StrEnum):
    """What a device reports doing (``ClientStatus.state``, retained; ``offline`` is its Last Will)."""

    ONLINE = "online"  # connected, nothing else to report yet
    OFFLINE = "offline"
    IDLE = "idle"
    FETCHING = "fetching"  # downloading a bundle
    TRAINING = "training"
    UPLOADING = "uploading"  # an update sent, its ack awaited
    LOW_BATTERY = "low_battery"
    ERROR = "error"


class ServerState(StrEnum):
    """What the server reports (``ServerStatus.state``, retained): the only states it publishes."""

    RUNNING = "running"  # serving rounds: at start, at each round
    FINISHED = "finished"  # the run is over
    OFFLINE = "offline"  # stopped before its last round (it can resume), or gone: its Last Will


class ChunkResult(StrEnum):
    """What ``ChunkAssembler.add`` did with one bundle chunk."""

    ADDED = "added"
    DUPLICATE = "duplicate"  # already held, or its file is already written
    COMPLETE = "complete"  # this chunk finished its file


__all__ = ["AckStatus", "ChunkResult", "ClientState", "OutcomeKind", "Reason", "ServerState"]

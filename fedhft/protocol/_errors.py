"""Typed protocol failures.

Every decoder in this package raises only these (never a bare KeyError, TypeError, ...), so a
receiver can catch ``ProtocolError`` once, record the reason and move on: one bad packet from one
device must never take down the server's intake loop or the edge's task loop.
They subclass ``ValueError`` because each one means "this value is not acceptable".
"""
from __future__ import annotations


class ProtocolError(ValueError):
    """Base of every wire-protocol failure.

    ``code`` is a stable, machine-readable reason (``"malformed"``, ``"truncated"``,
    ``"bad_dtype"``, ...; see ``ERROR_CODES``) so that receivers record WHY without parsing the
    human message, which may change.
    """

    code = "protocol_error"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class MalformedMessage(ProtocolError):
    """The bytes are not a well-formed message of this protocol (bad framing, JSON, field or body).

    ``code`` refines it: ``"truncated"`` (payload shorter than it declares), ``"bad_dtype"`` (a
    tensor dtype outside the whitelist or not matching the encoding), else ``"malformed"``.
    """

    code = "malformed"


class UnsupportedVersion(ProtocolError):
    """The payload was written with a protocol schema this build does not speak."""

    code = "schema_version"


class DigestMismatch(ProtocolError):
    """A sha256 carried in the message does not match the bytes it covers (corruption or tampering)."""

    code = "digest_mismatch"


class PayloadTooLarge(ProtocolError):
    """A payload, header or chunk exceeds its size bound."""

    code = "oversize"


class WrongType(ProtocolError):
    """A well-formed message of another type than the one expected on this topic."""

    code = "wrong_type"


class TopicError(ProtocolError):
    """A topic outside this fleet's tree, or an invalid fleet/client id."""

    code = "bad_topic"


class ChunkMismatch(ProtocolError):
    """A bundle chunk disagrees with earlier chunks of the same file (count, size or file digest)."""

    code = "chunk_mismatch"


#: Every ``ProtocolError.code`` this package raises.
ERROR_CODES = (
    "protocol_error", "malformed", "truncated", "bad_dtype", "schema_version", "digest_mismatch", "oversize",
    "wrong_type", "bad_topic", "chunk_mismatch",
)


__all__ = [
    "ERROR_CODES",
    "ChunkMismatch",
    "DigestMismatch",
    "MalformedMessage",
    "PayloadTooLarge",
    "ProtocolError",
    "TopicError",
    "UnsupportedVersion",
    "WrongType",
]

"""Typed protocol failures.

Every decoder in this package raises only these (never a bare KeyError, TypeError, ...), so a
receiver can catch ``ProtocolError`` once, record the reason and move on: one bad packet from one
device must never take down the server's intake loop or the edge's task loop.
They subclass ``ValueError`` because each one means "this value is not acceptable".
"""

from __future__ import annotations

from fedhft.protocol._codes import Reason


class ProtocolError(ValueError):
    """Base of every wire-protocol failure.

    ``code`` is a stable, machine-readable ``Reason`` (``MALFORMED``, ``TRUNCATED``,
    ``BAD_DTYPE``, ...) so that receivers record WHY without parsing the human message, which
    may change.
    """

    code: Reason = Reason.PROTOCOL_ERROR

    def __init__(self, message: str = "", *, code: Reason | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = Reason(code)


class MalformedMessage(ProtocolError):
    """The bytes are not a well-formed message of this protocol (bad framing, JSON, field or body).

    ``code`` refines it: ``TRUNCATED`` (payload shorter than it declares), ``BAD_DTYPE`` (a
    tensor dtype outside the whitelist or not matching the encoding), else ``MALFORMED``.
    """

    code = Reason.MALFORMED


class UnsupportedVersion(ProtocolError):
    """The payload was written with a protocol schema this build does not speak."""

    code = Reason.SCHEMA_VERSION


class DigestMismatch(ProtocolError):
    """A sha256 carried in the message does not match the bytes it covers (corruption or tampering)."""

    code = Reason.DIGEST_MISMATCH


class PayloadTooLarge(ProtocolError):
    """A payload, header or chunk exceeds its size bound."""

    code = Reason.OVERSIZE


class WrongType(ProtocolError):
    """A well-formed message of another type than the one expected on this topic."""

    code = Reason.WRONG_TYPE


class TopicError(ProtocolError):
    """A topic outside this fleet's tree, or an invalid fleet/client id."""

    code = Reason.BAD_TOPIC


class ChunkMismatch(ProtocolError):
    """A bundle chunk disagrees with earlier chunks of the same file (count, size or file digest)."""

    code = Reason.CHUNK_MISMATCH


__all__ = [
    "ChunkMismatch",
    "DigestMismatch",
    "MalformedMessage",
    "PayloadTooLarge",
    "ProtocolError",
    "TopicError",
    "UnsupportedVersion",
    "WrongType",
]

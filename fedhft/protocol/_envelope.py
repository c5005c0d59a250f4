"""The envelope every fedhft payload travels in.

Layout (all multi-byte integers big-endian)::

    b"FHFT" | version: u8 (= PROTOCOL_VERSION) | header_len: u32 | header: UTF-8 JSON | body

The JSON header always carries ``type``, ``schema``, ``fleet``, ``body_sha256`` and ``body_len``;
the body is opaque bytes here (safetensors for tensors, raw bytes for bundle chunks). The header
is written canonically (sorted keys, no spaces) so that equal messages give equal bytes: the
edge's retry of an update re-sends the very same payload, and golden tests can pin the format.
A payload of another major version is refused (``UnsupportedVersion``); within a major, revisions
only add optional fields (the rules: docs/CONTRACTS.md, "Protocol"). Sizes are bounded BEFORE
anything is parsed, so a hostile or corrupted packet can cost at most ``max_size`` bytes of memory
and one bounded JSON parse.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedhft.protocol._codes import Reason
from fedhft.protocol._errors import DigestMismatch, MalformedMessage, PayloadTooLarge, UnsupportedVersion

MAGIC = b"FHFT"
#: The major version: the envelope's version byte and the header's ``schema``.
PROTOCOL_VERSION = 1
#: The revision within the major this build writes and reads (1.1: unknown header keys are
#: ignored; ClientStatus.battery_percent, 0-100, replaced the 0-1 ``battery``).
PROTOCOL_MINOR = 1
#: magic + version byte + header length
PREFIX_LEN = len(MAGIC) + 1 + 4
MAX_HEADER_BYTES = 64 * 1024
#: Default bound on a whole payload. Receivers that know their broker's ``max_packet_size`` should
#: pass that instead (``decode(..., max_size=...)``).
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024
ENVELOPE_KEYS = ("type", "schema", "fleet", "body_sha256", "body_len")

_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Envelope:
    """A parsed envelope: the header dict (not yet validated per message type) and the verified body."""

    header: dict[str, Any]
    body: bytes


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json_default(value: Any) -> Any:
    # Device profiles and plans are often built from numpy scalars; write them as plain JSON numbers.
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable: convert it to int/float/str/list/dict")


def dump_header(header: dict[str, Any]) -> bytes:
    """Canonical JSON bytes of a header (sorted keys, compact, UTF-8, finite numbers only)."""
    try:
        text = json.dumps(
            header, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_default
        )
    except (TypeError, ValueError) as e:
        raise MalformedMessage(
            f"header of a {header.get('type')!r} message is not plain finite JSON ({e}): fix the field values"
        ) from e
    return text.encode("utf-8")


def pack(header: dict[str, Any], body: bytes = b"", max_size: int | None = MAX_PAYLOAD_BYTES) -> bytes:
    """Frame ``header`` (must hold ``type`` and ``fleet``) and ``body`` into one payload."""
    full = {**header, "schema": PROTOCOL_VERSION, "body_sha256": sha256_hex(body), "body_len": len(body)}
    raw = dump_header(full)
    if len(raw) > MAX_HEADER_BYTES:
        raise PayloadTooLarge(
            f"{full.get('type')} header is {len(raw)} bytes, over the {MAX_HEADER_BYTES}-byte bound: "
            "shrink free-form fields (profile, plan, metrics, detail)"
        )
    payload = MAGIC + bytes([PROTOCOL_VERSION]) + struct.pack(">I", len(raw)) + raw + body
    if max_size is not None and len(payload) > max_size:
        raise PayloadTooLarge(
            f"{full.get('type')} payload is {len(payload)} bytes, over the limit of {max_size}: "
            "use a smaller update encoding (fp16/int8), a smaller chunk size, or raise the broker's max_packet_size"
        )
    return payload


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise MalformedMessage(f"header repeats the key {key!r}: a sender must write each key once")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise MalformedMessage(f"header contains {name}: only finite numbers are allowed")


def parse_header(raw: bytes) -> dict[str, Any]:
    """Strict JSON parse: UTF-8, an object at top level, no duplicate keys, no NaN/Infinity."""
    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except MalformedMessage:
        raise
    except (ValueError, RecursionError, OverflowError) as e:
        # ValueError covers bad UTF-8, bad JSON and over-long integer literals; RecursionError deep nesting.
        raise MalformedMessage(f"header is not valid UTF-8 JSON: {type(e).__name__}: {str(e)[:200]}") from None
    if not isinstance(value, dict):
        raise MalformedMessage(f"header must be a JSON object, got {type(value).__name__}")
    return value


def _check_version(version: int) -> None:
    if version == PROTOCOL_VERSION:
        return
    # A major version is a breaking change: never guess at a message of another one.
    if version > PROTOCOL_VERSION:
        raise UnsupportedVersion(
            f"payload uses protocol schema {version} (a major version: breaking changes) but this fedhft speaks "
            f"schema {PROTOCOL_VERSION}.x only: upgrade fedhft on this machine (pip install -U fedhft)"
        )
    raise UnsupportedVersion(
        f"payload uses protocol schema {version}, older than this fedhft's schema {PROTOCOL_VERSION}.x (a major "
        "version: breaking changes): upgrade fedhft on the sender"
    )


def _check_envelope_keys(header: dict[str, Any], body_len: int) -> None:
    missing = [k for k in ENVELOPE_KEYS if k not in header]
    if missing:
        raise MalformedMessage(
            f"header lacks required key(s) {missing}: every header carries the envelope keys "
            f"{', '.join(ENVELOPE_KEYS)} (docs/PROTOCOL.md, section 6)"
        )
    schema = header["schema"]
    if type(schema) is not int:
        raise MalformedMessage(f"header 'schema' must be an integer, got {type(schema).__name__}")
    _check_version(schema)
    if type(header["type"]) is not str:
        raise MalformedMessage("header 'type' must be a string")
    if type(header["body_sha256"]) is not str or not _HEX64.fullmatch(header["body_sha256"]):
        raise MalformedMessage("header 'body_sha256' must be 64 lowercase hex digits")
    declared = header["body_len"]
    if type(declared) is not int or declared != body_len:
        raise MalformedMessage(
            f"header declares body_len={declared!r} but {body_len} body bytes arrived (truncated or padded payload)",
            code=Reason.TRUNCATED,
        )


def unpack(payload: bytes, max_size: int | None = MAX_PAYLOAD_BYTES) -> Envelope:
    """Verify framing, version, sizes and body digest; return header + body. Raises ProtocolError only."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise MalformedMessage(f"payload must be bytes, got {type(payload).__name__}")
    payload = bytes(payload)
    if max_size is not None and len(payload) > max_size:
        raise PayloadTooLarge(f"payload is {len(payload)} bytes, over the receiver's limit of {max_size}")
    if len(payload) < PREFIX_LEN:
        raise MalformedMessage(
            f"payload is {len(payload)} bytes, shorter than the {PREFIX_LEN}-byte envelope prefix",
            code=Reason.TRUNCATED,
        )
    if payload[:4] != MAGIC:
        raise MalformedMessage(f"payload does not start with {MAGIC!r} (got {payload[:4]!r}): not a fedhft message")
    _check_version(payload[4])
    (header_len,) = struct.unpack(">I", payload[5:9])
    if header_len > MAX_HEADER_BYTES:
        raise PayloadTooLarge(f"header length {header_len} exceeds the {MAX_HEADER_BYTES}-byte bound")
    if PREFIX_LEN + header_len > len(payload):
        raise MalformedMessage(
            f"header length {header_len} runs past the end of a {len(payload)}-byte payload (truncated)",
            code=Reason.TRUNCATED,
        )
    header = parse_header(payload[PREFIX_LEN : PREFIX_LEN + header_len])
    body = payload[PREFIX_LEN + header_len :]
    _check_envelope_keys(header, len(body))
    digest = sha256_hex(body)
    if digest != header["body_sha256"]:
        raise DigestMismatch(
            f"body sha256 is {digest} but the header says {header['body_sha256']}: the payload was corrupted "
            "in transit; ask the sender to re-send"
        )
    return Envelope(header, body)


__all__ = [
    "ENVELOPE_KEYS",
    "Envelope",
    "MAGIC",
    "MAX_HEADER_BYTES",
    "MAX_PAYLOAD_BYTES",
    "PREFIX_LEN",
    "PROTOCOL_MINOR",
    "PROTOCOL_VERSION",
    "dump_header",
    "pack",
    "parse_header",
    "sha256_hex",
    "unpack",
]

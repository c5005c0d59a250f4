"""One frozen dataclass per message type, one encoder and one decoder for all of them.

Each message class declares ``TYPE`` (the header's ``type``) and ``FIELDS`` (header field ->
validator); the same validators run when encoding (so a bad message is refused before it is
sent) and when decoding (so nothing unchecked leaves ``decode``). Tensors travel in the
safetensors body, bundle chunk data as the raw body.

``decode`` turns ANY byte string into either a valid message or a ``ProtocolError`` subclass.

Compatibility within a major version (see ``_envelope``): ``decode`` drops header keys it does not
know (a newer 1.x sender's optional fields), and accepts the absence of a field listed in the
class's ``SINCE`` (added in a later 1.x revision than the sender's). ``encode`` always writes every
field, so what this build sends is canonical.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any, ClassVar, Mapping

import numpy as np
from safetensors.numpy import save as _st_save

from fedhft.protocol import _fields as F
from fedhft.protocol._envelope import MAX_PAYLOAD_BYTES, PREFIX_LEN, pack, sha256_hex, unpack
from fedhft.protocol._codes import AckStatus, ClientState, OutcomeKind, ServerState
from fedhft.protocol._errors import DigestMismatch, MalformedMessage, PayloadTooLarge, ProtocolError, WrongType
from fedhft.protocol._update_codec import (
    ENCODINGS,
    _contiguous,
    check_tensor_name,
    decode_update,
    encode_update,
    is_tensor_name,
    load_tensors,
    max_encoded_size,
)

#: The state strings, from the enums (one list each).
CLIENT_STATES = tuple(s.value for s in ClientState)
SERVER_STATES = tuple(s.value for s in ServerState)
#: Name of the flat mask vector inside a Task body (tensor names never start with "__").
MASK_TENSOR = "__mask__"
#: Bound on an Update's JSON header, enforced by ``encode``: with ``max_encoded_size`` it bounds
#: the whole payload (``max_update_payload_size``).
UPDATE_HEADER_MAX = 8192

_METRICS = F.float_dict(64)
_OPT_ID = F.optional(F.IDENT)


class Message:
    """Base of all messages. Subclasses are frozen dataclasses."""

    TYPE: ClassVar[str]
    FIELDS: ClassVar[dict[str, F.Validator]]
    #: Fields added after revision 1.0 -> the revision that added them. A message from an older
    #: 1.x sender lacks them; the dataclass default stands in. Every other field is required.
    SINCE: ClassVar[dict[str, int]] = {}

    def _header(self) -> dict[str, Any]:
        return {name: _plain(getattr(self, name)) for name in self.FIELDS}

    def _body(self) -> bytes:
        return b""

    def _check(self) -> None:
        """Cross-field rules (override); raise MalformedMessage."""

    @classmethod
    def _from_body(cls, fields: dict[str, Any], body: bytes) -> "Message":
        if body:
            raise MalformedMessage(f"{cls.TYPE} carries no body but {len(body)} body bytes arrived")
        return cls(**fields)


def _plain(value: Any) -> Any:
    """Python/numpy values -> the JSON-shaped values the validators expect (numpy scalars are common)."""
    if isinstance(value, Hyper):
        return value.to_dict()
    if isinstance(value, StrEnum):  # the validators take plain JSON values: a member is its string
        return value.value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _read_fields(cls: type[Message], header: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the per-type header fields. Keys this revision does not know are dropped (a newer
    1.x sender's optional fields); a missing key is an error unless the field is in ``SINCE``."""
    missing = [k for k in cls.FIELDS if k not in header and k not in cls.SINCE]
    if missing:
        raise MalformedMessage(f"{cls.TYPE} header lacks required key(s) {missing}")
    return {name: check(header[name], f"{cls.TYPE}.{name}") for name, check in cls.FIELDS.items() if name in header}


# ----------------------------------------------------------------------------- nested values


@dataclass(frozen=True)
class Hyper:
    """Local training hyper-parameters of one task."""

    lr: float
    local_steps: int
    epochs: int
    batch_size: int
    seq_len: int
    encoding: str = "fp32"

    FIELDS: ClassVar[dict[str, F.Validator]] = {
        "lr": F.float_(0.0, 10.0),
        "local_steps": F.int_(0, 10**7),
        "epochs": F.int_(0, 10**4),
        "batch_size": F.int_(1, 2**16),
        "seq_len": F.int_(1, 2**16),
        "encoding": F.enum(ENCODINGS),
    }

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.FIELDS}

    @classmethod
    def check(cls, value: Any, where: str) -> "Hyper":
        if isinstance(value, Hyper):
            value = value.to_dict()
        # The header rule holds inside it too: unknown keys (a newer 1.x sender's) are dropped.
        if not isinstance(value, dict) or not set(cls.FIELDS) <= set(value):
            raise MalformedMessage(f"{where} must be an object with (at least) the keys {sorted(cls.FIELDS)}")
        hyper = cls(**{k: check(value[k], f"{where}.{k}") for k, check in cls.FIELDS.items()})
        if hyper.lr <= 0.0:
            raise MalformedMessage(f"{where}.lr must be > 0, got {hyper.lr}")
        return hyper


# ----------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class Hello(Message):
    """Device -> server on join: its measured profile and the backends it can run."""

    fleet: str
    client: str
    profile: dict
    backends: list[str]
    tier_hint: str | None
    runtime_version: str

    TYPE: ClassVar[str] = "hello"
    FIELDS: ClassVar[dict[str, F.Validator]] = {
        "fleet": F.IDENT,
        "client": F.IDENT,
        "profile": F.json_object,
        "backends": F.list_(F.TOKEN, 16),
        "tier_hint": F.optional(F.TOKEN),
        "runtime_version": F.str_(64),
    }


@dataclass(frozen=True)
class ClientStatus(Message):
    """Device status/telemetry (retained; its Last Will says ``offline``).

    ``battery_percent`` is 0-100, the unit of the Hello profile and the catalog's thresholds
    (revision 1.0 sent a 0-1 ``battery`` instead: a 1.0 status decodes with battery unknown).
    """

    fleet: str
    client: str
    state: str
    round: int | None = None
    detail: str = ""
    battery_percent: float | None = None
    rss_mb: float | None = None
    ts: float = 0.0

    TYPE: ClassVar[str] = "client_status"
    FIELDS: ClassVar[dict[str, F.Validator]] = {
        "fleet": F.IDENT,
        "client": F.IDENT,
        "state": F.enum(ClientState),
        "round": F.optional(F.ROUND),
        "detail": F.str_(1024),
        "battery_percent": F.optional(F.float_(0.0, 100.0)),
        "rss_mb": F.optional(F.float_(0.0)),
        "ts": F.TS,
    }
    SINCE: ClassVar[dict[str, int]] = {"battery_percent": 1}


@dataclass(frozen=True)
class ServerStatus(Message):
    """Server status (retained; its Last Will says ``offline``)."""

    fleet: str
    state: str
    round: int | None = None
    ts: float = 0.0

    TYPE: ClassVar[str] = "server_status"
    FIELDS: ClassVar[dict[str, F.Validator]] = {
        "fleet": F.IDENT,
        "state": F.enum(ServerState),
        "round": F.optional(F.ROUND),
        "ts": F.TS,
    }


@dataclass(frozen=True, eq=False)
class Task(Message):
    """Server -> device: train this round on this bundle from this start state under this mask."""

    fleet: str
    client: str
    round: int
    task_id: str
    tier: str
    backend: str
    bundle_id: str
    bundle_sha256: str
    plan: dict
    hyper: Hyper
    deadline_ts: float
    start_state: dict[str, np.ndarray]
    mask: np.ndarray

    TYPE: ClassVar[str] = "task"
    FIELDS: ClassVar[dict[str, F.Validator]] = {
        "fleet": F.IDENT,
        "client": F.IDENT,
        "round": F.ROUND,
        "task_id": F.TOKEN,
        "tier": F.TOKEN,
        "backend": F.TOKEN,
        "bundle_id": F.TOKEN,
        "bundle_sha256": F.DIGEST,
        "plan": F.json_object,
        "hyper": Hyper.check,
        "deadline_ts": F.TS,
    }

    def _body(self) -> bytes:
        try:
            tensors = {check_tensor_name(k): _contiguous(v) for k, v in self.start_state.items()}
        except ValueError as e:
            raise MalformedMessage(f"cannot encode task: {e}") from e
        mask = np.asarray(self.mask)
        if mask.dtype != np.float32 or mask.ndim != 1:
            raise MalformedMessage(f"task mask must be a 1-D float32 vector, got {mask.dtype} {list(mask.shape)}")
        tensors[MASK_TENSOR] = _contiguous(mask)
        for name, arr in tensors.items():
            if arr.dtype not in (np.float32, np.float16, np.int8, np.int64):
                raise MalformedMessage(
                    f"task tensor {name!r} has dtype {arr.dtype}: send float32 (or float16/int8/int64)"
                )
        return _st_save(tensors)

    @classmethod
    def _from_body(cls, fields: dict[str, Any], body: bytes) -> "Task":
        tensors = load_tensors(body, "task")
        mask = tensors.pop(MASK_TENSOR, None)
        if mask is None or mask.dtype != np.float32 or mask.ndim != 1:
            raise MalformedMessage(f"task body needs a 1-D float32 tensor {MASK_TENSOR!r} (the flat row mask)")
        bad = [n for n in tensors if not is_tensor_name(n)]
        if bad:
            raise MalformedMessage(f"task body has invalid tensor name(s) {bad[:4]}")
        return cls(**fields, start_state=tensors, mask=mask)


@dataclass(frozen=True, eq=False)
class Update(Message):
    """Device -> server: the encoded update (trained - start, masked B rows only) of one task.

    ``tensors`` are float32 (dequantized when decoded). ``encoded`` is the body: for a decoded
    update the very bytes that arrived, for a new one ``encode_update(tensors, encoding)``
    computed once (do not mutate ``tensors`` after that). ``digest`` = sha256 of ``encoded``.
    """

    fleet: str
    client: str
    round: int
    task_id: str
    num_examples: int
    metrics: dict[str, float]
    encoding: str
    tensors: dict[str, np.ndarray]

    TYPE: ClassVar[str] = "update"
    FIELDS: ClassVar[dict[str, F.Validator]] = {
        "fleet": F.IDENT,
        "client": F.IDENT,
        "round": F.ROUND,
        "task_id": F.TOKEN,
        "num_examples": F.int_(0),
        "metrics": _METRICS,
        "encoding": F.enum(ENCODINGS),
    }

    @cached_property
    def encoded(self) -> bytes:
        """The update body (``encode_update`` of ``tensors``), computed once."""
        return encode_update(self.tensors, self.encoding)

    @property
    def digest(self) -> str:
        return sha256_hex(self.encoded)

    def _body(self) -> bytes:
        try:
            return self.encoded
        except ValueError as e:
            raise MalformedMessage(f"cannot encode update: {e}") from e

    @classmethod
    def _from_body(cls, fields: dict[str, Any], body: bytes) -> "Update":
        update = cls(**fields, tensors=decode_update(body, fields["encoding"]))
        # Keep the received bytes as the body: re-encoding dequantized int8 need not give them back.
        update.__dict__["encoded"] = bytes(body)
        return update


@dataclass(frozen=True)
class Outcome(Message):
    """Device -> server: a task that produced no update, and why (a typed failure, not an exception)."""

    fleet: str
    client: str
    round: int
    task_id: str
    kind: OutcomeKind
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)

    TYPE: ClassVar[str] = "outcome"
    FIELDS: ClassVar[dict[str, F.Validator]] = {
        "fleet": F.IDENT,
        "client": F.IDENT,
        "round": F.ROUND,
        "task_id": F.TOKEN,
        "kind": F.enum(OutcomeKind),
        "reason": F.str_(1024),
        "metrics": _METRICS,
    }


@dataclass(frozen=True)
class Ack(Message):
    """Server -> device: the update with this digest was stored (durably), was a duplicate, or rejected."""

    fleet: str
    client: str
    round: int
    task_id: str
    update_digest: str
    status: AckStatus
    reason: str = ""

    TYPE: ClassVar[str] = "ack"
    FIELDS: ClassVar[dict[str, F.Validator]] = {
        "fleet": F.IDENT,
        "client": F.IDENT,
        "round": F.ROUND,
        "task_id": F.TOKEN,
        "update_digest": F.DIGEST,
        "status": F.enum(AckStatus),
        "reason": F.str_(1024),
    }


@dataclass(frozen=True)
class BundleRequest(Message):
    """Device -> server: send (some chunks of) these files of a bundle; ``None`` = all."""

    fleet: str
    client: str
    bundle_id: str
    files: list[str] | None = None
    chunks: list[int] | None = None

    TYPE: ClassVar[str] = "bundle_request"
    FIELDS: ClassVar[dict[str, F.Validator]] = {
        "fleet": F.IDENT,
        "client": F.IDENT,
        "bundle_id": F.TOKEN,
        "files": F.optional(F.list_(F.file_path, 1024)),
        "chunks": F.optional(F.list_(F.int_(0, 2**31), 65536)),
    }

    def _check(self) -> None:
        if self.chunks is not None and (self.files is None or len(self.files) != 1):
            raise MalformedMessage(
                "bundle_request.chunks names chunk indices of ONE file: give exactly one entry in files"
            )


@dataclass(frozen=True)
class BundleChunk(Message):
    """Server -> device: chunk ``index`` of ``count`` of one bundle file (data is the raw body)."""

    fleet: str
    bundle_id: str
    file: str
    index: int
    count: int
    chunk_sha256: str
    file_sha256: str
    file_size: int
    data: bytes

    TYPE: ClassVar[str] = "bundle_chunk"
    FIELDS: ClassVar[dict[str, F.Validator]] = {
        "fleet": F.IDENT,
        "bundle_id": F.TOKEN,
        "file": F.file_path,
        "index": F.int_(0, 2**31),
        "count": F.int_(1, 2**31),
        "chunk_sha256": F.DIGEST,
        "file_sha256": F.DIGEST,
        "file_size": F.int_(0, 2**40),
    }

    def _check(self) -> None:
        if self.index >= self.count:
            raise MalformedMessage(f"bundle_chunk.index {self.index} must be < count {self.count}")
        if len(self.data) > self.file_size:
            raise MalformedMessage(
                f"bundle_chunk carries {len(self.data)} bytes, more than the file's {self.file_size}"
            )

    def _body(self) -> bytes:
        if not isinstance(self.data, (bytes, bytearray)):
            raise MalformedMessage(f"bundle_chunk.data must be bytes, got {type(self.data).__name__}")
        if sha256_hex(self.data) != self.chunk_sha256:
            raise DigestMismatch(f"bundle_chunk {self.file}#{self.index}: chunk_sha256 does not match data")
        return bytes(self.data)

    @classmethod
    def _from_body(cls, fields: dict[str, Any], body: bytes) -> "BundleChunk":
        if sha256_hex(body) != fields["chunk_sha256"]:
            raise DigestMismatch(
                f"bundle chunk {fields['file']}#{fields['index']} data does not match its chunk_sha256: re-request it"
            )
        return cls(**fields, data=body)


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls for cls in (Hello, ClientStatus, ServerStatus, Task, Update, Outcome, Ack, BundleRequest, BundleChunk)
}


# ----------------------------------------------------------------------------- encode / decode


def encode(msg: Message, max_size: int | None = MAX_PAYLOAD_BYTES) -> bytes:
    """Validate ``msg`` and frame it. Raises ProtocolError (MalformedMessage, PayloadTooLarge, ...)
    naming the bad field; pass the broker's ``max_packet_size`` minus ``publish_overhead`` as
    ``max_size`` to refuse, before publishing, a message the broker would drop."""
    if type(msg) not in MESSAGE_TYPES.values():
        raise WrongType(
            f"cannot encode {type(msg).__name__}: pass one of {sorted(c.__name__ for c in MESSAGE_TYPES.values())}"
        )
    # The decoder's own checks, so what we send always decodes; their canonical output (1 -> 1.0
    # for float fields) is what we send, so encode(decode(p)) == p.
    header = {k: _plain(v) for k, v in _read_fields(type(msg), msg._header()).items()}
    msg._check()
    body = msg._body()
    payload = pack({**header, "type": msg.TYPE}, body, max_size=max_size)
    if isinstance(msg, Update) and len(payload) - PREFIX_LEN - len(body) > UPDATE_HEADER_MAX:
        raise PayloadTooLarge(f"update header exceeds {UPDATE_HEADER_MAX} bytes: send fewer metrics")
    return payload


def decode(payload: bytes, expect: type[Message] | None = None, max_size: int | None = MAX_PAYLOAD_BYTES) -> Message:
    """Bytes -> a valid message, or a ProtocolError subclass (never any other exception).

    ``expect`` (a message class) makes any other type a ``WrongType`` error, checked before the
    body is decoded.
    """
    try:
        return _decode(payload, expect, max_size)
    except ProtocolError:
        raise
    except Exception as e:  # last line of defence: a decoder bug must not crash the intake loop
        raise MalformedMessage(f"undecodable payload ({type(e).__name__}: {str(e)[:200]})") from None


def _decode(payload: bytes, expect: type[Message] | None, max_size: int | None) -> Message:
    env = unpack(payload, max_size=max_size)
    cls = MESSAGE_TYPES.get(env.header["type"])
    if cls is None:
        raise MalformedMessage(
            f"unknown message type {str(env.header['type'])[:64]!r}: known types are {sorted(MESSAGE_TYPES)}"
        )
    if expect is not None and cls is not expect:
        raise WrongType(f"expected a {expect.TYPE} message but got {cls.TYPE}: check the topic this was published on")
    fields = _read_fields(cls, env.header)
    msg = cls._from_body(fields, env.body)
    msg._check()
    return msg


def max_update_payload_size(specs, encoding: str) -> int:
    """Upper bound of ``len(encode(Update(...)))`` for an update of tensors with these specs."""
    return PREFIX_LEN + UPDATE_HEADER_MAX + max_encoded_size(specs, encoding)


def publish_overhead(topic: str, properties_len: int = 64) -> int:
    """Bytes an MQTT 5 PUBLISH adds around the payload (fixed header, topic, packet id,
    properties), for comparing with the broker's ``max_packet_size``.

    ``properties_len`` is a budget for MQTT 5 properties (message expiry, user properties).
    """
    topic_len = len(topic.encode("utf-8"))
    return 1 + 4 + 2 + topic_len + 2 + 4 + properties_len


def payload_budget(max_packet_size: int, topic: str, properties_len: int = 64) -> int:
    """Largest payload that fits a broker's ``max_packet_size`` on ``topic``."""
    budget = max_packet_size - publish_overhead(topic, properties_len)
    if budget <= 0:
        raise ValueError(f"max_packet_size {max_packet_size} leaves no room for a payload on {topic!r}: raise it")
    return budget


__all__ = [
    "Ack",
    "BundleChunk",
    "BundleRequest",
    "CLIENT_STATES",
    "ClientStatus",
    "Hello",
    "Hyper",
    "MASK_TENSOR",
    "MESSAGE_TYPES",
    "Message",
    "Outcome",
    "SERVER_STATES",
    "ServerStatus",
    "Task",
    "UPDATE_HEADER_MAX",
    "Update",
    "decode",
    "encode",
    "max_update_payload_size",
    "payload_budget",
    "publish_overhead",
]

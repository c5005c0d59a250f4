"""The wire vocabulary both the edge runtime and the server speak (no torch, no paho).

* topics and the broker ACL: ``Topics``, ``acl_lines`` and its rule check ``is_allowed``;
* messages: one frozen dataclass per type, ``encode(msg) -> bytes`` and
  ``decode(payload, expect=None) -> Message`` (any bytes -> a message or a ``ProtocolError``);
  schema ``PROTOCOL_VERSION`` (major) revision ``PROTOCOL_MINOR``: unknown header keys are ignored;
* update encoding (fp32/fp16/int8), its digest, size bound and server-side validation;
* bundle chunking and reassembly;
* the typed codes: ``Reason`` (every refusal), ``OutcomeKind``, ``AckStatus``, ``ChunkResult``, and the
  status states ``ClientState`` / ``ServerState`` (``CLIENT_STATES`` / ``SERVER_STATES`` are their strings);
* the wire format as data for tools: ``json_schemas`` (a JSON Schema per header; ``fedhft.asyncapi`` writes
  them, with the topics and the MQTT facts, into docs/asyncapi.yaml).
"""

from fedhft.protocol._acl import is_allowed
from fedhft.protocol._chunks import (
    CHUNK_HEADER_MAX,
    DEFAULT_CHUNK_SIZE,
    ChunkAssembler,
    atomic_write,
    chunk_size_for,
    file_sha256,
    iter_file_chunks,
    split_bytes,
)
from fedhft.protocol._codes import AckStatus, ChunkResult, ClientState, OutcomeKind, Reason, ServerState
from fedhft.protocol._envelope import MAGIC, MAX_HEADER_BYTES, MAX_PAYLOAD_BYTES, PROTOCOL_MINOR, PROTOCOL_VERSION
from fedhft.protocol._errors import (
    ChunkMismatch,
    DigestMismatch,
    MalformedMessage,
    PayloadTooLarge,
    ProtocolError,
    TopicError,
    UnsupportedVersion,
    WrongType,
)
from fedhft.protocol._fields import ID_PATTERN
from fedhft.protocol._messages import (
    CLIENT_STATES,
    MASK_TENSOR,
    MESSAGE_TYPES,
    SERVER_STATES,
    UPDATE_HEADER_MAX,
    Ack,
    BundleChunk,
    BundleRequest,
    ClientStatus,
    Hello,
    Hyper,
    Message,
    Outcome,
    ServerStatus,
    Task,
    Update,
    decode,
    encode,
    max_update_payload_size,
    payload_budget,
    publish_overhead,
)
from fedhft.protocol._topics import FROM_CLIENT, KIND_MESSAGE, SERVER_STATUS, TO_CLIENT, Topics, acl_lines, valid_id
from fedhft.protocol._spec import REF_SCHEMAS, json_schemas
from fedhft.protocol._update_codec import (
    ENCODINGS,
    SCALE_SUFFIX,
    Rejection,
    decode_update,
    dequantize_int8,
    encode_update,
    max_encoded_size,
    quantize_int8,
    update_digest,
    validate_update,
)

__all__ = [
    # versions and bounds
    "PROTOCOL_VERSION",
    "PROTOCOL_MINOR",
    "MAGIC",
    "MAX_HEADER_BYTES",
    "MAX_PAYLOAD_BYTES",
    "UPDATE_HEADER_MAX",
    "CHUNK_HEADER_MAX",
    "DEFAULT_CHUNK_SIZE",
    # typed codes
    "Reason",
    "OutcomeKind",
    "AckStatus",
    "ChunkResult",
    "ClientState",
    "ServerState",
    # errors
    "ProtocolError",
    "MalformedMessage",
    "UnsupportedVersion",
    "DigestMismatch",
    "PayloadTooLarge",
    "WrongType",
    "TopicError",
    "ChunkMismatch",
    # topics
    "Topics",
    "acl_lines",
    "is_allowed",
    "valid_id",
    "ID_PATTERN",
    "FROM_CLIENT",
    "TO_CLIENT",
    "SERVER_STATUS",
    "KIND_MESSAGE",
    # messages
    "Message",
    "Hello",
    "ClientStatus",
    "ServerStatus",
    "Hyper",
    "Task",
    "Update",
    "Outcome",
    "Ack",
    "BundleRequest",
    "BundleChunk",
    "MESSAGE_TYPES",
    "CLIENT_STATES",
    "SERVER_STATES",
    "MASK_TENSOR",
    "encode",
    "decode",
    "max_update_payload_size",
    "publish_overhead",
    "payload_budget",
    # update codec
    "ENCODINGS",
    "SCALE_SUFFIX",
    "Rejection",
    "encode_update",
    "decode_update",
    "update_digest",
    "quantize_int8",
    "dequantize_int8",
    "max_encoded_size",
    "validate_update",
    # chunks
    "ChunkAssembler",
    "split_bytes",
    "iter_file_chunks",
    "file_sha256",
    "chunk_size_for",
    "atomic_write",
    # the JSON Schemas for tools (docs/asyncapi.yaml)
    "REF_SCHEMAS",
    "json_schemas",
]

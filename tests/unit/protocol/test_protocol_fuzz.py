"""Property tests: ANY byte string fed to decode gives a valid message or a ProtocolError.

The mutations that matter most are the ones that get past the body digest (the header is
re-framed with a correct sha256), because only those reach the per-field validators and the
safetensors parser. A successful decode must also re-encode to a payload that decodes again.
"""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedhft.protocol import Message, ProtocolError, decode, encode
from fedhft.protocol._envelope import PREFIX_LEN, parse_header, sha256_hex
from .protocol_samples import samples

PAYLOADS = [encode(m) for m in samples()]

_json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(max_size=20)
)
_json = st.recursive(
    _json_leaf,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)


def _split(payload: bytes) -> tuple[dict, bytes]:
    n = struct.unpack(">I", payload[5:9])[0]
    return parse_header(payload[PREFIX_LEN : PREFIX_LEN + n]), payload[PREFIX_LEN + n :]


def _frame(header: dict, body: bytes, fix_digest: bool = True) -> bytes:
    if fix_digest:
        header = {**header, "body_sha256": sha256_hex(body), "body_len": len(body)}
    raw = json.dumps(header, allow_nan=True).encode("utf-8", "surrogatepass")
    return b"FHFT\x01" + struct.pack(">I", len(raw)) + raw + body


@st.composite
def byte_mutations(draw) -> bytes:
    """A valid payload with bytes flipped, inserted, deleted or truncated (digest NOT fixed)."""
    data = bytearray(draw(st.sampled_from(PAYLOADS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "set"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[pos:]
        elif data:
            data[pos] = draw(st.integers(0, 255))
    return bytes(data)


@st.composite
def header_mutations(draw) -> bytes:
    """A valid payload whose header has one key replaced/removed/added, re-framed with a correct digest."""
    header, body = _split(draw(st.sampled_from(PAYLOADS)))
    keys = sorted(header)
    op = draw(st.sampled_from(["replace", "remove", "add", "retype"]))
    if op == "replace":
        header[draw(st.sampled_from(keys))] = draw(_json)
    elif op == "remove":
        header.pop(draw(st.sampled_from(keys)))
    elif op == "add":
        header[draw(st.text(max_size=10))] = draw(_json)
    else:
        header["type"] = draw(
            st.sampled_from(
                [
                    "hello",
                    "client_status",
                    "server_status",
                    "task",
                    "update",
                    "outcome",
                    "ack",
                    "bundle_request",
                    "bundle_chunk",
                ]
            )
        )
    return _frame(header, body, fix_digest=draw(st.booleans()))


@st.composite
def body_mutations(draw) -> bytes:
    """A valid payload with its body (safetensors / chunk data) mutated, re-framed with a correct digest."""
    header, body = _split(draw(st.sampled_from(PAYLOADS)))
    data = bytearray(body)
    for _ in range(draw(st.integers(1, 3))):
        if data and draw(st.booleans()):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        else:
            pos = draw(st.integers(0, len(data)))
            data[pos:pos] = draw(st.binary(max_size=16))
    if data[:8] and draw(st.booleans()):  # aim at the safetensors header length
        data[:8] = struct.pack("<Q", draw(st.integers(0, 2**64 - 1)))
    return _frame(header, bytes(data))


ANY_PAYLOAD = st.one_of(st.binary(max_size=512), byte_mutations(), header_mutations(), body_mutations())


def _check(payload: bytes) -> None:
    try:
        msg = decode(payload)
    except ProtocolError as e:
        # The catch-all in decode is a last line of defence; every failure here should be a
        # deliberate, explained one.
        assert "undecodable payload" not in str(e), e
        return
    assert isinstance(msg, Message)
    again = decode(encode(msg))  # whatever decodes is valid enough to send on
    assert type(again) is type(msg)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ANY_PAYLOAD)
def test_decode_never_crashes(payload):
    _check(payload)


@pytest.mark.slow
@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(ANY_PAYLOAD)
def test_decode_never_crashes_10k(payload):
    _check(payload)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=256))
def test_prefixed_garbage(tail):
    _check(b"FHFT\x01" + tail)

"""Messages: round trips, golden bytes, and every typed failure of decode."""

from __future__ import annotations

import dataclasses
import json
import struct

import numpy as np
import pytest

from fedhft import protocol as P
from fedhft.protocol import (
    Ack,
    ClientStatus,
    DigestMismatch,
    Hyper,
    MalformedMessage,
    PayloadTooLarge,
    ProtocolError,
    ServerStatus,
    UnsupportedVersion,
    Update,
    WrongType,
    decode,
    encode,
)
from fedhft.protocol._envelope import pack, sha256_hex

from .protocol_samples import CLIENT, FLEET, assert_same, sample_tensors, samples

SAMPLES = samples()


def _payload(header: dict, body: bytes = b"", version: int = 1) -> bytes:
    """Hand-framed payload (bypasses encode's validation) for negative tests."""
    raw = json.dumps(header).encode()
    return b"FHFT" + bytes([version]) + struct.pack(">I", len(raw)) + raw + body


def _raw(header: bytes) -> bytes:
    return b"FHFT\x01" + struct.pack(">I", len(header)) + header


def _header(**fields) -> dict:
    base = {"type": "server_status", "schema": 1, "fleet": FLEET, "state": "running", "round": 1, "ts": 1.0}
    base.update(body_sha256=sha256_hex(b""), body_len=0)
    base.update(fields)
    return base


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg):
    payload = encode(msg)
    back = decode(payload)
    if isinstance(msg, Update) and msg.encoding != "fp32":
        assert back.digest == msg.digest  # same wire bytes; tensors are the lossy dequantized values
        assert sorted(back.tensors) == sorted(msg.tensors)
    else:
        assert_same(msg, back)
    assert decode(payload, expect=type(msg)).TYPE == msg.TYPE
    assert encode(back) == payload  # canonical: re-encoding a decoded message gives the same bytes


def test_every_message_type_has_a_sample():
    assert {type(m) for m in SAMPLES} == set(P.MESSAGE_TYPES.values())


def test_golden_envelope_bytes():
    msg = ServerStatus("demo", "running", 3, 1700000000.5)
    empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    header = (
        '{"body_len":0,"body_sha256":"' + empty + '","fleet":"demo","round":3,"schema":1,'
        '"state":"running","ts":1700000000.5,"type":"server_status"}'
    ).encode()
    expected = b"FHFT\x01" + len(header).to_bytes(4, "big") + header
    assert encode(msg) == expected
    assert decode(expected) == msg


def test_update_digest_is_identity_and_deterministic():
    t = sample_tensors(5)
    a = Update(FLEET, CLIENT, 1, "t1", 10, {}, "int8", t)
    b = Update(FLEET, CLIENT, 1, "t1", 10, {"loss": 1.0}, "int8", {k: v.copy() for k, v in reversed(t.items())})
    assert a.digest == b.digest  # metrics and dict order do not change the update's identity
    assert a.digest == decode(encode(a)).digest == P.update_digest(a.encoded)
    assert a.digest != Update(FLEET, CLIENT, 1, "t1", 10, {}, "fp16", t).digest


def test_wrong_type():
    payload = encode(SAMPLES[0])
    with pytest.raises(WrongType, match="expected a update message but got hello"):
        decode(payload, expect=Update)


@pytest.mark.parametrize(
    "payload, error, match",
    [
        (b"", MalformedMessage, "shorter"),
        (b"MQTT\x01\x00\x00\x00\x02{}", MalformedMessage, "not a fedhft message"),
        (b"FHFT\x02\x00\x00\x00\x02{}", UnsupportedVersion, "upgrade fedhft"),
        (b"FHFT\x00\x00\x00\x00\x02{}", UnsupportedVersion, "older"),
        (b"FHFT\x01\xff\xff\xff\xff{}", PayloadTooLarge, "header length"),
        (b"FHFT\x01\x00\x00\x00\x09{}", MalformedMessage, "truncated"),
        (b"FHFT\x01\x00\x00\x00\x02[]", MalformedMessage, "JSON object"),
        (b"FHFT\x01\x00\x00\x00\x02\xff\xfe", MalformedMessage, "UTF-8 JSON"),
        (b"FHFT\x01\x00\x00\x00\x02{}", MalformedMessage, "lacks required"),
        (_payload(_header(schema=2)), UnsupportedVersion, "upgrade"),
        (_payload(_header(type="nope")), MalformedMessage, "unknown message type"),
        (_payload(_header(round=True)), MalformedMessage, "server_status.round must be an integer"),
        (_payload(_header(round=1.0)), MalformedMessage, "round"),
        (_payload(_header(ts=-1)), MalformedMessage, "ts"),
        (_payload(_header(state="sleeping")), MalformedMessage, "one of"),
        (_payload(_header(fleet="a/b")), MalformedMessage, "fleet"),
        (_payload(_header(body_len=3)), MalformedMessage, "body_len"),
        (_payload(_header(body_sha256="00" * 32)), DigestMismatch, "corrupted"),
        (_payload(_header(body_sha256="AB" * 32)), MalformedMessage, "hex"),
        (_payload(_header(), b"x"), MalformedMessage, "body_len"),
        (_raw(b'{"ts":NaN}'), MalformedMessage, "finite"),
        (_raw(b'{"a":1,"a":2}'), MalformedMessage, "repeats"),
        (_raw(b'{"round":' + b"9" * 5000 + b"}"), MalformedMessage, "JSON"),
        (b"FHFT\x01\x00\x00\x20\x00" + b"[" * 0x2000, MalformedMessage, "JSON"),
        ("not bytes", MalformedMessage, "bytes"),
    ],
)
def test_decode_errors(payload, error, match):
    with pytest.raises(error, match=match):
        decode(payload)


def test_oversized_payload_is_refused_before_parsing():
    payload = encode(ServerStatus(FLEET, "running", 1, 1.0))
    with pytest.raises(PayloadTooLarge):
        decode(payload, max_size=len(payload) - 1)
    with pytest.raises(PayloadTooLarge, match="raise the broker"):
        encode(Update(FLEET, CLIENT, 1, "t", 1, {}, "fp32", sample_tensors()), max_size=500)


def test_body_corruption_is_a_digest_mismatch():
    payload = bytearray(encode(SAMPLES[7]))
    payload[-3] ^= 0x01
    with pytest.raises(DigestMismatch):
        decode(bytes(payload))


def _update_with_body(body: bytes, encoding: str = "int8") -> bytes:
    header = {
        "type": "update",
        "fleet": FLEET,
        "client": CLIENT,
        "round": 1,
        "task_id": "t",
        "num_examples": 1,
        "metrics": {},
        "encoding": encoding,
    }
    return pack(header, body)


def test_update_body_structure_is_checked():
    from safetensors.numpy import save

    no_scale = save({"w": np.ones((2, 2), np.int8)})
    with pytest.raises(MalformedMessage, match="needs a float32 scale"):
        decode(_update_with_body(no_scale))
    stray = save({"w": np.ones(2, np.float32), "w.__scale": np.ones(1, np.float32)})
    with pytest.raises(MalformedMessage, match="stray scale"):
        decode(_update_with_body(stray, "fp32"))
    wrong_dtype = save({"w": np.ones(2, np.float64)})
    with pytest.raises(MalformedMessage, match="dtype"):
        decode(_update_with_body(wrong_dtype, "fp32"))
    with pytest.raises(MalformedMessage, match="needs float16"):
        decode(_update_with_body(save({"w": np.ones(2, np.float32)}), "fp16"))
    with pytest.raises(MalformedMessage, match="safetensors"):
        decode(_update_with_body(b"\x00" * 16, "fp32"))


def test_task_needs_its_mask():
    from safetensors.numpy import save

    task = SAMPLES[6]
    header = {
        k: v
        for k, v in json.loads(encode(task)[9 : 9 + int.from_bytes(encode(task)[5:9], "big")]).items()
        if k not in ("schema", "body_sha256", "body_len")
    }
    with pytest.raises(MalformedMessage, match="__mask__"):
        decode(pack(header, save({"a": np.ones(2, np.float32)})))
    with pytest.raises(MalformedMessage, match="1-D float32"):
        encode(dataclasses.replace(task, mask=np.ones((2, 2), np.float32)))


@pytest.mark.parametrize(
    "msg, match",
    [
        (ClientStatus(FLEET, CLIENT, "online", battery_percent=150.0), "battery_percent"),
        (ClientStatus(FLEET, "bad/id", "online"), "client"),
        (ClientStatus(FLEET, CLIENT, "online", round=-1), "round"),
        (Ack(FLEET, CLIENT, 1, "t", "xyz", "stored"), "update_digest"),
        (Ack(FLEET, CLIENT, 1, "t", "ab" * 32, "maybe"), "status"),
        (P.Outcome(FLEET, CLIENT, 1, "t", "error", "", {"loss": float("nan")}), "finite"),
        (P.Outcome(FLEET, CLIENT, 1, "t", "crashed"), "kind"),
        (P.BundleRequest(FLEET, CLIENT, "b", None, [1]), "exactly one entry"),
        (P.BundleRequest(FLEET, CLIENT, "b", ["../etc/passwd"]), "segments"),
        (P.BundleChunk(FLEET, "b", "f", 4, 4, "ab" * 32, "ab" * 32, 10, b""), "index"),
        (Update(FLEET, CLIENT, 1, "t", 1, {}, "int4", {}), "encoding"),
        (Update(FLEET, CLIENT, 1, "t", 1, {}, "fp32", {"bad name": np.ones(1, np.float32)}), "tensor name"),
        (Update(FLEET, CLIENT, 1, "t", 1, {}, "int8", {"w": np.array([np.inf], np.float32)}), "non-finite"),
        (dataclasses.replace(SAMPLES[6], start_state={"__mask__": np.ones(1, np.float32)}), "reserved"),
        (Update(FLEET, CLIENT, 1, "t", 1, {"bad key": 1.0}, "fp32", {}), "metrics"),
    ],
)
def test_encode_refuses_invalid_messages(msg, match):
    with pytest.raises(ProtocolError, match=match):
        encode(msg)


def test_hyper_validation():
    task = SAMPLES[6]
    bad = dataclasses.replace(task, hyper=Hyper(lr=0.0, local_steps=1, epochs=1, batch_size=1, seq_len=8))
    with pytest.raises(MalformedMessage, match="lr must be > 0"):
        encode(bad)


def test_numpy_scalars_are_accepted_on_encode():
    msg = ClientStatus(FLEET, CLIENT, "training", np.int64(3), "", np.float32(0.5), np.float64(10.0), np.float64(2.0))
    back = decode(encode(msg))
    assert back.round == 3 and type(back.round) is int and back.battery_percent == 0.5


def test_encode_rejects_non_messages():
    with pytest.raises(WrongType):
        encode({"type": "hello"})


def test_max_update_payload_size_bounds_real_payloads():
    from fedhft.layout import TensorSpec

    tensors = sample_tensors(7)
    specs = [TensorSpec(k, v.shape) for k, v in tensors.items()]
    metrics = {f"metric_{i:02d}_{'x' * 50}": -1.2345678901234567e-300 for i in range(64)}
    for enc in P.ENCODINGS:
        msg = Update("f" * 64, "c" * 64, 2**63 - 1, "t" * 128, 2**63 - 1, metrics, enc, tensors)
        assert len(encode(msg)) <= P.max_update_payload_size(specs, enc)


@pytest.mark.parametrize(
    "payload, code",
    [
        (b"FHFT", "truncated"),
        (b"FHFT\x01\x00\x00\x00\x09{}", "truncated"),
        (_payload(_header(), b"x"), "truncated"),
        (b"MQTT\x01\x00\x00\x00\x02{}", "malformed"),
        (b"FHFT\x07\x00\x00\x00\x02{}", "schema_version"),
        (_payload(_header(body_sha256="00" * 32)), "digest_mismatch"),
    ],
)
def test_error_codes_are_stable(payload, code):
    with pytest.raises(ProtocolError) as info:
        decode(payload)
    assert info.value.code == code and info.value.code is P.Reason(code)


def test_error_codes_for_bodies_and_types():
    from safetensors.numpy import save

    with pytest.raises(MalformedMessage) as info:
        decode(_update_with_body(save({"w": np.ones(2, np.float64)}), "fp32"))
    assert info.value.code == "bad_dtype"
    with pytest.raises(WrongType) as info:
        decode(encode(SAMPLES[0]), expect=Update)
    assert info.value.code == "wrong_type"
    with pytest.raises(PayloadTooLarge) as info:
        decode(encode(SAMPLES[0]), max_size=10)
    assert info.value.code == "oversize"

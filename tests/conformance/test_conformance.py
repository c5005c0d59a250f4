"""The code against the golden vectors: each message encodes to exactly the stored bytes and the
bytes decode back to the message; the accept/reject payloads get the stored verdict. The vectors
are never rewritten here: after a deliberate format change run tests/conformance/generate.py."""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from fedhft.protocol import ENCODINGS, MESSAGE_TYPES, Message, ProtocolError, decode, encode
from tests.conformance.cases import client_ids, messages, split, variants
from tests.conformance.generate import CLIENT_IDS, DESCRIPTIONS
from tests.conformance.vector_json import body_json, dumps, message_from_json, tensor_from_json, vector_json

VECTORS = Path(__file__).resolve().parent / "vectors"
REGENERATE = (
    "the vectors differ from cases.py: if the format change is deliberate, run "
    "`python tests/conformance/generate.py`, review the diff and commit it"
)


def _load(expect: str) -> list[dict]:
    found = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(VECTORS.glob("*.json"))]
    return [v for v in found if v["expect"] == expect]


def _payload(vector: dict) -> bytes:
    return (VECTORS / vector["payload_file"]).read_bytes()


def _same(a: Message, b: Message) -> None:
    assert type(a) is type(b)
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and np.array_equal(x, y), f.name
        elif isinstance(x, dict) and x and isinstance(next(iter(x.values())), np.ndarray):
            assert sorted(x) == sorted(y), f.name
            for k in x:
                assert x[k].dtype == y[k].dtype and np.array_equal(x[k], y[k]), f"{f.name}[{k}]"
        else:
            assert x == y, f.name


def test_every_case_has_its_files_and_every_type_and_encoding_is_covered():
    names = set(messages()) | set(variants())
    assert {p.stem for p in VECTORS.glob("*.json")} == names, REGENERATE
    assert {p.stem for p in VECTORS.glob("*.bin")} == names, REGENERATE
    roundtrip = _load("roundtrip")
    assert {v["type"] for v in roundtrip} == set(MESSAGE_TYPES)
    assert {v["message"]["encoding"] for v in roundtrip if v["type"] == "update"} == set(ENCODINGS)
    assert set(DESCRIPTIONS) == set(messages())


@pytest.mark.parametrize("vector", _load("roundtrip"), ids=lambda v: v["name"])
def test_the_message_encodes_to_exactly_the_stored_bytes(vector):
    payload = _payload(vector)
    msg = message_from_json(vector["type"], vector["message"])
    assert encode(msg) == payload
    assert len(payload) == vector["payload"]["length"]
    header_len = int.from_bytes(payload[5:9], "big")
    assert payload[9 : 9 + header_len].decode("utf-8") == vector["payload"]["header"]
    assert body_json(vector["type"], split(payload)[1]) == vector["payload"]["body"]


@pytest.mark.parametrize("vector", _load("roundtrip"), ids=lambda v: v["name"])
def test_the_stored_bytes_decode_to_the_message(vector):
    payload = _payload(vector)
    back = decode(payload)
    msg = message_from_json(vector["type"], vector["message"])
    if "decoded_tensors" in vector:  # fp16 / int8: the reader gets the dequantized float32 values
        want = {k: tensor_from_json(v) for k, v in vector["decoded_tensors"].items()}
        msg = type(msg)(**{f.name: want if f.name == "tensors" else getattr(msg, f.name) for f in fields(msg)})
    _same(msg, back)
    assert encode(back) == payload  # a decoded message re-encodes to the bytes that arrived


@pytest.mark.parametrize("name", sorted(messages()))
def test_the_vector_files_are_what_the_cases_generate(name):
    msg = messages()[name]
    payload = encode(msg)
    assert (VECTORS / f"{name}.bin").read_bytes() == payload, REGENERATE
    text = dumps(vector_json(name, msg, payload, DESCRIPTIONS[name]))
    assert (VECTORS / f"{name}.json").read_text(encoding="utf-8") == text, REGENERATE


@pytest.mark.parametrize("vector", _load("accept"), ids=lambda v: v["name"])
def test_a_reader_accepts_what_the_1x_rule_allows(vector):
    payload = _payload(vector)
    assert payload == variants()[vector["name"]].payload, REGENERATE
    back = decode(payload)
    if "decodes_like" in vector:
        want = json.loads((VECTORS / f"{vector['decodes_like']}.json").read_text(encoding="utf-8"))
        _same(message_from_json(want["type"], want["message"]), back)
    else:
        _same(message_from_json(vector["type"], vector["message"]), back)


@pytest.mark.parametrize("vector", _load("reject"), ids=lambda v: v["name"])
def test_a_reader_refuses_with_the_stored_code(vector):
    payload = _payload(vector)
    assert payload == variants()[vector["name"]].payload, REGENERATE
    with pytest.raises(ProtocolError) as err:
        decode(payload)
    assert str(err.value.code) == vector["code"]


def _tag(*parts: str | None) -> str:
    """The rule as docs/PROTOCOL.md writes it: hex(sha256(utf8(parts joined by '|')))[:16]."""
    return hashlib.sha256("|".join(str(p) for p in parts).encode("utf-8")).hexdigest()[:16]


def test_session_client_ids_follow_the_published_rule():
    stored = json.loads(CLIENT_IDS.read_text(encoding="utf-8"))
    assert stored == client_ids(), REGENERATE
    for case in stored["device"]:
        c, p = case["client"], case["password"]
        assert case["client_id"] == (f"{c}-{_tag('fedhft-session', c, p)}" if p else c)
    for case in stored["server"]:
        f, u, p, t = case["fleet"], case["username"], case["password"], case["run_tag"]
        secret = f"-{_tag('fedhft-server-id', f, u, p)}" if p else ""
        assert case["client_id"] == f"fedhft-server-{f}{secret}" + (f"-{t}" if t else "")

"""Schema growth within a major version: unknown header keys are ignored, a field added in a later
1.x revision may be absent, a required field stays required, another major is refused."""

from __future__ import annotations

import json
import struct

import pytest

from fedhft import protocol as P
from fedhft.protocol import ClientStatus, MalformedMessage, Task, UnsupportedVersion, decode, encode
from fedhft.protocol._envelope import PREFIX_LEN, parse_header

from .protocol_samples import CLIENT, FLEET, assert_same, samples


def _split(payload: bytes) -> tuple[dict, bytes]:
    n = struct.unpack(">I", payload[5:9])[0]
    return parse_header(payload[PREFIX_LEN : PREFIX_LEN + n]), payload[PREFIX_LEN + n :]


def _reframe(header: dict, body: bytes, version: int = P.PROTOCOL_VERSION) -> bytes:
    """Frame a header as another sender would (digest and length right, keys as given)."""
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return b"FHFT" + bytes([version]) + struct.pack(">I", len(raw)) + raw + body


def _with(payload: bytes, **changes) -> bytes:
    header, body = _split(payload)
    header.update(changes)
    return _reframe({k: v for k, v in header.items() if v is not _DROP}, body)


_DROP = object()


@pytest.mark.parametrize("msg", samples(), ids=lambda m: type(m).__name__)
def test_a_newer_revisions_extra_header_field_is_accepted_and_dropped(msg):
    payload = encode(msg)
    newer = _with(payload, added_in_1_9={"any": ["json", 1]}, another_new_flag=True)
    back = decode(newer, expect=type(msg))
    if isinstance(msg, P.Update) and msg.encoding != "fp32":
        assert back.digest == msg.digest
    else:
        assert_same(msg, back)
    again, _ = _split(encode(back))
    assert "added_in_1_9" not in again and "another_new_flag" not in again  # dropped, not carried on
    assert encode(back) == payload


def test_a_newer_revisions_extra_hyper_field_is_dropped():
    task = next(m for m in samples() if isinstance(m, Task))
    header, body = _split(encode(task))
    header["hyper"] = {**header["hyper"], "optimizer": "adamw"}
    back = decode(_reframe(header, body), expect=Task)
    assert back.hyper == task.hyper


def test_a_field_added_in_a_later_revision_may_be_absent():
    """A 1.0 status (no battery_percent, the old 0-1 ``battery`` instead) still decodes."""
    assert ClientStatus.SINCE == {"battery_percent": 1} and P.PROTOCOL_MINOR >= 1
    v1_0 = _with(
        encode(ClientStatus(FLEET, CLIENT, "idle", 2, "", 40.0, 10.0, 5.0)), battery_percent=_DROP, battery=0.4
    )
    back = decode(v1_0, expect=ClientStatus)
    assert back == ClientStatus(FLEET, CLIENT, "idle", 2, "", None, 10.0, 5.0)


@pytest.mark.parametrize("key", ["state", "ts", "rss_mb", "round"])
def test_a_required_field_stays_required(key):
    payload = _with(encode(ClientStatus(FLEET, CLIENT, "idle", 2, "", None, 10.0, 5.0)), **{key: _DROP})
    with pytest.raises(MalformedMessage, match=f"lacks required key.*{key}"):
        decode(payload)


def test_a_hyper_missing_a_field_is_refused():
    task = next(m for m in samples() if isinstance(m, Task))
    header, body = _split(encode(task))
    del header["hyper"]["encoding"]
    with pytest.raises(MalformedMessage, match="task.hyper must be an object with"):
        decode(_reframe(header, body))


@pytest.mark.parametrize("major", [0, 2, 255])
def test_another_major_version_is_refused_with_the_fix(major):
    header, body = _split(encode(ClientStatus(FLEET, CLIENT, "idle")))
    for payload in (_reframe({**header, "schema": major}, body), _reframe({**header, "schema": major}, body, major)):
        with pytest.raises(UnsupportedVersion, match=r"major version.*upgrade fedhft") as info:
            decode(payload)
        assert info.value.code == "schema_version"


def test_battery_is_a_percent_on_the_wire():
    assert decode(encode(ClientStatus(FLEET, CLIENT, "idle", battery_percent=87.5))).battery_percent == 87.5
    with pytest.raises(MalformedMessage, match=r"battery_percent must be a finite number in \[0.0, 100.0\]"):
        encode(ClientStatus(FLEET, CLIENT, "idle", battery_percent=101.0))


def test_envelope_keys_stay_required():
    header, body = _split(encode(ClientStatus(FLEET, CLIENT, "idle")))
    for key in ("type", "schema", "fleet", "body_sha256", "body_len"):
        with pytest.raises(MalformedMessage, match=f"lacks required key.*'{key}'.*every header carries the envelope"):
            decode(_reframe({k: v for k, v in header.items() if k != key}, body))

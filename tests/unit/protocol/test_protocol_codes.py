"""The typed codes: every error carries a ``Reason`` member, and a member travels as its plain
string, so messages built from members are byte-identical to ones built from strings."""

from __future__ import annotations

import json

import pytest

from fedhft import protocol as P
from fedhft.protocol import (
    Ack,
    AckStatus,
    ChunkAssembler,
    ChunkResult,
    Outcome,
    OutcomeKind,
    ProtocolError,
    Reason,
    decode,
    encode,
    split_bytes,
)

ERRORS = [
    P.ProtocolError,
    P.MalformedMessage,
    P.UnsupportedVersion,
    P.DigestMismatch,
    P.PayloadTooLarge,
    P.WrongType,
    P.TopicError,
    P.ChunkMismatch,
]


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_every_protocol_error_carries_a_reason_member(cls):
    assert type(cls("x").code) is Reason
    refined = cls("x", code="truncated")  # a plain string is taken as its member
    assert refined.code is Reason.TRUNCATED


def test_an_unknown_code_is_refused():
    with pytest.raises(ValueError):
        ProtocolError("x", code="made_up")


def test_members_are_their_wire_strings():
    for enum in (Reason, OutcomeKind, AckStatus, ChunkResult):
        assert all(member == member.value and str(member) == member.value for member in enum)
        assert json.dumps(list(enum)) == json.dumps([m.value for m in enum])
    assert Reason.OVERSIZE == "oversize" and OutcomeKind.OVER_BUDGET == "over_budget"


def test_members_and_strings_encode_to_the_same_bytes_and_decode_to_members():
    by_member = Outcome("demo", "dev-1", 2, "r2-dev-1-abc", OutcomeKind.LOW_BATTERY, "battery at 4%")
    by_string = Outcome("demo", "dev-1", 2, "r2-dev-1-abc", "low_battery", "battery at 4%")
    assert encode(by_member) == encode(by_string)
    assert decode(encode(by_string)).kind is OutcomeKind.LOW_BATTERY
    ack = Ack("demo", "dev-1", 2, "r2-dev-1-abc", "ab" * 32, AckStatus.REJECTED, Reason.NON_FINITE)
    assert encode(ack) == encode(Ack("demo", "dev-1", 2, "r2-dev-1-abc", "ab" * 32, "rejected", "non_finite"))
    back = decode(encode(ack))
    assert back.status is AckStatus.REJECTED and back == ack


def test_an_unknown_kind_is_still_malformed():
    good = encode(Outcome("demo", "dev-1", 2, "r2-dev-1-abc", OutcomeKind.ERROR))
    bad = good.replace(b'"kind":"error"', b'"kind":"fatal"')
    with pytest.raises(P.MalformedMessage, match=r"outcome.kind must be one of \['over_budget', "):
        decode(bad, max_size=None)


def test_chunk_assembler_answers_with_chunk_results(tmp_path):
    first, second = split_bytes(b"x" * 10, fleet="demo", bundle_id="b1", file="f.bin", chunk_size=5)
    asm = ChunkAssembler(tmp_path, "b1")
    assert asm.add(first) is ChunkResult.ADDED
    assert asm.add(first) is ChunkResult.DUPLICATE
    assert asm.add(second) is ChunkResult.COMPLETE
    assert asm.add(second) is ChunkResult.DUPLICATE

"""Every rejection path of the update intake yields its ``Reason`` member, and the intake reads a
decode failure's code, never its message text."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fedhft.protocol import (
    DigestMismatch,
    MalformedMessage,
    Outcome,
    PayloadTooLarge,
    ProtocolError,
    Reason,
    TopicError,
    UnsupportedVersion,
    WrongType,
    encode,
)
from server import Rejected, check_update
from server import _validation

from .test_validation import CASES, EXP, _ctx, _tensors, _update

#: Reasons the intake never returns: codes of other decoders, and the coordinator's own.
NOT_INTAKE = {Reason.PROTOCOL_ERROR, Reason.BAD_TOPIC, Reason.CHUNK_MISMATCH, Reason.AGGREGATION_ERROR}
RUN_ID = "0123456789abcdef"


def _float64_body() -> bytes:
    from safetensors.numpy import save

    u = _update()
    u.__dict__["encoded"] = save({"head.bias": np.zeros(2, np.float64)})  # a dtype outside the wire whitelist
    return encode(u)


#: (payload, context options) for the paths test_validation reaches through other helpers.
MORE = {
    "oversize": (lambda: encode(_update()), dict(max_payload=100), Reason.OVERSIZE),
    "conflict": (lambda: encode(_update(tensors=_tensors(0.02))), dict(stored=_update().digest), Reason.CONFLICT),
    "round closed": (lambda: encode(_update()), dict(accepting=False), Reason.ROUND_CLOSED),
    "stale run": (lambda: encode(_update(task_id=EXP.task_id + ".ffffffff")), dict(run_id=RUN_ID), Reason.STALE_RUN),
    "wrong encoding": (lambda: encode(_update()), dict(encoding="fp16"), Reason.WRONG_ENCODING),
    "unexpected tensor": (
        lambda: encode(_update(tensors={**_tensors(), "extra.w": np.zeros(2, np.float32)})),
        {},
        Reason.UNEXPECTED_TENSOR,
    ),
    "an outcome on the update topic": (
        lambda: encode(Outcome("test", "dev-001", 3, EXP.task_id, "error")),
        {},
        Reason.WRONG_TYPE,
    ),
    "a float64 tensor": (_float64_body, {}, Reason.BAD_DTYPE),
}


def _context(stored=None, accepting=True, max_payload=1 << 20, run_id=None, encoding=None):
    return replace(_ctx(stored=stored, accepting=accepting, max_payload=max_payload), run_id=run_id, encoding=encoding)


def _verdicts():
    for name, (make, want) in CASES.items():
        yield name, check_update("dev-001", make(), _ctx()), Reason(want)
    for name, (make, options, want) in MORE.items():
        yield name, check_update("dev-001", make(), _context(**options)), want
    untasked = check_update("dev-009", encode(_update(client="dev-009")), _ctx())
    yield "untasked client", untasked, Reason.NOT_TASKED


def test_every_rejection_path_yields_its_reason_member():
    seen = set()
    for name, verdict, want in _verdicts():
        assert isinstance(verdict, Rejected), (name, verdict)
        assert verdict.reason is want, (name, verdict.reason, verdict.rejection.detail)
        assert type(verdict.rejection.reason_code) is Reason, name
        seen.add(want)
    assert seen == set(Reason) - NOT_INTAKE, "an intake reason without a test: " + str(set(Reason) - NOT_INTAKE - seen)


@pytest.mark.parametrize(
    "error, want",
    [
        # Each message names another failure than its code: the code wins.
        (MalformedMessage("payload truncated: tensor has dtype float64 but encoding 'fp32'"), Reason.MALFORMED),
        (MalformedMessage("bytes shorter than declared", code=Reason.MALFORMED), Reason.MALFORMED),
        (MalformedMessage("nothing in this text says why", code=Reason.TRUNCATED), Reason.TRUNCATED),
        (MalformedMessage("nothing in this text says why", code=Reason.BAD_DTYPE), Reason.BAD_DTYPE),
        (UnsupportedVersion("truncated dtype"), Reason.SCHEMA_VERSION),
        (PayloadTooLarge("malformed"), Reason.OVERSIZE),
        (DigestMismatch("schema_version"), Reason.DIGEST_MISMATCH),
        (WrongType("bad_dtype"), Reason.WRONG_TYPE),
        # A code the update decoder never raises is recorded as malformed, whatever the text says.
        (TopicError("truncated"), Reason.MALFORMED),
        (ProtocolError("dtype"), Reason.MALFORMED),
    ],
)
def test_decode_failures_are_read_from_the_code_not_the_text(monkeypatch, error, want):
    def failing_decode(*args, **kwargs):
        raise error

    monkeypatch.setattr(_validation, "decode", failing_decode)
    verdict = check_update("dev-001", encode(_update()), _ctx())
    assert isinstance(verdict, Rejected) and verdict.reason is want
    assert verdict.rejection.detail == str(error)[:500]  # the text is kept for people, not read

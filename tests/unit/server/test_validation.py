"""One test per validation rule: every bad update becomes a typed rejection with its reason."""

from __future__ import annotations

import numpy as np
import pytest

from fedhft.layout import masked_update_layout
from fedhft.protocol import Update, encode, encode_update
from server import Accepted, Duplicate, Expected, IntakeContext, Rejected, check_update

from .server_fakes import DIMS, PLANS

PLAN = PLANS["medium"]
MASK = np.zeros(sum(DIMS.hidden for _ in range(2 * PLAN.depth)), np.float32)
MASK[::2] = 1.0
EXP = Expected("dev-001", 3, "r3-dev-001-abc", PLAN, DIMS, MASK)


def _tensors(fill=0.01):
    return {s.name: np.full(s.shape, fill, np.float32) for s in masked_update_layout(PLAN, DIMS, MASK)}


def _update(**kw) -> Update:
    fields = dict(
        fleet="test",
        client="dev-001",
        round=3,
        task_id="r3-dev-001-abc",
        num_examples=4,
        metrics={},
        encoding="fp32",
        tensors=_tensors(),
    )
    fields.update(kw)
    return Update(**fields)


def _ctx(stored=None, accepting=True, max_payload=1 << 20) -> IntakeContext:
    return IntakeContext(
        fleet="test",
        round=3,
        accepting=accepting,
        expected={"dev-001": EXP},
        stored_digest=lambda c: stored,
        known_tasks=lambda c: {"r2-dev-001-old": 2, EXP.task_id: 3},
        norm_bound=10.0,
        max_payload=max_payload,
    )


def _wrong_dtype() -> bytes:
    u = _update()
    u.__dict__["encoded"] = encode_update(u.tensors, "fp16")  # header says fp32, body is fp16
    return encode(u)


def _tensor_with(value) -> dict:
    t = _tensors()
    t["head.bias"] = np.array([value, 0.0], np.float32)
    return t


def _bad_shape() -> dict:
    t = _tensors()
    name = next(n for n in t if n.endswith("lora_B"))
    t[name] = np.zeros((t[name].shape[0] + 1, t[name].shape[1]), np.float32)
    return t


def _corrupt(payload: bytes) -> bytes:
    return payload[:-1] + bytes([payload[-1] ^ 0xFF])


def _future_schema(payload: bytes) -> bytes:
    return payload[:4] + bytes([payload[4] + 1]) + payload[5:]


CASES = {
    "wrong shape": (lambda: encode(_update(tensors=_bad_shape())), "bad_shape"),
    "wrong dtype": (_wrong_dtype, "bad_dtype"),
    "NaN": (lambda: encode(_update(tensors=_tensor_with(np.nan))), "non_finite"),
    "Inf": (lambda: encode(_update(tensors=_tensor_with(np.inf))), "non_finite"),
    "huge norm": (lambda: encode(_update(tensors=_tensors(fill=5.0))), "norm_exceeded"),
    "missing tensor": (
        lambda: encode(_update(tensors={k: v for k, v in _tensors().items() if k != "head.bias"})),
        "missing_tensor",
    ),
    "wrong round (future)": (lambda: encode(_update(round=4)), "future_round"),
    "wrong round (old)": (lambda: encode(_update(round=2)), "replay"),
    "wrong fleet": (lambda: encode(_update(fleet="other")), "wrong_fleet"),
    "client id != topic": (lambda: encode(_update(client="dev-002")), "client_mismatch"),
    "replayed old task": (lambda: encode(_update(task_id="r2-dev-001-old")), "replay"),
    "unknown task": (lambda: encode(_update(task_id="r3-dev-001-forged")), "unknown_task"),
    "truncated bytes": (lambda: encode(_update())[:-7], "truncated"),
    "digest mismatch": (lambda: _corrupt(encode(_update())), "digest_mismatch"),
    "future schema version": (lambda: _future_schema(encode(_update())), "schema_version"),
    "not an update": (lambda: b"hello world", "malformed"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_rule_rejects_with_its_reason(case):
    make, reason = CASES[case]
    verdict = check_update("dev-001", make(), _ctx())
    assert isinstance(verdict, Rejected), verdict
    assert verdict.reason == reason, verdict.rejection.detail
    assert verdict.client == "dev-001" and verdict.rejection.detail


def test_oversize_is_rejected_before_decoding():
    payload = encode(_update())
    verdict = check_update("dev-001", payload + b"\0" * (EXP.max_payload + 1 - len(payload)), _ctx())
    assert isinstance(verdict, Rejected) and verdict.reason == "oversize"
    small_limit = check_update("dev-001", payload, _ctx(max_payload=len(payload) - 1))
    assert small_limit.reason == "oversize"


def test_good_update_is_accepted():
    verdict = check_update("dev-001", encode(_update()), _ctx())
    assert isinstance(verdict, Accepted) and verdict.digest == _update().digest


def test_same_digest_is_a_duplicate_other_digest_a_conflict():
    digest = _update().digest
    assert isinstance(check_update("dev-001", encode(_update()), _ctx(stored=digest)), Duplicate)
    other = check_update("dev-001", encode(_update(tensors=_tensors(0.02))), _ctx(stored=digest))
    assert other.reason == "conflict"


def test_closed_round_and_untasked_client():
    assert check_update("dev-001", encode(_update()), _ctx(accepting=False)).reason == "round_closed"
    stranger = check_update("dev-009", encode(_update(client="dev-009")), _ctx())
    assert stranger.reason == "not_tasked"


def test_only_well_formed_answers_to_the_own_task_are_final():
    """A garbled packet must not stop the round from waiting for the device's real update."""
    assert check_update("dev-001", encode(_update(tensors=_tensor_with(np.nan))), _ctx()).final
    assert not check_update("dev-001", encode(_update())[:-3], _ctx()).final
    assert not check_update("dev-001", encode(_update(task_id="r2-dev-001-old")), _ctx()).final

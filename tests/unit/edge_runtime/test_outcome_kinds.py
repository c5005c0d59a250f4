"""The agent reports each typed failure as its OutcomeKind member (the wire carries its string)."""

from __future__ import annotations

import pytest

from edge_runtime import DeadlineMissed, LowBattery, OverBudget, outcome_of
from fedhft.protocol import Outcome, OutcomeKind, decode, encode


@pytest.mark.parametrize(
    "result, kind",
    [
        (OverBudget(300.0, 256.0, "plan", 120.0), OutcomeKind.OVER_BUDGET),
        (LowBattery(12.0, 20.0, False), OutcomeKind.LOW_BATTERY),
        (DeadlineMissed(9.5, 10.0, 4), OutcomeKind.DEADLINE),
        (RuntimeError("session crashed"), OutcomeKind.ERROR),
    ],
)
def test_each_failure_is_its_outcome_kind_member(result, kind):
    got, reason, metrics = outcome_of(result)
    assert got is kind and reason
    sent = decode(encode(Outcome("demo", "dev-1", 0, "r0-dev-1-abc", got, reason[:1024], metrics)))
    assert sent.kind is kind

"""Fleet-wide personalized scores from the clients' shard metrics (golden values)."""

from __future__ import annotations

import pytest

from server import personalized_summary


def _client(n, before, after, bal_after, majority):
    return {
        "val_examples": n,
        "val_acc_before": before,
        "val_acc_after": after,
        "val_bal_acc_before": 0.5,
        "val_bal_acc_after": bal_after,
        "val_majority_acc": majority,
    }


def test_weighted_by_shard_size_and_worst_tenth():
    rows = [_client(30, 0.5, 0.9, 0.8, 0.7), _client(10, 0.1, 0.5, 0.5, 0.9)] + [
        _client(10, 0.5, 1.0, 1.0, 0.5) for _ in range(8)
    ]
    got = personalized_summary(rows)
    assert got["clients"] == 10 and got["examples"] == 120
    assert got["acc_after"] == pytest.approx((30 * 0.9 + 10 * 0.5 + 80 * 1.0) / 120)
    assert got["acc_before"] == pytest.approx((30 * 0.5 + 10 * 0.1 + 80 * 0.5) / 120)
    assert got["bal_acc_after"] == pytest.approx((30 * 0.8 + 10 * 0.5 + 80 * 1.0) / 120)
    assert got["majority_acc"] == pytest.approx((30 * 0.7 + 10 * 0.9 + 80 * 0.5) / 120)
    assert got["worst10_acc_after"] == 0.5  # 10% of 10 clients: the one worst


def test_worst_tenth_is_at_least_one_client_and_rounds_up():
    rows = [_client(5, 0, a, a, 0) for a in (0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)]
    assert personalized_summary(rows)["worst10_acc_after"] == pytest.approx(0.3)  # ceil(1.1) = 2 clients
    assert personalized_summary(rows[:1])["worst10_acc_after"] == 0.2


def test_no_shard_no_summary():
    assert personalized_summary([]) is None
    assert personalized_summary([{"val_examples": 0, "val_acc_after": 1.0}, {"loss": 1.0}]) is None

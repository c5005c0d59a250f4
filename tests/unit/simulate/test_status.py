"""The run status of a simulation from the server's per-client records: completed only when every
selected client stored an update in every round."""

from __future__ import annotations

from simulate._status import FailureKind, RunStatus, classify_run

TIERS = {"dev-0": "rpi5", "dev-1": "jetson-orin-nano", "dev-2": "android-mid"}
BACKENDS = {"rpi5": "ort", "jetson-orin-nano": "torch", "android-mid": "executorch"}


def _rec(rnd: int, client: str, status: str = "stored", outcome: str | None = None, reason: str | None = None) -> dict:
    tier = TIERS[client]
    return {
        "round": rnd,
        "client": client,
        "tier": tier,
        "backend": BACKENDS[tier],
        "status": status,
        "outcome": outcome,
        "reason": reason,
        "metrics": {},
    }


def _metrics(rounds: int, selected: int = 3, stored: int = 3) -> list[dict]:
    return [{"round": i, "selected": selected, "stored": stored, "accuracy": 0.7} for i in range(rounds)]


def test_every_client_stored_every_round_is_completed():
    records = [_rec(r, c) for r in range(2) for c in TIERS]
    verdict = classify_run(records, _metrics(2), 2)
    assert verdict.status is RunStatus.COMPLETED and verdict.status.exit_code == 0
    assert verdict.failures == [] and verdict.client_rounds == 6
    assert verdict.headline().startswith("completed: every selected client stored")


def test_a_client_failing_every_round_is_degraded_not_completed():
    # What issue 10 saw: all rounds committed, two tiers' devices reported an error outcome every round.
    msg = "no bundle for tier 'android-mid' backend 'ort'"
    records = [_rec(r, c, "outcome", "error", msg) if c != "dev-2" else _rec(r, c) for r in range(4) for c in TIERS]
    verdict = classify_run(records, _metrics(4, stored=1), 4)
    assert verdict.status is RunStatus.DEGRADED and verdict.status.exit_code == 1
    assert len(verdict.failures) == 8 and verdict.client_rounds == 12
    assert {f.kind for f in verdict.failures} == {FailureKind.OUTCOME}
    assert verdict.by_reason() == {"error": {"rpi5": 4, "jetson-orin-nano": 4}}
    assert verdict.headline() == (
        "degraded: 8 of 12 client-rounds did not store: error x8 (jetson-orin-nano x4, rpi5 x4)"
    )
    summary = verdict.summary()
    assert msg in summary and "dev-0" in summary
    rows = verdict.failed_clients()
    assert [r["client"] for r in rows] == ["dev-0", "dev-1"]
    assert rows[0]["rounds"] == [0, 1, 2, 3] and rows[0]["reasons"] == {"error": 4} and rows[0]["backend"] == "ort"


def test_rejections_and_drops_are_counted_by_reason():
    records = [
        _rec(0, "dev-0", "rejected", reason="non_finite"),
        _rec(0, "dev-1", "dropped"),
        _rec(0, "dev-2"),
        _rec(1, "dev-0"),
        _rec(1, "dev-1"),
        _rec(1, "dev-2", "outcome", "over_budget", "rss 900 > 640 MB"),
    ]
    verdict = classify_run(records, _metrics(2, stored=2), 2)
    assert verdict.status is RunStatus.DEGRADED
    assert set(verdict.by_reason()) == {"rejected:non_finite", "dropped", "over_budget"}
    assert verdict.to_json()["failures_by_reason"]["over_budget"] == {"android-mid": 1}


def test_missing_rounds_or_an_error_is_failed():
    records = [_rec(0, c) for c in TIERS]
    verdict = classify_run(records, _metrics(1), 3)
    assert verdict.status is RunStatus.FAILED and verdict.status.exit_code == 1
    assert "1 of 3 rounds committed" in verdict.headline()
    crashed = classify_run(records, _metrics(1), 1, error="the server (pid 9) exited with code 1")
    assert crashed.status is RunStatus.FAILED and "exited with code 1" in crashed.headline()


def test_interrupted_wins_and_exits_130():
    verdict = classify_run([], [], 5, interrupted=True)
    assert verdict.status is RunStatus.INTERRUPTED and verdict.status.exit_code == 130


def test_records_of_an_uncommitted_round_are_ignored():
    records = [_rec(0, c) for c in TIERS] + [_rec(1, "dev-0", "tasked")]
    assert classify_run(records, _metrics(1), 1).status is RunStatus.COMPLETED


def test_unreadable_records_fall_back_on_the_metrics_counts():
    rounds = [{"round": 0, "selected": 3, "stored": 1, "outcomes": {"error": 1}, "dropped": 1, "accuracy": 0.5}]
    verdict = classify_run([], rounds, 1)
    assert verdict.status is RunStatus.DEGRADED and verdict.client_rounds == 3
    assert sorted(f.reason for f in verdict.failures) == ["dropped", "error"]


def test_a_round_without_global_accuracy_is_degraded():
    records = [_rec(0, c) for c in TIERS]
    rounds = [{"round": 0, "selected": 3, "stored": 3, "accuracy": None, "error": "KeyError: head.weight"}]
    verdict = classify_run(records, rounds, 1)
    assert verdict.status is RunStatus.DEGRADED and "KeyError: head.weight" in verdict.headline()

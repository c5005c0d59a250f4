"""The status of a finished simulation: which client-rounds did not store an update, and why.

A run is ``completed`` only when every client selected in every round stored an update; all
rounds committed with some client-round that did not store is ``degraded``; missing rounds or a
fleet error is ``failed``. A pure function of the server's per-client records (``client_rounds``
in _monitor.py) and its per-round metrics, so that it is tested without processes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path

from server import ClientRoundStatus


class RunStatus(str, Enum):
    COMPLETED = "completed"
    DEGRADED = "degraded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    @property
    def exit_code(self) -> int:
        """What ``fedhft simulate`` exits with (documented in its --help)."""
        return {RunStatus.COMPLETED: 0, RunStatus.INTERRUPTED: 130}.get(self, 1)


class FailureKind(str, Enum):
    # the device reported it did not train (over_budget, error, low_battery, ...)
    OUTCOME = ClientRoundStatus.OUTCOME.value
    REJECTED = ClientRoundStatus.REJECTED.value  # the server refused the update (bad shape, non-finite, ...)
    DROPPED = ClientRoundStatus.DROPPED.value  # no reply before the round closed
    # still waiting when the round committed (should not happen; counted, not hidden)
    NO_REPLY = ClientRoundStatus.TASKED.value


@dataclass(frozen=True)
class ClientFailure:
    """One selected client-round that stored no update."""

    round: int
    client: str
    tier: str | None
    backend: str | None
    kind: FailureKind
    code: str  # the outcome kind, the rejection reason, or the kind itself
    detail: str = ""  # the device's or the server's message

    @property
    def reason(self) -> str:
        """Short label counted in summaries: ``error``, ``over_budget``, ``rejected:bad_shape``, ``dropped``."""
        if self.kind is FailureKind.OUTCOME:
            return self.code
        if self.kind is FailureKind.REJECTED:
            return f"rejected:{self.code}"
        return self.kind.name.lower()


@dataclass
class RunVerdict:
    status: RunStatus
    client_rounds: int  # selected client-rounds in the committed rounds
    failures: list[ClientFailure] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # run-level: the fleet error, missing rounds, evaluation

    def by_reason(self) -> dict[str, Counter]:
        """reason -> Counter(tier), most frequent reason first."""
        out: dict[str, Counter] = {}
        for f in self.failures:
            out.setdefault(f.reason, Counter())[f.tier or "?"] += 1
        return dict(sorted(out.items(), key=lambda kv: (-sum(kv[1].values()), kv[0])))

    def failed_clients(self) -> list[dict]:
        """Per client that failed at least once: tier, backend, rounds failed, reasons (count each)."""
        rows: dict[str, dict] = {}
        for f in self.failures:
            row = rows.setdefault(
                f.client, {"client": f.client, "tier": f.tier, "backend": f.backend, "rounds": [], "reasons": Counter()}
            )
            row["rounds"].append(f.round)
            row["reasons"][f.reason] += 1
        return [dict(r, reasons=dict(r["reasons"])) for _, r in sorted(rows.items())]

    def examples(self) -> dict[str, ClientFailure]:
        """The first failure of each reason (its message is what the user needs to read first)."""
        out: dict[str, ClientFailure] = {}
        for f in self.failures:
            out.setdefault(f.reason, f)
        return out

    def headline(self) -> str:
        """``degraded: 8 of 24 client-rounds did not store: error x8 (rpi5 x4, jetson-orin-nano x4)``."""
        parts = list(self.problems)
        if self.failures:
            counts = "; ".join(
                f"{reason} x{sum(tiers.values())} ({_counts(tiers)})" for reason, tiers in self.by_reason().items()
            )
            parts.append(f"{len(self.failures)} of {self.client_rounds} client-rounds did not store: {counts}")
        elif self.status is RunStatus.COMPLETED:
            parts.append(f"every selected client stored an update in every round ({self.client_rounds} client-rounds)")
        return f"{self.status.value}: " + "; ".join(parts) if parts else self.status.value

    def summary(self, run_dir: Path | None = None) -> str:
        """The lines printed on stderr at the end of a run: the headline, the first message of each
        failure reason, and where to read more."""
        lines = [self.headline()]
        for reason, f in self.examples().items():
            msg = " ".join(f.detail.split())[:300] or "(no message)"
            lines.append(f"  {reason}: {msg} (first: {f.client}, {f.tier}/{f.backend}, round {f.round})")
        if run_dir is not None and self.status is not RunStatus.COMPLETED:
            logs = (
                f"; logs: {run_dir / 'logs' / 'server.log'}, {run_dir / 'logs' / 'dev-*.log'}"
                if (run_dir / "logs").is_dir()
                else ""
            )  # engine=inprocess starts no process: no logs
            lines.append(f"  details: {run_dir / 'report.md'}{logs}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "status": self.status.value,
            "client_rounds": self.client_rounds,
            "failed_client_rounds": len(self.failures),
            "problems": self.problems,
            "failures_by_reason": {r: dict(t) for r, t in self.by_reason().items()},
            "failures": [dict(asdict(f), kind=f.kind.value, reason=f.reason) for f in self.failures],
        }


def _counts(counter: Counter) -> str:
    return ", ".join(f"{k} x{n}" for k, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


def _failure(rec: dict) -> ClientFailure | None:
    status = rec.get("status")
    if status == ClientRoundStatus.STORED:
        return None
    kind = {
        ClientRoundStatus.OUTCOME: FailureKind.OUTCOME,
        ClientRoundStatus.REJECTED: FailureKind.REJECTED,
        ClientRoundStatus.DROPPED: FailureKind.DROPPED,
    }.get(status, FailureKind.NO_REPLY)
    code = (
        rec.get("outcome")
        if kind is FailureKind.OUTCOME
        else rec.get("reason")
        if kind is FailureKind.REJECTED
        else None
    ) or kind.value
    detail = rec.get("reason") if kind is FailureKind.OUTCOME else ""
    return ClientFailure(
        int(rec["round"]), str(rec["client"]), rec.get("tier"), rec.get("backend"), kind, str(code), str(detail or "")
    )


def _from_metrics(m: dict) -> list[ClientFailure]:
    """A committed round with no readable client records: its failures from the metrics line counts."""
    out = []
    for code, n in (m.get("outcomes") or {}).items():
        out += [ClientFailure(m["round"], "?", None, None, FailureKind.OUTCOME, code)] * int(n)
    missing = max(0, int(m.get("selected", 0)) - int(m.get("stored", 0)) - len(out))
    dropped = min(missing, int(m.get("dropped", 0)))
    out += [ClientFailure(m["round"], "?", None, None, FailureKind.DROPPED, "dropped")] * dropped
    out += [ClientFailure(m["round"], "?", None, None, FailureKind.REJECTED, "unknown")] * (missing - dropped)
    return out


def classify_run(
    records: list[dict],
    rounds: list[dict],
    expected_rounds: int,
    error: str | None = None,
    interrupted: bool = False,
    eval_error: str | None = None,
) -> RunVerdict:
    """The run's status from the server's client records and its committed rounds (metrics lines,
    optionally with the evaluation's ``accuracy``). Records of rounds that never committed are
    ignored: a run cut short is ``failed`` or ``interrupted`` by its missing rounds, not by them."""
    committed = {int(m["round"]): m for m in rounds}
    failures, total = [], 0
    for idx, m in sorted(committed.items()):
        recs = [r for r in records if r.get("round") == idx]
        if recs:
            total += len(recs)
            failures += [f for f in map(_failure, recs) if f is not None]
        else:
            total += int(m.get("selected", 0))
            failures += _from_metrics(m)
    problems = []
    if error:
        problems.append(error)
    if len(committed) < expected_rounds:
        problems.append(f"{len(committed)} of {expected_rounds} rounds committed")
    if interrupted:
        status = RunStatus.INTERRUPTED
    elif problems:
        status = RunStatus.FAILED
    else:
        no_acc = [i for i, m in sorted(committed.items()) if m.get("accuracy") is None]
        if eval_error:
            problems.append(f"the evaluation failed to start: {eval_error.strip().splitlines()[-1]}")
        elif no_acc:
            why = next((committed[i]["error"] for i in no_acc if committed[i].get("error")), None)
            problems.append(f"no global accuracy for rounds {no_acc}{f': {why}' if why else ''}")
        status = RunStatus.DEGRADED if failures or problems else RunStatus.COMPLETED
    return RunVerdict(status, total, failures, problems)

"""What `fedhft simulate` prints while it runs: one line per committed and per evaluated round
when stdout is not a terminal, a live bar on a terminal, and in both the final round's accuracy."""

from __future__ import annotations

import io

from simulate._monitor import Progress


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _metrics(idx: int, stored: int = 4, selected: int = 4, **extra) -> dict:
    return {
        "round": idx,
        "stored": stored,
        "selected": selected,
        "rejected_clients": 0,
        "outcome_clients": 0,
        "dropped": 0,
        **extra,
    }


def _record(idx: int) -> dict:
    return {"round": idx, "client": "dev-000", "status": "tasked"}


def test_a_log_file_gets_one_line_per_committed_round_and_per_accuracy(tmp_path):
    out, clock = io.StringIO(), _Clock()
    progress = Progress(3, 4, stream=out, clock=clock)
    clock.now += 20  # exporting, starting the broker and the server, devices joining
    progress.update(tmp_path, [], [_record(0)], {})
    assert out.getvalue() == ""  # nothing committed yet
    clock.now += 10
    committed = [_metrics(0)]
    progress.update(tmp_path, committed, [_record(0), _record(1)], {})
    progress.update(tmp_path, committed, [_record(0), _record(1)], {})  # a poll without news prints nothing
    clock.now += 10
    committed.append(_metrics(1, stored=2, dropped=1, rejected_clients=1))
    progress.update(tmp_path, committed, [_record(1)], {0: {"round": 0, "accuracy": 0.61}})
    lines = out.getvalue().splitlines()
    assert lines == [
        "round 0 committed (1 of 3 rounds): 4/4 clients stored; elapsed 0:00:30, ETA 0:00:20",
        "round 1 committed (2 of 3 rounds): 2/4 clients stored (rejected 1, dropped 1); elapsed 0:00:40, ETA 0:00:10",
        "round 0 test accuracy 0.610",
    ]


def test_the_last_lines_carry_the_final_rounds_accuracy(tmp_path):
    """The last round commits, the server exits, its evaluation finishes after the last poll."""
    out, clock = io.StringIO(), _Clock()
    progress = Progress(2, 4, stream=out, clock=clock)
    progress.update(tmp_path, [_metrics(0)], [_record(0)], {})
    evals = {0: {"round": 0, "accuracy": 0.6}, 1: {"round": 1, "accuracy": 0.75}}
    progress.close(evals, [_metrics(0), _metrics(1)])
    lines = out.getvalue().splitlines()
    assert lines[1].startswith("round 1 committed (2 of 2 rounds): 4/4 clients stored; elapsed")
    assert lines[1].endswith("evaluating the last round")
    assert lines[-1] == "round 1 test accuracy 0.750"


def test_a_failed_evaluation_says_so():
    out = io.StringIO()
    progress = Progress(1, 2, stream=out)
    progress.close({0: {"round": 0, "accuracy": None, "error": "FileNotFoundError: x"}}, [_metrics(0)])
    assert out.getvalue().splitlines()[-1] == "round 0 test accuracy: evaluation failed (FileNotFoundError: x)"


def test_the_bar_on_a_terminal_ends_on_the_final_accuracy(tmp_path):
    out = _Tty()
    progress = Progress(2, 4, stream=out)
    committed = [_metrics(0), _metrics(1)]
    progress.update(tmp_path, committed, [_record(1)], {0: {"round": 0, "accuracy": 0.6}})
    progress.close({0: {"round": 0, "accuracy": 0.6}, 1: {"round": 1, "accuracy": 0.75}}, committed)
    text = out.getvalue()
    assert "acc r1 0.750" in text
    assert "round 0 committed" not in text  # a terminal gets the bar, not the log lines


def test_progress_false_prints_nothing(tmp_path):
    out = io.StringIO()
    progress = Progress(1, 2, enabled=False, stream=out)
    progress.update(tmp_path, [_metrics(0)], [_record(0)], {0: {"round": 0, "accuracy": 0.5}})
    progress.close({0: {"round": 0, "accuracy": 0.5}}, [_metrics(0)])
    assert out.getvalue() == ""

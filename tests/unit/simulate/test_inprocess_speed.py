"""The in-process engine's speed-ups change no number: workers, the frozen-layer cache, the
evaluation thread (tiny model, 4 clients on an int8 and an fp32 tier, 2 rounds)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.simulate.test_inprocess import TIERS, _cfg, _devices, bundles  # noqa: F401 (fixture)


def _run(devices, bundles, **engine):  # noqa: F811
    from simulate import EncodedSet, InProcessEngine

    rng = np.random.default_rng(0)
    test = EncodedSet(
        rng.integers(1000, 3000, (12, 16)).astype(np.int64), np.ones((12, 16), np.int64), np.arange(12) % 2
    )
    cfg = _cfg(clients=4, strategy="fedhft", local_steps=4)
    return InProcessEngine(cfg, devices, bundles, test=test, say=lambda line: None, **engine).run()


def _numbers(result) -> tuple:
    # bytes_down: the tasks carry a wall-clock deadline, whose printed length varies by a digit or two
    skip = ("_s", "time", "rss", "host_baseline", "digest", "task_id", "bytes_down")
    rounds = [{k: v for k, v in r.items() if not any(s in k for s in skip)} for r in result.rounds]
    records = [
        {k: v for k, v in r.items() if k != "metrics"}
        | {"metrics": {k: v for k, v in r["metrics"].items() if not any(s in k for s in skip)}}
        for r in result.records
    ]
    return rounds, records


@pytest.mark.parametrize(
    "engine",
    [
        {"workers": 2, "eval_thread": True},
        {"workers": 2, "frozen_cache_mb": 0},
        {"workers": 3, "eval_thread": False},
        {"workers": 1, "eval_thread": True},
    ],
)
def test_speed_ups_change_no_number(tmp_path, bundles, engine):  # noqa: F811
    devices = _devices(tmp_path, 4, rows=20)
    want = _run(devices, bundles, workers=1, frozen_cache_mb=0, eval_thread=False)
    got = _run(devices, bundles, **engine)
    assert _numbers(got) == _numbers(want)
    assert all(r["accuracy"] == r["accuracy"] for r in got.rounds)  # evaluated (not nan)
    for idx, state in want.states.items():
        assert sorted(got.states[idx]) == sorted(state)
        assert all(np.array_equal(got.states[idx][k], state[k]) for k in state)


def test_workers_in_a_fresh_process_change_no_number(tmp_path, bundles):  # noqa: F811
    """Two workers opening their first sessions at once, before anything imported transformers
    (its lazy imports are not thread-safe): every client still stores the same update."""
    import json
    import subprocess
    import sys

    from tests._helpers import REPO

    devices = _devices(tmp_path, 4, rows=20)
    want = _numbers(_run(devices, bundles, workers=1, frozen_cache_mb=0))
    script = (
        "import json, sys; from pathlib import Path; "
        "from tests.unit.simulate.test_inprocess_speed import _devices, _numbers, _run; "
        "r = _run(_devices(Path(sys.argv[1]), 4, rows=20), Path(sys.argv[2]), workers=2, eval_thread=True); "
        "print('RESULT', json.dumps(_numbers(r)))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), str(bundles)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))[len("RESULT ") :])
    assert got == json.loads(json.dumps(want))

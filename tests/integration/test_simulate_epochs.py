"""``local_steps=0 local_epochs=N`` in a real in-process simulation: every client makes N passes over its
own training rows each round (FedHFT's reference protocol), so clients with more rows take more steps."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

from tests.integration._sim_helpers import simulate_argv, tiny_inprocess

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def test_each_client_runs_its_epochs_over_its_own_rows(tmp_path):
    settings = tiny_inprocess(
        tmp_path,
        clients=3,
        rounds=2,
        warmup_rounds=1,
        tiers="[android-mid,rpi5]",
        partition="dirichlet",
        alpha=0.5,
        local_steps=0,
        local_epochs=2,
        train_size=150,
        test_size=40,
    )
    proc = subprocess.run(simulate_argv(settings), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "run" / "clients.jsonl").read_text().splitlines()]
    stored = [r for r in records if r["status"] == "stored"]
    assert len(stored) == 6
    for r in stored:
        rows, batch = r["num_examples"], r["metrics"]["batch_size"]
        assert r["metrics"]["steps"] == 2 * math.ceil(rows / batch), r
    assert len({r["num_examples"] for r in stored}) > 1  # the clients differ, and so do their steps

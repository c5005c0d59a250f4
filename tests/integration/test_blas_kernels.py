"""FedHFT's server state must not depend on which kernels the CPU's OpenBLAS picks: the same tiny
run under two forced OpenBLAS kernels commits the same bytes. (Before the server normalized its
clustering feature with a correctly rounded sum, the sketch's last bit, then the clusters, followed
the kernel, and FedHFT's sweep rows differed between machines.)"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import pytest

from tests.integration._sim_helpers import simulate_argv, tiny_inprocess, write_toy_sentiment

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
#: Two x86-64 kernel sets of OpenBLAS's DYNAMIC_ARCH builds (numpy's wheels) that every x86-64 CPU
#: CI runs on can execute: SSE3 only, and the Haswell kernels the previous sweep machine picked.
KERNELS = ("Prescott", "Haswell")


def _run(tmp: Path, kernel: str, dataset: Path) -> dict[str, bytes]:
    settings = tiny_inprocess(
        tmp / kernel,
        strategy="fedhft",
        clients=8,
        rounds=5,
        warmup_rounds=2,
        partition="dirichlet",
        alpha=0.3,
        tiers="[android-mid,rpi5,jetson-orin-nano]",
        dataset=str(dataset),
        train_size=0,
        test_size=0,
        local_steps=3,
        lr=0.02,
    )
    env = {**os.environ, "OPENBLAS_CORETYPE": kernel, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(simulate_argv(settings), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    states = sorted((tmp / kernel / "run" / "server" / "states").glob("*.safetensors"))
    assert len(states) >= 5  # a strategy state per round at least
    return {p.name: p.read_bytes() for p in states}


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the kernel names are OpenBLAS's x86-64 ones")
def test_fedhft_commits_the_same_bytes_under_two_openblas_kernels(tmp_path):
    dataset = write_toy_sentiment(tmp_path / "toy.jsonl", 320)
    first, second = (_run(tmp_path, k, dataset) for k in KERNELS)
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []

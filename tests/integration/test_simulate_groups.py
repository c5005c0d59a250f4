"""FedHFT with ``groups=partition`` in a real in-process simulation: the clusters are the natural partition's
keys (each client's domain), filled in by the run, and a run that cannot have them is refused before it starts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.integration._sim_helpers import simulate_argv, tiny_inprocess

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def _write_two_domains(path: Path, n: int = 240) -> Path:
    pos, neg = ["good", "great", "superb", "lovely"], ["bad", "awful", "boring", "poor"]
    with open(path, "w") as fh:
        for i in range(n):
            y, domain = i % 2, ("books", "kitchen")[(i // 2) % 2]
            text = f"a {(pos if y else neg)[i % 4]} {'novel' if domain == 'books' else 'kettle'} {i % 7}"
            fh.write(json.dumps({"text": text, "label": y, "domain": domain}) + "\n")
    return path


def _argv(tmp: Path, **extra) -> list[str]:
    settings = tiny_inprocess(
        tmp,
        clients=4,
        rounds=3,
        warmup_rounds=1,
        tiers="[android-mid,rpi5]",
        dataset=str(_write_two_domains(tmp / "two-domains.jsonl")),
        natural_key="domain",
        partition="natural",
        strategy="fedhft",
        strategy_options="{groups: partition}",
        train_size=0,
        test_size=0,
        local_steps=2,
        lr=0.02,
    )
    return simulate_argv({**settings, **extra})


def test_groups_partition_makes_each_domain_a_cluster(tmp_path):
    proc = subprocess.run(_argv(tmp_path), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    groups = results["data"]["client_groups"]
    assert sorted(set(groups.values())) == ["books", "kitchen"] and len(groups) == 4
    assert results["config"]["strategy_options"]["groups"] == groups
    for client, membership in results["memberships"].items():  # clusters in name order: books, kitchen
        assert membership == ([1.0, 0.0] if groups[client] == "books" else [0.0, 1.0]), (client, membership)


def test_groups_partition_without_a_natural_partition_is_refused_before_anything_starts(tmp_path):
    proc = subprocess.run(_argv(tmp_path, partition="dirichlet"), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "groups=partition with partition=natural" in proc.stdout + proc.stderr
    assert not (tmp_path / "run").exists()

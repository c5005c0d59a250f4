"""The in-process engine against the real one: the same small federated run (tiny model, 3 clients
on 3 tiers, all torch, 3 rounds, fixed seeds) through `fedhft simulate` (real Mosquitto, the
`fedhft server` process, one `fedhft edge` process per client) and through InProcessEngine on the
very data files and bundles that run wrote, must commit the same global states and report the
same per-round metrics and client records.

Tolerance: states within atol 1e-5 / rtol 1e-4. Both engines run the same float32 CPU code with
one torch thread (each edge runs --threads 1; the engine sets edge_threads=1), on the same
batches (the batch order is seeded by the round, the validation split by the data), the same fp16
update encoding (deterministic) and the same float64 aggregation, so the states come out
bit-identical in practice. The one thing left to chance is the aggregation order (MQTT: arrival
order; in-process: client order), which can move a float64 sum by one ulp and, rarely, a float32
value by one ulp; the tolerance covers that and its spread over three rounds, and nothing else.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from server.broker import find_mosquitto
from tests.integration._sim_helpers import write_toy_sentiment

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(find_mosquitto() is None, reason="no mosquitto binary: apt-get install mosquitto"),
]
REPO = Path(__file__).resolve().parents[2]
#: Metrics that measure time or this process's memory, which no two runs share.
TIMING = {"round_s", "aggregation_s", "eval_s", "step_time_median_s", "train_time_s", "peak_rss_mb"}
#: Per task, the JSON text of its deadline timestamp may differ by a few digits.
DEADLINE_DIGITS = 8


def _mqtt_run(tmp: Path, cache: Path, strategy: str) -> Path:
    out = tmp / "run"
    settings = {
        "model": "tiny",
        "clients": 3,
        "rounds": 3,
        "tiers": "[android-mid,rpi5,jetson-orin-nano]",
        "backend": "torch",
        "dataset": str(write_toy_sentiment(tmp / "toy.jsonl", 240)),
        "train_size": 0,
        "test_size": 0,
        "local_steps": 4,
        "lr": 0.02,
        "max_seq_len": 16,
        "memory_budget": "off",
        "edge_threads": 1,
        "strategy": strategy,
        "seed": 3,
        "bundle_cache": str(cache),
        "out": str(out),
        "progress": "false",
        "broker": "mosquitto",
        "join_timeout_s": 120,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "fedhft", "simulate", *(f"{k}={v}" for k, v in settings.items())],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def _inprocess_run(run: Path):
    from simulate import Example, InProcessEngine, devices_for, encode_examples, load_sim_config

    cfg = load_sim_config(run / "config.yaml")
    results = json.loads((run / "results.json").read_text())
    tiers, backends = results["tier_of_client"], results["backend_of_tier"]
    files = {c: run / "data" / f"{c}.jsonl" for c in tiers}
    tier0 = tiers[sorted(tiers)[0]]
    test = [Example(**json.loads(line)) for line in (run / "data" / "test.jsonl").read_text().splitlines()]
    test_set = encode_examples(run / "bundles" / tier0 / backends[tier0] / "tokenizer.json", test, cfg.max_seq_len)
    engine = InProcessEngine(
        cfg, devices_for(files, tiers, backends), run / "bundles", test=test_set, say=lambda line: None
    )
    return engine.run(), results


def _without(d: dict, keys: set) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bundle-cache")


@pytest.mark.parametrize("strategy", ["fedhft", "hetlora"])
def test_both_engines_commit_the_same_states_and_metrics(tmp_path, cache, strategy):
    from simulate._monitor import client_rounds
    from server import read_tensors

    run = _mqtt_run(tmp_path, cache, strategy)
    result, mqtt = _inprocess_run(run)
    assert not result.interrupted and len(result.rounds) == len(mqtt["rounds"]) == 3
    for idx, (want, got) in enumerate(zip(mqtt["rounds"], result.rounds)):
        state, _ = read_tensors(run / "server" / "states" / f"global-r{idx:05d}.safetensors")
        assert sorted(state) == sorted(result.states[idx])
        for name, value in state.items():
            np.testing.assert_allclose(result.states[idx][name], value, rtol=1e-4, atol=1e-5, err_msg=name)
        assert _without(got, TIMING | {"bytes_down"}) == _without(want, TIMING | {"bytes_down"})
        assert abs(got["bytes_down"] - want["bytes_down"]) <= DEADLINE_DIGITS * want["selected"]
        assert got["stored"] == 3 and got["accuracy"] is not None
    records = {(r["round"], r["client"]): r for r in client_rounds(run / "server")}
    assert sorted(records) == sorted((r["round"], r["client"]) for r in result.records)
    for r in result.records:
        want = records[(r["round"], r["client"])]
        assert _without(r, {"metrics"}) == _without(want, {"metrics"})
        assert _without(r["metrics"], TIMING) == _without(want["metrics"], TIMING)

"""Server faults: the server SIGKILLs itself (``FEDHFT_FAULT``, server/_faults.py) at five points
of a round, is restarted on the same state dir, and the run must end exactly as an uninterrupted
run does.

Clients here are scripted peers (``server._synthetic.ScriptedPeer``, real MQTT connections with
deterministic synthetic updates), not `fedhft edge` processes: the equality check needs updates
that are the same bytes in every run, and real training is not bit-reproducible across processes.
Aggregation order may differ after a restart (stored updates are re-fed in client order), so the
states are compared with a float tolerance far below one update's contribution.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess

import numpy as np
import pytest

from server import ScriptedPeer
from tests._require import require

from .harness import SEED, StateView, read_state, server_yaml

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

ROUNDS = 3
CLIENTS = {"dev-000": ("android-low", 0.0), "dev-001": ("android-high", 0.5), "dev-002": ("jetson-orin-nano", 1.0)}
# (point, occurrence): round 1 for the round-level points; the 2nd intake batch that stores updates
# (each peer answers at its own delay, so a round's updates usually come in separate batches).
FAULTS = [("before_tasks", 2), ("after_publish", 2), ("intake", 2), ("aggregate", 2), ("write_state", 2)]


def _run(tmp, bundles, fleet, broker, procs, fault: str | None):
    cfg = server_yaml(
        tmp / "server.yaml",
        bundles,
        rounds=ROUNDS,
        clients_per_round=3,
        min_clients=3,
        quorum=1.0,
        strategy="fedhft",
        warmup_rounds=1,
    )
    state = tmp / "state"
    peers = [
        ScriptedPeer(broker.url, fleet.fleet, c, fleet.device(c).password, tier_hint=t, seed=SEED, delay_s=d).start()
        for c, (t, d) in CLIENTS.items()
    ]
    snapshot = None
    try:
        srv = procs.server(cfg, broker.url, state, fleet, env={"FEDHFT_FAULT": fault} if fault else None)
        if fault:
            rc = _wait_exit(srv, 120)
            assert rc == -signal.SIGKILL, f"the fault {fault} was never reached (exit {rc})\n{srv.tail()}"
            snapshot = _snapshot(state)
            srv = procs.server(cfg, broker.url, state, fleet)
        rc = _wait_exit(srv, 180)
        assert rc == 0, srv.tail()
    finally:
        for p in peers:
            p.stop()
    return state, snapshot, peers


def _wait_exit(proc, timeout: float) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"server still running after {timeout}s\n{proc.tail()}") from None


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(state) -> dict:
    v = StateView(state)
    return {
        "committed": {r: (_sha(v.file_of(r, "global")), _sha(v.file_of(r, "strategy"))) for r in v.committed()},
        "updates": {(u["round"], u["client"]): u["digest"] for u in v.updates()},
        "rounds": {r["idx"]: r["state"] for r in v.rounds()},
    }


def _globals(state) -> list[dict]:
    v = StateView(state)
    return [read_state(v.file_of(r)) for r in v.committed()]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, bundles):
    """The same job, uninterrupted: its committed global states."""
    from server.broker import MosquittoBroker, fleet_init

    require("mosquitto")
    from .harness import FLEET, Proc, server_cmd

    tmp = tmp_path_factory.mktemp("baseline")
    fleet = fleet_init(tmp / "fleet", len(CLIENTS), fleet=FLEET)

    class _Procs:  # the module fixture cannot use the function-scoped `procs`
        started: list = []

        def server(self, cfg, url, state, fleet, env=None):
            p = Proc("server", server_cmd(cfg, url, state, fleet), tmp / f"server-{len(self.started)}.log", env)
            self.started.append(p)
            return p

    with MosquittoBroker(fleet) as broker:
        runner = _Procs()
        try:
            state, _, _ = _run(tmp, bundles, fleet, broker, runner, None)
        finally:
            for p in runner.started:
                p.stop()
    assert StateView(state).committed() == list(range(ROUNDS))
    return _globals(state)


@pytest.mark.parametrize("point,n", FAULTS, ids=[f"{p}" for p, _ in FAULTS])
def test_server_killed_at_a_point_of_a_round_resumes_to_the_uninterrupted_result(
    tmp_path, bundles, broker_for, procs, baseline, figures, point, n
):
    fleet, broker = broker_for(len(CLIENTS))
    state, before, peers = _run(tmp_path, bundles, fleet, broker, procs, f"{point}:{n}")
    figures.add(faults_injected=1)
    v = StateView(state)
    # Where the kill landed (the point was reached where it should be).
    if point == "before_tasks":
        assert before["rounds"].get(1) == "open" and 1 not in before["committed"]
    elif point in ("aggregate", "write_state"):
        assert before["rounds"].get(1) == "closed" and set(before["committed"]) == {0}
    elif point == "intake":
        assert before["updates"], "the intake kill came before any update was stored"

    # No committed round lost or rewritten.
    assert v.committed() == list(range(ROUNDS)), v.rounds()
    for r, digests in before["committed"].items():
        assert (_sha(v.file_of(r, "global")), _sha(v.file_of(r, "strategy"))) == digests, f"round {r} rewritten"
    # No stored update lost; each (round, client) stored once, and counted once per round.
    after = {(u["round"], u["client"]): u["digest"] for u in v.updates()}
    for key, digest in before["updates"].items():
        assert after.get(key) == digest, f"update {key} lost or replaced by the restart"
    expected = {(r, c) for r in range(ROUNDS) for c in CLIENTS}
    assert set(after) == expected
    stored = [v.metrics(r)["stored"] for r in range(ROUNDS)]
    assert stored == [len(CLIENTS)] * ROUNDS
    assert not v.rejections(), v.rejections()
    # Every peer saw each round's task once per task id (a resumed round re-sends the SAME task).
    for p in peers:
        assert len({t.task_id for t in p.tasks}) == ROUNDS
    # The final global states equal the uninterrupted run's (nothing lost, nothing counted twice).
    got = _globals(state)
    max_diff = 0.0
    for r, (g, w) in enumerate(zip(got, baseline)):
        assert sorted(g) == sorted(w)
        for k in w:
            np.testing.assert_allclose(g[k], w[k], rtol=1e-5, atol=1e-6, err_msg=f"round {r} tensor {k}")
            max_diff = max(max_diff, float(np.max(np.abs(g[k] - w[k]), initial=0.0)))
    figures.add(
        rounds_completed=ROUNDS,
        updates_stored=len(after),
        updates_lost=len(expected - set(after)),
        updates_double_counted=sum(stored) - len(after),
    )
    figures.details.setdefault("server_faults", {})[point] = {
        "killed_in_round_state": before["rounds"],
        "committed_before_kill": sorted(before["committed"]),
        "updates_stored_before_kill": len(before["updates"]),
        "max_abs_diff_vs_uninterrupted": max_diff,
    }

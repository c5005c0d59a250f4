"""Broker faults: Mosquitto restarted twice during a run of real `fedhft edge` processes and the
`fedhft server`:

1. the server dies right after publishing round 1's tasks (FEDHFT_FAULT=after_publish:2); the edges
   train and publish their updates, which the broker queues for the server's persistent session
   (and the edges re-send the same bytes every 5 s while no ack comes: duplicates on purpose);
2. the broker restarts (SIGTERM: its persistence file keeps the queue), then the server restarts
   and receives the queued QoS 1 updates: each is stored once, the copies are deduplicated;
3. mid-round 2 (two updates stored, the third device stalled by SIGSTOP) the broker restarts again
   while everyone is connected: server and edges reconnect by themselves and the round completes.
"""

from __future__ import annotations

import json
import signal
from collections import Counter

import pytest

from .harness import StateView, server_yaml, wait_for, write_toy_data

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

EDGES = {"dev-000": "android-low", "dev-001": "android-high", "dev-002": "jetson-orin-nano"}


def _sent(proc, rnd: int) -> list[dict]:
    return [e for e in proc.events() if e.get("event") == "update_sent" and e.get("round") == rnd]


def test_broker_restarts_mid_round_nothing_lost_nothing_twice(tmp_path, bundles, broker_for, procs, figures):
    fleet, broker = broker_for(len(EDGES))
    cfg = server_yaml(
        tmp_path / "server.yaml",
        bundles,
        rounds=3,
        clients_per_round=3,
        min_clients=3,
        quorum=1.0,
        round_deadline_s=300,
    )
    state = tmp_path / "state"
    v = StateView(state)
    srv = procs.server(cfg, broker.url, state, fleet, env={"FEDHFT_FAULT": "after_publish:2"})
    edges = {
        c: procs.edge(
            broker.url,
            fleet,
            c,
            write_toy_data(tmp_path / f"{c}.csv", 40, i),
            tmp_path / f"e-{c}",
            bundles,
            f"tier={t}",
            "memory_budget_mb=4000",
        )
        for i, (c, t) in enumerate(EDGES.items())
    }
    everyone = list(edges.values())

    # 1. Round 0 completes; the server dies with round 1's tasks out.
    assert srv.wait(300) == -signal.SIGKILL, srv.tail()
    assert v.committed() == [0] and v.round_state(1) == "open"
    figures.add(faults_injected=1)
    for c, p in edges.items():  # the updates wait in the broker for the server's session; re-sent meanwhile
        wait_for(
            lambda p=p: len(_sent(p, 1)) >= 2, 180, f"{c} sent its round-1 update twice", procs=[p], must_live=everyone
        )

    # 2. Broker restart with the updates queued, then the server comes back. dev-002 is stalled
    #    (SIGSTOP, connection open) once it has reconnected, so that round 2 stays open for step 3.
    broker.restart()
    figures.add(faults_injected=1)
    wait_for(
        lambda: sum(e.get("event") == "mqtt_connected" for e in edges["dev-002"].events()) >= 2,
        120,
        "dev-002 reconnected after the broker restart",
        procs=[edges["dev-002"]],
        must_live=everyone,
    )
    edges["dev-002"].send(signal.SIGSTOP)
    stopped = True
    try:
        srv = procs.server(tmp_path / "server.yaml", broker.url, state, fleet)
        wait_for(
            lambda: 1 in v.committed(),
            180,
            "round 1 committed from the queued updates",
            procs=everyone,
            must_live=[srv],
        )
        assert sorted(u["client"] for u in v.updates(1)) == sorted(EDGES)

        # 3. Mid-round 2: two stored, dev-002 stalled; the broker restarts under everyone's feet.
        wait_for(
            lambda: v.status(2).get("dev-000") == "stored" and v.status(2).get("dev-001") == "stored",
            180,
            "round 2 open with dev-000 and dev-001 stored",
            procs=everyone,
            must_live=[srv],
        )
        assert v.status(2).get("dev-002") == "tasked"
        broker.restart()
        figures.add(faults_injected=2)  # the broker restart and the stall
        edges["dev-002"].send(signal.SIGCONT)
        stopped = False
        assert srv.wait(300) == 0, srv.tail()
    finally:
        if stopped:
            edges["dev-002"].send(signal.SIGCONT)

    assert v.committed() == [0, 1, 2]
    per = Counter((u["round"], u["client"]) for u in v.updates())
    assert per == Counter({(r, c): 1 for r in range(3) for c in EDGES})
    assert [v.metrics(r)["stored"] for r in range(3)] == [3, 3, 3]
    assert not v.rejections(), v.rejections()
    # Each edge's checkpoint: every round acked, with the digest the server stored.
    stored = {(u["round"], u["client"]): u["digest"] for u in v.updates()}
    copies = 0
    for c, p in edges.items():
        wait_for(
            lambda p=p: sum(e.get("event") == "round_acked" for e in p.events()) >= 3,
            120,
            f"{c} acked 3 rounds",
            procs=[p],
            must_live=[p],
        )
        rounds = {r["round"]: r for r in json.loads((tmp_path / f"e-{c}" / "state.json").read_text())["rounds"]}
        assert {r: rec["status"] for r, rec in rounds.items()} == {0: "acked", 1: "acked", 2: "acked"}
        assert all(rounds[r]["digest"] == stored[(r, c)] for r in range(3))
        copies += sum(len(_sent(p, r)) for r in range(3))
    figures.add(
        rounds_completed=3,
        updates_stored=len(stored),
        updates_lost=9 - len(stored),
        updates_double_counted=sum(v.metrics(r)["stored"] for r in range(3)) - len(stored),
    )
    figures.details["broker_faults"] = {
        "broker_restarts": 2,
        "update_copies_sent": copies,
        "updates_stored": len(stored),
    }


def test_broker_crash_mid_round_loses_no_update(tmp_path, bundles, broker_for, procs, figures):
    """Mosquitto SIGKILLed mid-round (what it queued since its last autosave is gone) and started
    again: the stored updates are safe in the server's SQLite (acked only after the commit), the
    device still owing its update publishes it after reconnecting, and the round completes."""
    import time

    from fedhft.protocol import encode
    from server import ScriptedPeer, synthetic_update

    from .harness import FLEET, SEED

    def late_in_round_1(task):
        if task.round == 1:
            time.sleep(10.0)  # still owed when the broker dies
        return encode(synthetic_update(task, SEED))

    fleet, broker = broker_for(len(EDGES))
    cfg = server_yaml(
        tmp_path / "server.yaml",
        bundles,
        rounds=2,
        clients_per_round=3,
        min_clients=3,
        quorum=1.0,
        round_deadline_s=300,
    )
    state = tmp_path / "state"
    v = StateView(state)
    peers = {
        c: ScriptedPeer(
            broker.url,
            FLEET,
            c,
            fleet.device(c).password,
            tier_hint=t,
            seed=SEED,
            make_payload=late_in_round_1 if c == "dev-002" else None,
        ).start()
        for c, t in EDGES.items()
    }
    try:
        srv = procs.server(cfg, broker.url, state, fleet)
        wait_for(
            lambda: v.status(1).get("dev-000") == "stored" and v.status(1).get("dev-001") == "stored",
            120,
            "round 1 open with two updates stored",
            must_live=[srv],
        )
        assert v.status(1)["dev-002"] == "tasked"
        broker.restart(hard=True)
        figures.add(faults_injected=1)
        assert srv.wait(180) == 0, srv.tail()
    finally:
        for p in peers.values():
            p.stop()
    assert v.committed() == [0, 1]
    per = Counter((u["round"], u["client"]) for u in v.updates())
    assert per == Counter({(r, c): 1 for r in range(2) for c in EDGES})
    assert [v.metrics(r)["stored"] for r in range(2)] == [3, 3]
    assert not v.rejections(), v.rejections()
    figures.add(rounds_completed=2, updates_stored=len(per), updates_lost=6 - len(per))

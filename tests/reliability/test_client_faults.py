"""Client faults: 30% of a 10-client fleet SIGKILLed mid-round, restarted later; a stalled client
(SIGSTOP) declared offline through keepalive and its Last Will.

The fleet: 4 real `fedhft edge` processes (tiny torch bundles pre-provisioned with bundle_dir=)
and 6 scripted devices, each its own process (tests/reliability/peer.py: real MQTT connections,
synthetic updates; a 2-core CI machine cannot start 10 torch processes in a reasonable time).
The victims: 2 edges, killed as soon as they have persisted their round-0 task, and 1 scripted
device, killed while it waits to answer.
"""

from __future__ import annotations

import signal
import sys
from collections import defaultdict

import pytest

from .harness import FLEET, SEED, StateView, server_yaml, wait_for, write_toy_data

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

EDGES = {
    "dev-000": "android-low",
    "dev-001": "android-high",
    "dev-002": "jetson-orin-nano",
    "dev-003": "jetson-orin-nano",
}
PEERS = {
    "dev-004": "android-low",
    "dev-005": "android-high",
    "dev-006": "jetson-orin-nano",
    "dev-007": "android-low",
    "dev-008": "android-high",
    "dev-009": "jetson-orin-nano",
}
VICTIM_EDGES = ("dev-001", "dev-002")
VICTIM_PEER = "dev-009"
VICTIMS = (*VICTIM_EDGES, VICTIM_PEER)


def _peer_cmd(broker, fleet, client, tier, delay=0.0):
    return [
        sys.executable,
        "-m",
        "tests.reliability.peer",
        "--url",
        broker.url,
        "--fleet",
        FLEET,
        "--client",
        client,
        f"--password={fleet.device(client).password}",
        "--tier",
        tier,
        "--seed",
        str(SEED),
        "--delay",
        str(delay),
    ]


def _got_task(proc, rnd: int) -> bool:
    return any(e.get("event") == "task" and e.get("round") == rnd for e in proc.events())


def _digests_per_client_round(v: StateView) -> dict:
    seen = defaultdict(set)
    for u in v.updates():
        seen[(u["round"], u["client"])].add(u["digest"])
    for r in v.rejections():
        if r["round"] is not None and r["digest"]:
            seen[(r["round"], r["client"])].add(r["digest"])
    return seen


def test_thirty_percent_killed_mid_round_then_rejoin(tmp_path, bundles, broker_for, procs, figures):
    fleet, broker = broker_for(len(EDGES) + len(PEERS))
    n = len(EDGES) + len(PEERS)
    cfg = server_yaml(
        tmp_path / "server.yaml",
        bundles,
        rounds=2,
        clients_per_round=n,
        min_clients=n,
        quorum=0.7,
        round_deadline_s=300,
    )
    state = tmp_path / "state"
    v = StateView(state)
    srv = procs.server(cfg, broker.url, state, fleet)
    data = {c: write_toy_data(tmp_path / f"{c}.csv", 40, i) for i, c in enumerate(EDGES)}

    def start_edge(c):
        return procs.edge(
            broker.url, fleet, c, data[c], tmp_path / f"edge-{c}", bundles, f"tier={EDGES[c]}", "memory_budget_mb=4000"
        )

    edges = {c: start_edge(c) for c in EDGES}
    peers = {
        c: procs.run(c, _peer_cmd(broker, fleet, c, t, delay=600.0 if c == VICTIM_PEER else 0.0))
        for c, t in PEERS.items()
    }
    everyone = [*edges.values(), *peers.values()]

    # Round 0 opens with all 10; the victims die mid-round, before they upload anything.
    wait_for(lambda: len(v.tasks(0)) == n, 240, "round 0 opened with all 10 clients", procs=everyone, must_live=[srv])
    peers[VICTIM_PEER].stop(signal.SIGKILL)
    for c in VICTIM_EDGES:
        wait_for(
            lambda c=c: _got_task(edges[c], 0),
            240,
            f"{c} persisted its round-0 task",
            procs=[edges[c]],
            must_live=[srv, edges[c]],
            every=0.05,
        )
        edges[c].stop(signal.SIGKILL)
    figures.add(faults_injected=len(VICTIMS))
    killed_before_upload = {c: v.status(0).get(c) for c in VICTIMS}
    assert set(killed_before_upload.values()) == {"tasked"}, killed_before_upload

    # The round closes at quorum; every survivor's update is stored and counted.
    survivors = sorted((set(EDGES) | set(PEERS)) - set(VICTIMS))
    wait_for(lambda: 0 in v.committed(), 300, "round 0 committed", procs=everyone, must_live=[srv])
    m0 = v.metrics(0)
    assert m0["closed_by"] == "quorum", m0
    assert sorted(c for c, s in v.status(0).items() if s == "stored") == survivors
    assert {c: v.status(0)[c] for c in VICTIMS} == {c: "dropped" for c in VICTIMS}
    assert m0["stored"] == len(survivors) == len(v.updates(0))

    # The victims come back (same state dirs): they rejoin and are tasked again in round 1.
    for c in VICTIM_EDGES:
        edges[c] = start_edge(c)
    peers[VICTIM_PEER] = procs.run(VICTIM_PEER, _peer_cmd(broker, fleet, VICTIM_PEER, PEERS[VICTIM_PEER]))
    everyone = [*edges.values(), *peers.values()]
    assert srv.wait(300) == 0, srv.tail()
    assert v.committed() == [0, 1]
    assert set(v.tasks(1)) == set(EDGES) | set(PEERS), "a restarted client did not rejoin"
    m1 = v.metrics(1)
    assert m1["stored"] == len(v.updates(1)) >= 7
    # Never two different uploads for one client and round (store + every rejection recorded).
    two = {k: d for k, d in _digests_per_client_round(v).items() if len(d) > 1}
    assert not two, two
    # A restarted edge retrains its interrupted round-0 task (persisted before the kill): a late upload
    # that reaches the server is refused, never stored; every copy it sends of a round is the same bytes.
    for c in VICTIM_EDGES:
        late = [r for r in v.rejections(0) if r["client"] == c]
        assert {r["reason"] for r in late} <= {"replay", "round_closed"}, late
        assert c not in {u["client"] for u in v.updates(0)}
        uploads = lambda c=c: [e for e in edges[c].events() if e.get("event") == "update_sent"]  # noqa: E731
        wait_for(
            lambda: {e["round"] for e in uploads()} >= {0, 1},
            240,
            f"{c} uploaded rounds 0 and 1",
            procs=[edges[c]],
            must_live=[edges[c]],
        )
        sent = defaultdict(set)
        for e in uploads():
            if e.get("event") == "update_sent":
                sent[e["round"]].add(e["digest"])
        assert sent and all(len(d) == 1 for d in sent.values()), dict(sent)
        assert edges[c].alive, edges[c].tail()
    stored0 = {u["client"] for u in v.updates(0)}
    figures.add(rounds_completed=2, updates_stored=len(v.updates()), updates_lost=len(set(survivors) - stored0))
    figures.details["client_faults"] = {
        "clients": n,
        "killed": list(VICTIMS),
        "round0": {k: m0[k] for k in ("closed_by", "stored", "dropped")},
        "round1": {k: m1[k] for k in ("closed_by", "stored", "rejections")},
    }


def test_stalled_client_is_declared_offline_by_keepalive_and_last_will(tmp_path, bundles, broker_for, procs, figures):
    fleet, broker = broker_for(2)
    cfg = server_yaml(tmp_path / "server.yaml", bundles, rounds=1, min_clients=2)  # one device: no round starts
    state = tmp_path / "state"
    v = StateView(state)
    srv = procs.server(cfg, broker.url, state, fleet)
    c = "dev-000"
    edge = procs.edge(
        broker.url,
        fleet,
        c,
        write_toy_data(tmp_path / "d.csv", 20, 0),
        tmp_path / "edge",
        bundles,
        "tier=android-low",
        "keepalive=2",
    )
    online = lambda: v.clients().get(c, {}).get("online") == 1  # noqa: E731
    wait_for(online, 120, f"{c} registered online", procs=[edge], must_live=[srv, edge])
    edge.send(signal.SIGSTOP)  # alive, holding its connection, silent: only keepalive can tell
    figures.add(faults_injected=1)
    try:
        wait_for(
            lambda: v.clients()[c]["state"] == "offline" and v.clients()[c]["online"] == 0,
            60,
            f"{c} declared offline (Last Will after 1.5 x keepalive)",
            must_live=[srv],
        )
    finally:
        edge.send(signal.SIGCONT)
    wait_for(online, 60, f"{c} back online after SIGCONT (reconnect + status)", procs=[edge], must_live=[srv, edge])
    assert edge.stop() == 0, edge.tail()
    wait_for(lambda: v.clients()[c]["online"] == 0, 30, "clean stop reported offline", must_live=[srv])

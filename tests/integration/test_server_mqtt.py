"""The server over a real Mosquitto (fleet-init config: auth, ACL, max_packet_size) with real tiny
bundles and scripted client peers of three tiers (synthetic numpy updates, no training).

* every strategy runs 3 rounds and its committed global state equals the strategy's own
  aggregator fed the same updates directly;
* bad updates sent through the broker are rejected with their reasons while the round goes on;
* bundles are served in chunks that reassemble to the exported files;
* kill -9 mid-round + restart on the same state dir loses nothing and counts nothing twice.
"""

from __future__ import annotations

import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from devices import AdapterPlan
from fedhft.mqtt import DEFAULT_MAX_PACKET_SIZE
from fedhft.protocol import BundleChunk, BundleRequest, ChunkAssembler, Task, Update, decode, encode
from server import (
    STRATEGIES,
    Auth,
    BundleIndex,
    ScriptedPeer,
    Store,
    assignment_digest,
    build_strategy,
    load_server_config,
    read_tensors,
    run_server,
    synthetic_update,
)
from tests._helpers import wait_for
from tests._require import require

pytestmark = [
    pytest.mark.integration,
    pytest.mark.requires("mosquitto"),
]

TIERS = {  # the tiny test model has 2 layers
    "small": AdapterPlan(depth=1, ranks=(2,), mask_density=0.25, batch_size=4, max_seq_len=16),
    "medium": AdapterPlan(depth=2, ranks=(2, 4), mask_density=0.5, batch_size=4, max_seq_len=16),
    "large": AdapterPlan(depth=2, ranks=(4, 4), mask_density=1.0, batch_size=4, max_seq_len=16),
}
TIER_OF = {"dev-000": "small", "dev-001": "medium", "dev-002": "large"}
SEED = 5


@pytest.fixture(scope="session")
def tiny_bundles(tmp_path_factory) -> Path:
    """One real torch bundle per tier of the tiny model (export is allowed in tests, not in server/)."""
    require("torch")
    from export import export_bundle

    out = tmp_path_factory.mktemp("bundles")
    for tier, plan in TIERS.items():
        export_bundle("tiny", 2, tier, plan, "torch", out, progress=lambda _: None)
    return out


def _config(tmp_path: Path, bundles: Path, **kw):
    settings = {
        "fleet": "test",
        "bundles_dir": str(bundles),
        "rounds": 3,
        "clients_per_round": 3,
        "min_clients": 3,
        "round_deadline_s": 60,
        "update_encoding": "fp16",
        "norm_bound": 100.0,
        "seed": SEED,
        "max_packet_size": DEFAULT_MAX_PACKET_SIZE,
        **kw,
    }
    path = tmp_path / "server.yaml"
    path.write_text("\n".join(f"{k}: {v}" for k, v in settings.items()) + "\n")
    return path, load_server_config(path)


def _peers(broker, fleet, **per_client) -> dict[str, ScriptedPeer]:
    peers = {}
    for cid, tier in TIER_OF.items():
        kw = per_client.get(cid, {})
        peers[cid] = ScriptedPeer(
            broker.url, fleet.fleet, cid, fleet.device(cid).password, tier_hint=tier, seed=SEED, **kw
        ).start()
    return peers


class ServerThread:
    """run_server on a thread (same process: fast); stop() ends it like SIGTERM would."""

    def __init__(self, config, url, state, fleet):
        self.stop_event, self.result = threading.Event(), {}
        auth = Auth(fleet.server.username, fleet.server.password)
        self.thread = threading.Thread(
            target=lambda: self.result.setdefault("rounds", run_server(config, url, state, auth, self.stop_event)),
            daemon=True,
        )

    def __enter__(self):
        self.thread.start()
        return self

    def wait(self, timeout: float) -> int:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"server did not finish within {timeout}s"
        return self.result["rounds"]

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join(30)


def _tasks(peers) -> dict[tuple[int, str], Task]:
    return {(t.round, t.client): t for p in peers.values() for t in p.tasks}


def _replay(config, state: Path, tasks: dict[tuple[int, str], Task]) -> list[dict]:
    """The strategy's own math on the same updates, without server, broker or store."""
    bundles = BundleIndex.scan(config.bundles_dir)
    strategy = build_strategy(config, bundles)
    store = Store(state, readonly=True)
    states = []
    for rec in store.rounds():
        trecs = store.tasks(rec.idx)
        infos = [bundles.client_info(t.client, t.tier) for t in trecs]
        assigns = strategy.configure(rec.idx, infos, np.random.default_rng(rec.salt))
        agg = strategy.aggregator(rec.idx)
        for info, t in zip(infos, trecs):
            assert assignment_digest(assigns[t.client]) == t.assignment_digest
            if t.status != "stored":
                continue
            update = decode(encode(synthetic_update(tasks[(rec.idx, t.client)], SEED)))  # the wire's fp16 rounding
            agg.add(info, assigns[t.client], update.tensors, float(max(1, update.num_examples)))
        done = agg.finish()
        states.append(
            {
                **done.global_state,
                **{f"cluster{k}/{n}": v for k, c in enumerate(done.cluster_states) for n, v in c.items()},
            }
        )
    store.close()
    return states


def _assert_matches_replay(config, state: Path, tasks) -> None:
    want = _replay(config, state, tasks)
    store = Store(state, readonly=True)
    got = [
        {
            **read_tensors(store.path(r.global_file))[0],
            **(
                {k: v for k, v in read_tensors(store.path(r.clusters_file))[0].items() if k != "cluster_weights"}
                if r.clusters_file
                else {}
            ),
        }
        for r in store.rounds()
    ]
    store.close()
    assert len(got) == len(want) == config.rounds
    for r, (g, w) in enumerate(zip(got, want)):
        assert sorted(g) == sorted(w)
        for k in w:
            np.testing.assert_allclose(g[k], w[k], rtol=1e-5, atol=1e-6, err_msg=f"round {r} {k}")
    # the committed state moved every round (the updates were really aggregated; local-only's per-client
    # models are its cluster states)
    for prev, cur in zip(got, got[1:]):
        assert any(not np.allclose(prev[k], cur[k]) for k in cur if k in prev)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_strategy_runs_three_rounds_over_mosquitto(tmp_path, tiny_bundles, mosquitto, fleet, strategy):
    _, config = _config(tmp_path, tiny_bundles, strategy=strategy, warmup_rounds=1)
    peers = _peers(mosquitto, fleet)
    try:
        with ServerThread(config, mosquitto.url, tmp_path / "state", fleet) as server:
            assert server.wait(60) == 3
            # The last round's Ack messages are published after its commit: let them arrive
            # before the peers disconnect (under load they trail the commit by a moment).
            deadline = time.monotonic() + 30
            while sum(len(p.acks) for p in peers.values()) < 9 and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        for p in peers.values():
            p.stop()
    store = Store(tmp_path / "state", readonly=True)
    assert [r.state for r in store.rounds()] == ["committed"] * 3
    assert all(r.metrics["stored"] == 3 for r in store.rounds())
    assert store.rounds()[-1].metrics["accuracy_by_tier"].keys() == set(TIERS)
    store.close()
    acks = [a for p in peers.values() for a in p.acks]
    assert len(acks) == 9 and {a.status for a in acks} == {"stored"}
    _assert_matches_replay(config, tmp_path / "state", _tasks(peers))


def _truncated_then_honest(peer_box):
    def make(task: Task):
        good = encode(synthetic_update(task, SEED))
        peer_box[0].publish_update(good[:-5])  # garbled in transit: rejected, not final
        return good

    return make


def _nan_update(task: Task) -> bytes:
    u = synthetic_update(task, SEED)
    bad = dict(u.tensors, **{"head.bias": np.array([np.nan, 0.0], np.float32)})
    return encode(Update(u.fleet, u.client, u.round, u.task_id, u.num_examples, u.metrics, u.encoding, bad))


def _wrong_fleet_then_honest(peer_box):
    def make(task: Task):
        u = synthetic_update(task, SEED)
        other = Update("elsewhere", u.client, u.round, u.task_id, u.num_examples, u.metrics, u.encoding, u.tensors)
        peer_box[0].publish_update(encode(other))
        return encode(u)

    return make


def test_bad_updates_are_rejected_and_the_round_goes_on(tmp_path, tiny_bundles, mosquitto, fleet):
    _, config = _config(tmp_path, tiny_bundles, strategy="fedavg-lora", rounds=1)
    box0, box2 = [], []
    peers = _peers(
        mosquitto,
        fleet,
        **{
            "dev-000": {"make_payload": _truncated_then_honest(box0)},
            "dev-001": {"make_payload": _nan_update},
            "dev-002": {"make_payload": _wrong_fleet_then_honest(box2)},
        },
    )
    box0.append(peers["dev-000"])
    box2.append(peers["dev-002"])
    try:
        with ServerThread(config, mosquitto.url, tmp_path / "state", fleet) as server:
            assert server.wait(60) == 1
        deadline = time.time() + 5
        while time.time() < deadline and len(peers["dev-001"].acks) < 1:
            time.sleep(0.05)
    finally:
        for p in peers.values():
            p.stop()
    store = Store(tmp_path / "state", readonly=True)
    m = store.round(0).metrics
    assert (m["stored"], m["rejected_clients"]) == (2, 1)
    assert m["rejections"] == {"non_finite": 1, "truncated": 1, "wrong_fleet": 1}
    assert {r["client"]: r["reason"] for r in store.rejections(0) if r["reason"] == "non_finite"} == {
        "dev-001": "non_finite"
    }
    store.close()
    rejected = [a for a in peers["dev-001"].acks if a.status == "rejected"]
    assert rejected and rejected[0].reason.startswith("non_finite")


def test_bundle_is_served_in_chunks_over_the_broker(tmp_path, tiny_bundles, mosquitto, fleet):
    _, config = _config(tmp_path, tiny_bundles, strategy="hetlora", rounds=1, chunk_size=64 * 1024)
    peers = _peers(mosquitto, fleet, **{"dev-000": {"auto_answer": False}})
    try:
        with ServerThread(config, mosquitto.url, tmp_path / "state", fleet):
            deadline = time.time() + 20
            while not peers["dev-000"].tasks and time.time() < deadline:
                time.sleep(0.05)
            task = peers["dev-000"].tasks[0]
            peer = peers["dev-000"]
            peer.mqtt.publish(
                peer.topics.bundle_req("dev-000"), encode(BundleRequest("test", "dev-000", task.bundle_id)), qos=1
            )
            assembler = ChunkAssembler(tmp_path / "got", task.bundle_id)
            bundle_dir = tiny_bundles / task.tier / task.backend
            names = ["manifest.json", *[p.name for p in bundle_dir.iterdir() if p.name != "manifest.json"]]
            while not assembler.is_complete(names) and time.time() < deadline:
                try:
                    msg = peer.received.get(timeout=1)
                except queue.Empty:
                    continue
                if isinstance(msg, BundleChunk):
                    assembler.add(msg)
            peer.publish_update(encode(synthetic_update(task, SEED)))
    finally:
        for p in peers.values():
            p.stop()
    assert assembler.is_complete(names)
    for name in names:
        assert (tmp_path / "got" / name).read_bytes() == (bundle_dir / name).read_bytes()


def _server_proc(cfg: Path, url: str, state: Path, fleet) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "fedhft",
        "--log-level",
        "INFO",
        "server",
        "--broker",
        url,
        "--state",
        str(state),
        "--config",
        str(cfg),
        "--credentials",
        str(fleet.dir / "server.json"),
    ]
    log = open(state.parent / f"server-{time.time_ns()}.log", "wb")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _task_status(state: Path, idx: int) -> dict[str, str]:
    if not (state / "server.sqlite").exists():
        return {}
    store = Store(state, readonly=True)
    try:
        return {t.client: t.status for t in store.tasks(idx)}
    except sqlite3.OperationalError:  # the server has created the file but not its tables yet
        return {}
    finally:
        store.close()


def test_kill_9_mid_round_then_resume(tmp_path, tiny_bundles, mosquitto, fleet):
    cfg, config = _config(tmp_path, tiny_bundles, strategy="fedhft", warmup_rounds=1)
    state = tmp_path / "state"
    state.mkdir()
    silent_in_round_1 = {"make_payload": lambda t: None if t.round == 1 else encode(synthetic_update(t, SEED))}
    peers = _peers(mosquitto, fleet, **{"dev-001": silent_in_round_1, "dev-002": silent_in_round_1})
    proc = _server_proc(cfg, mosquitto.url, state, fleet)
    try:
        wait_for(lambda: _task_status(state, 1).get("dev-000") == "stored", 60, "dev-000's round-1 update stored")
        os.kill(proc.pid, signal.SIGKILL)  # mid-round: dev-001 and dev-002 still owe round 1
        proc.wait(10)
        store = Store(state, readonly=True)
        assert store.round(0).state == "committed" and store.round(1).state != "committed"
        store.close()
        assert _task_status(state, 1) == {"dev-000": "stored", "dev-001": "tasked", "dev-002": "tasked"}

        assert all(_round_tasks(peers[c], 1) == 1 for c in peers)
        proc = _server_proc(cfg, mosquitto.url, state, fleet)
        # the re-sent round-1 task reaches the two clients without a stored update (same task id)
        for c in ("dev-001", "dev-002"):
            wait_for(lambda c=c: _round_tasks(peers[c], 1) >= 2, 30, f"{c} re-tasked")
            first, *again = [m for m in list(peers[c].received.queue) if isinstance(m, Task) and m.round == 1]
            assert {t.task_id for t in again} == {first.task_id}
            task = first
            peers[c].publish_update(encode(synthetic_update(task, SEED)))
        assert proc.wait(90) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        for p in peers.values():
            p.stop()
    assert _round_tasks(peers["dev-000"], 1) == 1, "dev-000's update was stored: it must not be re-tasked"
    assert _round_tasks(peers["dev-000"], 2) == 1
    store = Store(state, readonly=True)
    assert [r.state for r in store.rounds()] == ["committed"] * 3
    assert [r.metrics["stored"] for r in store.rounds()] == [3, 3, 3]
    assert [len(list(store.iter_updates(i))) for i in range(3)] == [3, 3, 3]
    store.close()
    _assert_matches_replay(config, state, _tasks(peers))  # nothing lost, nothing counted twice


def _round_tasks(peer: ScriptedPeer, idx: int) -> int:
    """How many Task messages for round ``idx`` reached the peer (re-sent copies included)."""
    return sum(1 for m in list(peer.received.queue) if isinstance(m, Task) and m.round == idx)


def test_broker_restart_mid_round(tmp_path, tiny_bundles, mosquitto, fleet):
    """The broker goes down and comes back (same port, persistence): the server's persistent session
    and paho's reconnect carry the round on; nothing is lost or counted twice."""
    _, config = _config(tmp_path, tiny_bundles, strategy="hetlora", rounds=2)
    state = tmp_path / "state"
    silent_in_round_1 = {"make_payload": lambda t: None if t.round == 1 else encode(synthetic_update(t, SEED))}
    peers = _peers(mosquitto, fleet, **{"dev-001": silent_in_round_1, "dev-002": silent_in_round_1})
    try:
        with ServerThread(config, mosquitto.url, state, fleet) as server:
            wait_for(lambda: _task_status(state, 1).get("dev-000") == "stored", 30, "dev-000's round-1 update stored")
            mosquitto.restart()
            for c in ("dev-001", "dev-002"):
                wait_for(lambda c=c: peers[c].mqtt.is_connected(), 30, f"{c} reconnected")
                task = next(t for t in peers[c].tasks if t.round == 1)
                peers[c].publish_update(encode(synthetic_update(task, SEED)))
            assert server.wait(60) == 2
    finally:
        for p in peers.values():
            p.stop()
    store = Store(state, readonly=True)
    assert [r.metrics["stored"] for r in store.rounds()] == [3, 3]
    store.close()
    _assert_matches_replay(config, state, _tasks(peers))

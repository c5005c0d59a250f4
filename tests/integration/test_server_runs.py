"""Two server runs of one fleet on one Mosquitto. Each state dir is a run with its own broker
session: an update a device sent while run 1 was down stays in run 1's session (kept, for a
resume of run 1), run 2 never receives it, and a finished run ends its session."""

from __future__ import annotations

import time

import pytest

from fedhft.mqtt import DEFAULT_MAX_PACKET_SIZE
from fedhft.protocol import encode
from server import ScriptedPeer, Store, synthetic_update
from server._mqtt import server_client_id
from tests._helpers import wait_for
from tests.unit.server.server_fakes import TIER_OF, fake_bundles, make_config

from .test_server_mqtt import ServerThread

pytestmark = [pytest.mark.integration, pytest.mark.requires("mosquitto")]
SEED = 3


def _run_id(state) -> str:
    store = Store(state, readonly=True)
    try:
        return store.run_id()
    finally:
        store.close()


def _session_present(paho_client, broker, fleet, state) -> bool:
    cred = fleet.server
    cid = server_client_id(fleet.fleet, cred.username, cred.password, _run_id(state))
    probe = paho_client(broker.url, cred.username, cred.password, cid, clean_start=False)
    present = probe.connack[1]
    probe.close()
    return present


def test_a_new_state_dir_is_a_new_run_with_its_own_broker_session(tmp_path, mosquitto, fleet, paho_client):
    config = make_config(fake_bundles(tmp_path / "bundles"), rounds=1, max_packet_size=DEFAULT_MAX_PACKET_SIZE)
    peers = {
        c: ScriptedPeer(
            mosquitto.url, fleet.fleet, c, fleet.device(c).password, tier_hint=t, seed=SEED, auto_answer=c != "dev-001"
        ).start()
        for c, t in TIER_OF.items()
    }
    try:
        with ServerThread(config, mosquitto.url, tmp_path / "run1", fleet):
            wait_for(lambda: peers["dev-001"].tasks, 30, "run 1 tasks dev-001")
        old_task = peers["dev-001"].tasks[0]
        # Run 1 is down (stopped, not finished): what dev-001 sends now is queued in run 1's session.
        peers["dev-001"].publish_update(encode(synthetic_update(old_task, SEED + 1))).wait_for_publish(10)
        with ServerThread(config, mosquitto.url, tmp_path / "run2", fleet) as server:
            wait_for(lambda: len(peers["dev-001"].tasks) > 1, 30, "run 2 tasks dev-001")
            task = peers["dev-001"].tasks[-1]
            assert task.task_id != old_task.task_id and task.round == old_task.round
            answer = synthetic_update(task, SEED)
            peers["dev-001"].publish_update(encode(answer))
            assert server.wait(60) == 1
        deadline = time.monotonic() + 10  # the acks trail the commit
        while not peers["dev-001"].acks and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        for p in peers.values():
            p.stop()
    store = Store(tmp_path / "run2", readonly=True)
    assert store.rejections() == []  # run 1's queued update never reached run 2 (not even as stale_run)
    assert store.stored_digest(0, "dev-001") == answer.digest and store.round(0).metrics["stored"] == 3
    store.close()
    assert _run_id(tmp_path / "run1") != _run_id(tmp_path / "run2")
    assert _session_present(paho_client, mosquitto, fleet, tmp_path / "run1")  # kept: run 1 may resume
    assert not _session_present(paho_client, mosquitto, fleet, tmp_path / "run2")  # finished: ended

"""Task ids are unique per server run (a state dir), stable across a resume of the same one; an
update or outcome of another run is rejected ``stale_run``, recorded and acknowledged."""

from __future__ import annotations

import pytest

from fedhft.protocol import Ack, Outcome, Reason, decode, encode
from server import Store, synthetic_update
from server._task_ids import RUN_TAG_LEN, other_run, task_id_for, task_run_tag

from .server_fakes import Harness, fake_bundles, make_config


@pytest.fixture
def bundles(tmp_path):
    return fake_bundles(tmp_path / "bundles")


def _acks(h: Harness, client: str) -> list[Ack]:
    return [decode(p) for t, p, _ in h.transport.published if t.endswith(f"/{client}/ack")]


def test_run_id_is_made_once_per_state_dir(tmp_path):
    a = Store(tmp_path / "a")
    run = a.run_id()
    assert len(run) == 32 and a.run_id() == run
    a.close()
    assert Store(tmp_path / "a").run_id() == run  # kept across a restart on the same dir
    assert Store(tmp_path / "a", readonly=True).run_id() == run
    assert Store(tmp_path / "b").run_id() != run


def test_a_state_dir_from_before_run_ids_keeps_untagged_task_ids(tmp_path):
    old = Store(tmp_path / "old")
    from server import TaskRecord

    old.create_round(0, 1, 60.0, [TaskRecord(0, "dev-000", "r0-dev-000-80ef17fa1a", "small", "torch", "d")], 1.0)
    assert old.run_id() == "" and old.get_meta("run_id") == ""
    assert task_id_for(0, "dev-000", "80ef17fa1a" * 2, old.run_id()) == "r0-dev-000-80ef17fa1a"


def test_task_ids_differ_between_runs_and_carry_the_run_tag(tmp_path, bundles):
    config = make_config(bundles, rounds=1)  # the same seed: the same clients and assignments
    runs = []
    for name in ("run1", "run2"):
        h = Harness(tmp_path / name, config)
        h.join()
        runs.append((h.coord.run_id, {c: t.task_id for c, t in h.open_tasks().items()}))
    (run1, ids1), (run2, ids2) = runs
    assert sorted(ids1) == sorted(ids2) and not set(ids1.values()) & set(ids2.values())
    assert {task_run_tag(t) for t in ids1.values()} == {run1[:RUN_TAG_LEN]}
    assert {task_run_tag(t) for t in ids2.values()} == {run2[:RUN_TAG_LEN]}


def test_resume_on_the_same_state_dir_keeps_the_run_and_its_task_ids(tmp_path, bundles):
    config = make_config(bundles, rounds=1)
    h = Harness(tmp_path / "state", config)
    h.join()
    before = {c: t.task_id for c, t in h.open_tasks().items()}
    h.store.close()
    h2 = Harness(tmp_path / "state", config)
    h2.join()
    assert h2.coord.run_id == h.coord.run_id
    assert {t.client: t.task_id for t in h2.transport.tasks()} == before


def _two_runs(tmp_path, bundles):
    """Run 1 hands out round 0's tasks and dies; run 2 starts on a new state dir, same fleet and seed."""
    config = make_config(bundles, rounds=1)
    old = Harness(tmp_path / "run1", config)
    old.join()
    old_tasks = old.open_tasks()
    new = Harness(tmp_path / "run2", config)
    new.join()
    return old_tasks, new, new.open_tasks()


def test_an_update_of_another_run_is_rejected_stale_run_and_acked(tmp_path, bundles):
    old_tasks, h, tasks = _two_runs(tmp_path, bundles)
    stale = old_tasks["dev-001"]
    assert stale.round == tasks["dev-001"].round  # the same round number: only the run tells them apart
    mid = h.answer(stale)  # queued for run 1, delivered to run 2
    assert mid in h.transport.acked  # acknowledged: the broker must not redeliver it forever
    (rej,) = h.store.rejections()
    assert rej["reason"] == Reason.STALE_RUN and rej["task_id"] == stale.task_id
    assert "another server run" in rej["detail"]
    assert h.store.stored_digest(0, "dev-001") is None
    assert h.coord.round.status["dev-001"] == "tasked"  # not final: run 2 still waits for its own answer
    assert _acks(h, "dev-001")[-1].status == "rejected" and _acks(h, "dev-001")[-1].reason.startswith("stale_run")
    h.answer(tasks["dev-001"])
    assert h.store.stored_digest(0, "dev-001") is not None


def test_an_outcome_of_another_run_is_recorded_stale_run_and_acked(tmp_path, bundles):
    old_tasks, h, tasks = _two_runs(tmp_path, bundles)
    stale = old_tasks["dev-002"]
    mid = h.send("dev-002", "outcome", encode(Outcome("test", "dev-002", stale.round, stale.task_id, "over_budget")))
    assert mid in h.transport.acked
    assert [(r["reason"], r["task_id"]) for r in h.store.rejections()] == [("stale_run", stale.task_id)]
    assert h.coord.round.status["dev-002"] == "tasked"


def test_a_made_up_or_untagged_task_id_is_still_unknown_task(tmp_path, bundles):
    _, h, tasks = _two_runs(tmp_path, bundles)
    own = tasks["dev-000"]
    for task_id in (f"r0-dev-000-{'0' * 10}", f"r0-dev-000-{'0' * 10}.{h.coord.run_id[:RUN_TAG_LEN]}"):
        u = synthetic_update(own)
        forged = type(u)(u.fleet, u.client, u.round, task_id, u.num_examples, u.metrics, u.encoding, u.tensors)
        h.send("dev-000", "update", encode(forged))
    assert [r["reason"] for r in h.store.rejections()] == ["unknown_task", "unknown_task"]


@pytest.mark.parametrize(
    "task_id, run_id, stale",
    [
        ("r0-a-0123456789.abcdef01", "abcdef01" + "0" * 24, False),
        ("r0-a-0123456789.abcdef01", "12345678" + "0" * 24, True),
        ("r0-a-0123456789", "12345678" + "0" * 24, False),  # untagged: unknown_task or replay, decided later
        ("r0-a-0123456789.abcdef01", "", False),  # no run id to compare with (a pre-run-id state dir)
    ],
)
def test_other_run(task_id, run_id, stale):
    assert (other_run(task_id, run_id) is not None) is stale


def test_the_servers_mqtt_session_is_per_run():
    from server._mqtt import MqttTransport, server_client_id

    run1, run2 = "ab" * 16, "cd" * 16
    one = server_client_id("test", "server", "pw", run1)
    assert one == server_client_id("test", "server", "pw", run1)  # a resume gets its session back
    assert one != server_client_id("test", "server", "pw", run2) and one.endswith("-" + run1[:RUN_TAG_LEN])
    assert server_client_id("test", "server", "pw") == one[: -RUN_TAG_LEN - 1]  # a pre-run-id state dir
    transport = MqttTransport("mqtt://127.0.0.1:1", "test", "server", "pw", run_id=run1)
    assert transport.client._client_id.decode() == one


@pytest.mark.parametrize("protocol, end_session, expiry", [("5", True, 0), ("5", False, None), ("3.1.1", True, None)])
def test_a_finished_run_ends_its_broker_session(protocol, end_session, expiry):
    from server._mqtt import MqttTransport

    transport = MqttTransport("mqtt://127.0.0.1:1", "test", "server", "pw", run_id="ab" * 16, protocol=protocol)
    sent = []

    class _Paho:
        def disconnect(self, properties=None):
            sent.append(properties)

        def loop_stop(self):
            pass

    transport.client = _Paho()
    transport.close(end_session=end_session)
    assert (None if sent[0] is None else sent[0].SessionExpiryInterval) == expiry

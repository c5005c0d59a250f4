"""The coordinator on a fake transport: rounds, streaming aggregation, acks after storage, resume."""

from __future__ import annotations

import numpy as np
import pytest

from fedhft.protocol import Outcome, encode
from server import build_strategy, read_tensors, synthetic_update

from .server_fakes import Harness, fake_bundles, make_config


@pytest.fixture
def bundles(tmp_path):
    return fake_bundles(tmp_path / "bundles")


@pytest.mark.parametrize("strategy", ["fedavg-lora", "hetlora", "fedhft"])
def test_rounds_run_and_match_direct_aggregation(tmp_path, bundles, strategy):
    config = make_config(bundles, strategy=strategy, rounds=2)
    h = Harness(tmp_path / "state", config)
    h.join()
    direct = build_strategy(config, h.coord.bundles)
    for idx in range(2):
        tasks = h.open_tasks()
        assert sorted(tasks) == ["dev-000", "dev-001", "dev-002"] and h.coord.round.idx == idx
        # the direct twin sees the same clients and the same configure rng
        infos = [h.coord.round.infos[c] for c in sorted(tasks)]
        assign = direct.configure(idx, infos, np.random.default_rng(h.coord.round.salt))
        agg = direct.aggregator(idx)
        for c, task in sorted(tasks.items()):
            mid = h.answer(task)
            assert mid in h.transport.acked
            up = synthetic_update(task)
            agg.add(infos[[i.client_id for i in infos].index(c)], assign[c], up.tensors, float(up.num_examples))
        h.coord.tick()
        want = agg.finish()
        got, _ = read_tensors(h.store.path(h.store.round(idx).global_file))
        assert sorted(got) == sorted(want.global_state)
        for k in got:
            np.testing.assert_allclose(got[k], want.global_state[k], rtol=1e-6, atol=1e-7)
    assert h.coord.finished
    assert [m["stored"] for m in __import__("server").read_metrics(h.store.dir)] == [3, 3]


def test_ack_only_after_storage_and_duplicates_not_aggregated_twice(tmp_path, bundles):
    h = Harness(tmp_path / "state", make_config(bundles, rounds=1))
    h.join()
    task = h.open_tasks()["dev-000"]
    payload = encode(synthetic_update(task))
    m1 = h.send("dev-000", "update", payload)
    assert h.store.stored_digest(0, "dev-000") is not None and m1 in h.transport.acked
    m2 = h.send("dev-000", "update", payload)  # a broker redelivery (dup) or a device retry
    assert m2 in h.transport.acked
    assert [a.status for a in h.transport.messages("ack")] == ["stored", "duplicate"]
    assert h.coord.round.aggregated == 1


def test_same_update_twice_in_one_batch_is_a_duplicate(tmp_path, bundles):
    from server import Inbound

    h = Harness(tmp_path / "state", make_config(bundles, rounds=1))
    h.join()
    task = h.open_tasks()["dev-001"]
    payload = encode(synthetic_update(task))
    topic = "fedhft/v1/test/from/dev-001/update"
    h.coord.handle([Inbound(topic, payload, 50, 1), Inbound(topic, payload, 51, 1, True)])
    assert sorted(h.transport.acked)[-2:] == [50, 51]
    assert h.coord.round.aggregated == 1
    assert sorted(a.status for a in h.transport.messages("ack")) == ["duplicate", "stored"]


def test_outcomes_and_deadline_close_the_round(tmp_path, bundles):
    h = Harness(tmp_path / "state", make_config(bundles, rounds=1, round_deadline_s=30))
    h.join()
    tasks = h.open_tasks()
    h.answer(tasks["dev-000"])
    t = tasks["dev-001"]
    h.send("dev-001", "outcome", encode(Outcome("test", "dev-001", t.round, t.task_id, "over_budget", "rss 900 MB")))
    h.coord.tick()
    assert h.coord.round is not None  # dev-002 still owes an answer
    h.now += 31
    h.coord.tick()
    assert h.coord.finished
    m = h.store.round(0).metrics
    assert (m["stored"], m["dropped"], m["outcomes"], m["closed_by"]) == (1, 1, {"over_budget": 1}, "deadline")


def test_quorum_closes_early(tmp_path, bundles):
    h = Harness(tmp_path / "state", make_config(bundles, rounds=1, quorum=0.6))
    h.join()
    tasks = h.open_tasks()
    h.answer(tasks["dev-000"])
    h.coord.tick()
    assert h.coord.round is not None
    h.answer(tasks["dev-001"])
    h.coord.tick()
    assert h.coord.finished and h.store.round(0).metrics["closed_by"] == "quorum"


def test_low_battery_clients_are_not_selected(tmp_path, bundles):
    from .server_fakes import hello_payload

    h = Harness(tmp_path / "state", make_config(bundles, rounds=1, min_clients=2, battery_threshold=30))
    h.send("dev-000", "hello", hello_payload("dev-000", battery=10.0))
    h.send("dev-001", "hello", hello_payload("dev-001", battery=80.0))
    h.send("dev-002", "hello", hello_payload("dev-002"))
    h.coord.tick()
    assert sorted(h.open_tasks()) == ["dev-001", "dev-002"]


def _crash_mid_round(tmp_path, bundles, strategy):
    config = make_config(bundles, strategy=strategy, rounds=2)
    h = Harness(tmp_path / "state", config)
    h.join()
    for task in h.open_tasks().values():  # round 0 completes
        h.answer(task)
    h.coord.tick()
    tasks = h.open_tasks()
    h.answer(tasks["dev-000"])  # round 1: one update stored, then the process dies
    h.store.close()
    return config, tasks


@pytest.mark.parametrize("strategy", ["fedavg-lora", "fedhft"])
def test_resume_retasks_only_clients_without_stored_updates(tmp_path, bundles, strategy):
    config, before = _crash_mid_round(tmp_path, bundles, strategy)
    h2 = Harness(tmp_path / "state", config)
    # the constructor resumed; now the devices come back (hello)
    h2.join()
    retasked = {t.client for t in h2.transport.tasks() if t.round == 1}
    assert retasked == {"dev-001", "dev-002"}
    assert all(t.task_id == before[t.client].task_id for t in h2.transport.tasks())  # same task ids
    assert h2.coord.round.aggregated == 1  # the stored update was re-fed, once
    for c in ("dev-001", "dev-002"):
        h2.answer(before[c])
    h2.coord.tick()
    assert h2.coord.finished
    stored = {t.client: t.status for t in h2.store.tasks(1)}
    assert stored == {"dev-000": "stored", "dev-001": "stored", "dev-002": "stored"}

    # An uninterrupted run gives the very same global state.
    ref = Harness(tmp_path / "ref", config)
    ref.join()
    for _ in range(2):
        for task in ref.open_tasks().values():
            ref.answer(task)
        ref.coord.tick()
    a, _ = read_tensors(h2.store.path(h2.store.round(1).global_file))
    b, _ = read_tensors(ref.store.path(ref.store.round(1).global_file))
    for k in b:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-7)


def test_resume_after_commit_starts_next_round(tmp_path, bundles):
    config = make_config(bundles, rounds=2)
    h = Harness(tmp_path / "state", config)
    h.join()
    for task in h.open_tasks().values():
        h.answer(task)
    h.coord.tick()
    h.store.close()
    h2 = Harness(tmp_path / "state", config)
    assert h2.coord.next_round == 1 and h2.coord.round is None
    assert h2.coord.strategy.round_idx == 1


def test_bundle_request_is_served(tmp_path, bundles):
    from fedhft.protocol import BundleRequest

    h = Harness(tmp_path / "state", make_config(bundles, rounds=1))
    h.join()
    task = h.open_tasks()["dev-000"]
    h.send("dev-000", "bundle_req", encode(BundleRequest("test", "dev-000", task.bundle_id)))
    client, chunks = h.transport.bundles[0]
    assert client == "dev-000" and [c.file for c in chunks] == ["manifest.json"]


def test_heterotune_across_two_backbones(tmp_path):
    """Tiers exported from different base models: HeteroTune aggregates the shared branch across
    them and keeps a head per backbone; single-backbone strategies refuse such bundles."""
    from fedhft.layout import ModelDims
    from fedhft.manifest import BundleError

    from .server_fakes import DIMS

    big = ModelDims(num_layers=4, hidden=24, intermediate=48, num_labels=2)
    bundles = fake_bundles(tmp_path / "b", models={"large": ("big-model", big)})
    h = Harness(tmp_path / "state", make_config(bundles, strategy="heterotune", rounds=2))
    assert h.coord.bundles.tier_backbone == {"small": "tiny", "medium": "tiny", "large": "big-model"}
    h.join()
    for _ in range(2):
        tasks = h.open_tasks()
        assert tasks["dev-002"].start_state["head.weight"].shape == (2, big.hidden)
        assert tasks["dev-000"].start_state["head.weight"].shape == (2, DIMS.hidden)
        for task in tasks.values():
            h.answer(task)
        h.coord.tick()
    assert h.coord.finished
    state, _ = read_tensors(h.store.path(h.store.round(1).global_file))
    assert any(k.startswith("bb/big-model/head") for k in state) and any(k.startswith("bb/tiny/head") for k in state)
    assert any(k.startswith("shared/") for k in state)
    with pytest.raises(BundleError, match="heterotune"):
        Harness(tmp_path / "other", make_config(bundles, strategy="hetlora"))


def test_hello_again_resends_the_pending_task_rate_limited(tmp_path, bundles):
    from .server_fakes import hello_payload

    h = Harness(tmp_path / "state", make_config(bundles, rounds=1))
    h.join()
    count = lambda: sum(1 for t in h.transport.tasks() if t.client == "dev-000")  # noqa: E731
    assert count() == 1
    for _ in range(5):
        h.send("dev-000", "hello", hello_payload("dev-000"))  # a device restarting in a loop
    assert count() == 1
    h.now += 6
    h.send("dev-000", "hello", hello_payload("dev-000"))
    assert count() == 2
    h.answer(h.open_tasks()["dev-000"])
    h.now += 6
    h.send("dev-000", "hello", hello_payload("dev-000"))
    assert count() == 2  # its update is stored: no task again


def test_update_the_aggregator_refuses_is_taken_out_durably(tmp_path, bundles):
    config = make_config(bundles, rounds=1)
    h = Harness(tmp_path / "state", config)
    h.join()
    add = h.coord.round.aggregator.add

    def picky(info, assignment, update, weight):
        if info.client_id == "dev-001":
            raise ValueError("strategy bug")
        return add(info, assignment, update, weight)

    h.coord.round.aggregator.add = picky
    tasks = h.open_tasks()
    for c in ("dev-000", "dev-001"):
        h.answer(tasks[c])
    assert h.store.round_summary(0)["rejections"] == {"aggregation_error": 1}
    h.store.close()
    h2 = Harness(tmp_path / "state", config)  # a restart must not re-feed it
    assert h2.coord.round.aggregated == 1 and h2.coord.round.status["dev-001"] == "rejected"
    h2.join()
    h2.answer(tasks["dev-002"])
    h2.coord.tick()
    assert h2.coord.finished and h2.store.round(0).metrics["stored"] == 2

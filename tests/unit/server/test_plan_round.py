"""``plan_round`` and friends: the I/O-free round planning the coordinator runs, usable by
another engine to produce exactly the coordinator's tasks and verdicts."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fedhft.protocol import encode
from server import (
    Accepted,
    BundleIndex,
    ClientEntry,
    Participant,
    Rejected,
    build_strategy,
    check_update,
    cluster_sizes,
    intake_context,
    metrics_line,
    pick_clients,
    plan_round,
    read_metrics,
    read_tensors,
    state_files,
    synthetic_update,
    task_message,
)

from .server_fakes import TIER_OF, Harness, fake_bundles, make_config


@pytest.fixture
def bundles(tmp_path):
    return fake_bundles(tmp_path / "bundles")


def _entries(clients=("dev-000", "dev-001", "dev-002")) -> list[ClientEntry]:
    return [ClientEntry(c, {}, TIER_OF[c], "torch", ["torch"]) for c in clients]


@pytest.mark.parametrize("strategy", ["hetlora", "fedhft"])
def test_a_twin_engine_builds_the_coordinators_tasks_and_states(tmp_path, bundles, strategy):
    """Two rounds: the coordinator over its fake transport, and a twin that only calls the public
    planning functions on its own strategy, hand out identical tasks and commit identical states."""
    config = make_config(bundles, strategy=strategy, rounds=2, clients_per_round=2)
    h = Harness(tmp_path / "state", config)
    h.join()
    index = BundleIndex.scan(config.bundles_dir)
    twin = build_strategy(config, index)
    for idx in range(2):
        sent = h.open_tasks()
        picked, salt = pick_clients(_entries(), idx, config)
        plan = plan_round(
            twin, index, idx, salt, [Participant(c.client, c.tier, c.backend) for c in picked], h.store.run_id()
        )  # the run's id names its tasks
        assert salt == h.coord.round.salt and sorted(plan.tasks) == sorted(sent)
        agg = twin.aggregator(idx)
        stored: dict[str, str] = {}
        ctx = intake_context(config, idx, True, plan.expected(twin.dims_for), stored.get)
        for cid in sorted(plan.tasks):
            mine = task_message(plan, cid, index, config, deadline=sent[cid].deadline_ts)
            assert encode(mine) == encode(sent[cid])  # byte for byte, start state and mask included
            payload = encode(synthetic_update(sent[cid]))
            verdict = check_update(cid, payload, ctx)
            assert isinstance(verdict, Accepted)
            stored[cid] = verdict.digest
            agg.add(plan.infos[cid], plan.assignments[cid], verdict.update.tensors, float(verdict.update.num_examples))
            h.send(cid, "update", payload)
        h.coord.tick()
        files = state_files(twin, idx, agg.finish())
        committed = h.store.round(idx)
        got, _ = read_tensors(h.store.path(committed.global_file))
        assert sorted(got) == sorted(files["global"][0])
        for k, v in got.items():
            np.testing.assert_array_equal(v, files["global"][0][k])
        assert read_metrics(h.store.dir)[idx]["cluster_sizes"] == cluster_sizes(plan.assignments)


def test_intake_context_rejects_a_client_that_was_not_tasked(tmp_path, bundles):
    config = make_config(bundles, strategy="hetlora", rounds=1, clients_per_round=2)
    index = BundleIndex.scan(config.bundles_dir)
    strategy = build_strategy(config, index)
    picked, salt = pick_clients(_entries(), 0, config)
    plan = plan_round(strategy, index, 0, salt, [Participant(c.client, c.tier, c.backend) for c in picked])
    outsider = next(c for c in TIER_OF if c not in plan.tasks)
    task = replace(task_message(plan, sorted(plan.tasks)[0], index, config, deadline=0.0), client=outsider)
    ctx = intake_context(config, 0, True, plan.expected(strategy.dims_for), lambda c: None)
    verdict = check_update(outsider, encode(synthetic_update(task)), ctx)
    assert isinstance(verdict, Rejected) and verdict.reason == "not_tasked"


def test_metrics_line_matches_the_stores_round_metrics(tmp_path, bundles):
    h = Harness(tmp_path / "state", make_config(bundles, strategy="hetlora", rounds=1))
    h.join()
    for task in h.open_tasks().values():
        h.answer(task)
    h.coord.tick()
    want = read_metrics(h.store.dir)[0]
    summary = h.store.round_summary(0)
    extra = {k: want[k] for k in ("strategy", "closed_by", "round_s", "aggregation_s", "bytes_down", "cluster_sizes")}
    assert metrics_line(0, summary["tasks"], summary["rejections"], extra) == want

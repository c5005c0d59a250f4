"""A task is answered from the device's checkpoint only when it is the SAME task (same id): a new
server run re-uses round numbers with new task ids, and gets this run's training, not the update
the device made for an earlier run (which that run would refuse as stale_run)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime._checkpoint import RoundRecord, RoundStatus
from edge_runtime._mqtt import Inbound
from fedhft.protocol import Hyper, Task, encode


@pytest.fixture
def agent(offline_agent):
    return offline_agent


def _task(agent, task_id: str) -> Inbound:
    task = Task(
        agent.cfg.fleet,
        agent.client,
        0,
        task_id,
        "small",
        "torch",
        "b",
        "ab" * 32,
        {},
        Hyper(1e-3, 1, 1, 4, 16, "fp16"),
        0.0,
        {},
        np.ones(4, np.float32),
    )
    return Inbound(agent.topics.task(agent.client), encode(task), mid=len(agent.link.acked) + 1, qos=1)


def test_only_the_same_task_is_answered_from_the_checkpoint(agent, monkeypatch):
    trained = []
    monkeypatch.setattr(agent, "_run_task", lambda task: trained.append(task.task_id))
    agent.store.record(RoundRecord(0, "r0-dev-000-0123456789.11111111", RoundStatus.ACKED, digest="cd" * 32))
    agent._on_task(_task(agent, "r0-dev-000-0123456789.11111111"))  # re-sent: answered from the checkpoint
    assert trained == [] and agent.link.acked == [1]
    agent._on_task(_task(agent, "r0-dev-000-0123456789.22222222"))  # round 0 of another server run
    assert trained == ["r0-dev-000-0123456789.22222222"] and agent.link.acked == [1, 2]
    assert agent.store.get(0).task_id == "r0-dev-000-0123456789.22222222"

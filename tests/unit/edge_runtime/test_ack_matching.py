"""An ack settles a pending upload only when it names the upload's task id AND digest: round numbers
recur across server runs, and an identical update (same digest) can answer another task, so an ack
for another task id (say a stale_run rejection of an earlier run's upload) must not settle ours."""

from __future__ import annotations

import pytest

from edge_runtime._checkpoint import RoundRecord, RoundStatus
from edge_runtime._mqtt import Inbound
from fedhft.protocol import Ack, AckStatus, encode

OURS, EARLIER_RUN = "r0-dev-000-0123456789.22222222", "r0-dev-000-0123456789.11111111"
DIGEST = "cd" * 32


@pytest.fixture
def agent(offline_agent):
    offline_agent.store.record(RoundRecord(0, OURS, RoundStatus.UPLOADING, digest=DIGEST))
    return offline_agent


def _ack(agent, task_id: str, digest: str = DIGEST, status=AckStatus.STORED, reason: str = "") -> Inbound:
    msg = Ack(agent.cfg.fleet, agent.client, 0, task_id, digest, status, reason)
    return Inbound(agent.topics.ack(agent.client), encode(msg), mid=1, qos=1)


def test_an_ack_for_another_task_id_with_the_same_round_and_digest_is_not_ours(agent):
    agent._on_ack(_ack(agent, EARLIER_RUN, status=AckStatus.REJECTED, reason="stale_run: another run"))
    agent._on_ack(_ack(agent, EARLIER_RUN, status=AckStatus.STORED))
    rec = agent.store.get(0)
    assert rec.status == RoundStatus.UPLOADING and rec.task_id == OURS and agent.rounds_finished == 0


def test_an_ack_for_our_task_id_with_another_digest_is_not_ours(agent):
    agent._on_ack(_ack(agent, OURS, digest="ef" * 32))
    assert agent.store.get(0).status == RoundStatus.UPLOADING and agent.rounds_finished == 0


@pytest.mark.parametrize(
    "status, settled",
    [
        (AckStatus.STORED, RoundStatus.ACKED),
        (AckStatus.DUPLICATE, RoundStatus.ACKED),
        (AckStatus.REJECTED, RoundStatus.REJECTED),
    ],
)
def test_the_ack_for_our_task_id_and_digest_settles_the_upload(agent, status, settled):
    agent._on_ack(_ack(agent, OURS, status=status, reason="" if status != AckStatus.REJECTED else "non_finite: x"))
    rec = agent.store.get(0)
    assert rec.status == settled and agent.rounds_finished == 1
    assert agent.store.pending_uploads() == []

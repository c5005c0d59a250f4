"""Fixtures of the edge runtime unit tests: one tiny torch bundle per session and toy data files."""

from __future__ import annotations

from pathlib import Path

import pytest

from devices import AdapterPlan
from tests._helpers import write_toy_data

PLAN = AdapterPlan(depth=2, ranks=(4, 8), mask_density=0.5, max_seq_len=32, batch_size=8)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    from export import export_bundle

    out = tmp_path_factory.mktemp("edge-bundles")
    return export_bundle("tiny", 2, "unit", PLAN, "torch", out, progress=lambda s: None).bundle_dir


@pytest.fixture(scope="session")
def tiny_session(tiny_bundle):
    from bundle_runtime import open_session

    return open_session(tiny_bundle, threads=1)


@pytest.fixture
def toy_csv(tmp_path) -> Path:
    return write_toy_data(tmp_path / "toy.csv", 80, 0)


class LinkStandIn:
    """The agent's MQTT link, recording what it was asked to ack and publish (no broker)."""

    def __init__(self):
        self.acked, self.published = [], []

    def ack(self, item):
        self.acked.append(item.mid)

    def publish(self, topic, payload, qos=1, retain=False):
        self.published.append(topic)
        return 1


@pytest.fixture
def offline_agent(tmp_path, toy_csv, monkeypatch):
    """An EdgeAgent on the toy data whose link is a LinkStandIn (never connected)."""
    from edge_runtime import AgentConfig, _agent

    monkeypatch.setattr(_agent.EdgeAgent, "_install_signals", lambda self: None)  # pytest owns the signals
    cfg = AgentConfig(broker="mqtt://127.0.0.1:1", client_id="dev-000", data=str(toy_csv), state=str(tmp_path / "s"))
    agent = _agent.EdgeAgent(cfg)
    agent.link = LinkStandIn()
    return agent

"""The edge reports its battery in percent (0-100) on the wire, the unit of the Hello profile and
of the catalog's thresholds (ClientStatus.battery used to be a 0-1 fraction)."""

from __future__ import annotations

import pytest

from edge_runtime import _agent
from edge_runtime import AgentConfig
from fedhft.protocol import ClientStatus, decode


@pytest.mark.parametrize("battery, want", [("level=87.5,drain_per_step=0,charging=0", 87.5), (None, None)])
def test_status_carries_the_battery_in_percent(tmp_path, toy_csv, monkeypatch, battery, want):
    monkeypatch.setattr(_agent.EdgeAgent, "_install_signals", lambda self: None)  # pytest owns the signals
    monkeypatch.setattr(_agent.SystemBattery, "read", lambda self: (None, None))  # the test machine's own
    cfg = AgentConfig(
        broker="mqtt://127.0.0.1:1",
        client_id="dev-000",
        data=str(toy_csv),
        state=str(tmp_path / "s"),
        simulated_battery=battery,
    )
    status = decode(_agent.EdgeAgent(cfg)._status_payload("idle"), expect=ClientStatus)
    assert status.state == "idle" and status.battery_percent == want

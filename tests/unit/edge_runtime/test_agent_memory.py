"""The agent's memory pre-check learns from a measured refusal (the trainer is stubbed here; the
integration test test_memory_budget_below_bundle_need_reports_over_budget_and_stays_alive runs it
for real)."""

from __future__ import annotations

import pytest

from edge_runtime import _agent
from edge_runtime import AgentConfig, OverBudget

from .test_trainer import make_task

BUDGET = 100_000.0  # far above what the estimate asks for, so only a measured peak can refuse


class _Link:
    def publish(self, topic, payload, qos=1, retain=False):
        return 1


@pytest.fixture
def agent(tmp_path, toy_csv, tiny_bundle, monkeypatch):
    monkeypatch.setattr(_agent.EdgeAgent, "_install_signals", lambda self: None)  # pytest owns the signals
    cfg = AgentConfig(
        broker="mqtt://127.0.0.1:1",
        client_id="dev-000",
        data=str(toy_csv),
        state=str(tmp_path / "s"),
        memory_budget_mb=BUDGET,
    )
    a = _agent.EdgeAgent(cfg)
    a.link = _Link()
    monkeypatch.setattr(a, "_ensure_bundle", lambda task: tiny_bundle)
    return a


def test_a_bundle_refused_on_a_measured_peak_is_not_loaded_again(agent, tiny_session, monkeypatch):
    opened = []
    real_open = agent._open_session
    monkeypatch.setattr(agent, "_open_session", lambda bundle: opened.append(bundle) or real_open(bundle))
    measured = OverBudget(0.95 * BUDGET, BUDGET, "train", 0.95 * BUDGET)
    monkeypatch.setattr(_agent, "train_round", lambda *args: measured)
    task = make_task(tiny_session)

    assert agent._attempt(task) == measured and len(opened) == 1
    agent._close_session()  # what _run_task does with an OverBudget
    again = agent._attempt(task)
    assert isinstance(again, OverBudget) and again.where == "open" and again.peak_mb == measured.peak_mb
    assert not again.measured and again.rss_mb < BUDGET  # refused on the learned figure, before loading
    assert len(opened) == 1


def test_an_estimated_refusal_is_not_remembered(agent, tiny_session, monkeypatch):
    estimated = OverBudget(2 * BUDGET, BUDGET, "plan", 300.0)
    monkeypatch.setattr(_agent, "train_round", lambda *args: estimated)
    task = make_task(tiny_session)
    assert agent._attempt(task) == estimated
    agent._close_session()
    assert agent._attempt(task) == estimated  # loaded and planned again: an estimate is re-made each round

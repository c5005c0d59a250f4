"""Round states and client-round statuses are enums whose strings are what server.sqlite holds:
written as those strings, read back as members, and an unknown one is a StoreError, not a crash."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from server import ClientRoundStatus, CloseReason, RoundState, Store, StoreError, TaskRecord, write_tensors
from server._rounds import OpenRound


def _store(tmp_path) -> Store:
    store = Store(tmp_path)
    tasks = [TaskRecord(0, c, f"r0-{c}", "small", "torch", "d" * 64) for c in ("a", "b", "c", "d")]
    store.create_round(0, 1, 9.0, tasks, 1.0)
    return store


def _raw(store: Store, sql: str) -> list[tuple]:
    return sqlite3.connect(store.dir / "server.sqlite").execute(sql).fetchall()


def test_statuses_are_stored_as_their_strings_and_read_back_as_members(tmp_path):
    store = _store(tmp_path)
    store.record_outcome(0, "b", "over_budget", "memory", {}, 2.0)
    store.record_rejection(0, "c", "r0-c", "non_finite", "NaN", "e" * 64, 10, 2.0, final=True)
    store.mark_dropped(0, 3.0)
    assert _raw(store, "SELECT client, status FROM client_rounds ORDER BY client") == [
        ("a", "dropped"),
        ("b", "outcome"),
        ("c", "rejected"),
        ("d", "dropped"),
    ]
    statuses = [t.status for t in store.tasks(0)]
    assert statuses == [
        ClientRoundStatus.DROPPED,
        ClientRoundStatus.OUTCOME,
        ClientRoundStatus.REJECTED,
        ClientRoundStatus.DROPPED,
    ]
    assert all(type(s) is ClientRoundStatus for s in statuses)


def test_round_states_go_through_in_order(tmp_path):
    store = _store(tmp_path)
    seen = [store.round(0).state]
    for state in (RoundState.OPEN, RoundState.CLOSED, RoundState.AGGREGATED):
        store.set_round_state(0, state)
        seen.append(store.round(0).state)
    f = write_tensors(store.state_path("strategy", 0), {"x": np.zeros(1, np.float32)}, {})
    store.commit_round(0, {"strategy": f}, {"round": 0}, 4.0)
    seen.append(store.round(0).state)
    assert seen == list(RoundState) and all(type(s) is RoundState for s in seen)
    assert _raw(store, "SELECT state FROM rounds") == [("committed",)]


def test_a_plain_state_string_still_works_and_an_unknown_one_is_refused(tmp_path):
    store = _store(tmp_path)
    store.set_round_state(0, "open")
    assert store.round(0).state is RoundState.OPEN
    with pytest.raises(ValueError, match="unknown round state 'opened'"):
        store.set_round_state(0, "opened")


def test_an_unknown_status_in_the_database_is_a_store_error(tmp_path):
    store = _store(tmp_path)
    store.close()
    db = sqlite3.connect(tmp_path / "server.sqlite")
    db.execute("UPDATE client_rounds SET status='parked' WHERE client='a'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="ClientRoundStatus 'parked'"):
        Store(tmp_path).tasks(0)


def _open_round(statuses: dict[str, ClientRoundStatus], deadline: float = 100.0) -> OpenRound:
    return OpenRound(0, 1, 0.0, deadline, {}, {}, {}, None, status=dict(statuses))


def test_close_reasons():
    tasked, stored = ClientRoundStatus.TASKED, ClientRoundStatus.STORED
    assert _open_round({"a": stored}).should_close(1.0, 1.0) is CloseReason.ALL_ANSWERED
    assert _open_round({"a": stored, "b": tasked}).should_close(1.0, 0.5) is CloseReason.QUORUM
    assert _open_round({"a": stored, "b": tasked}).should_close(100.0, 1.0) is CloseReason.DEADLINE
    assert _open_round({"a": stored, "b": tasked}).should_close(1.0, 1.0) is None

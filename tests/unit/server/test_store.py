"""Store: atomic state files, durable intake, resume logic."""

from __future__ import annotations

import numpy as np
import pytest

from server import Store, StoreError, StoredUpdate, TaskRecord, read_tensors, write_tensors


def _tasks(idx, clients):
    return [TaskRecord(idx, c, f"r{idx}-{c}", "small", "torch", "d" * 64) for c in clients]


def _update(idx, client, payload=b"x" * 10):
    return StoredUpdate(idx, client, f"r{idx}-{client}", "f" * 64, "fp32", 3, payload, {"accuracy": 0.5})


def test_state_file_roundtrip_and_atomic_replace(tmp_path):
    path = tmp_path / "s.safetensors"
    write_tensors(path, {"a": np.arange(3, dtype=np.float32)}, {"round": 1})
    write_tensors(path, {"a": np.ones(2, dtype=np.float32)}, {"round": 2})
    tensors, meta = read_tensors(path)
    assert meta == {"round": 2} and tensors["a"].tolist() == [1.0, 1.0]
    assert [p.name for p in tmp_path.iterdir()] == ["s.safetensors"]  # no temp file left behind


def test_resume_point_fresh_and_in_flight(tmp_path):
    store = Store(tmp_path)
    assert store.resume_point().next_round == 0 and store.resume_point().in_flight is None
    store.create_round(0, 7, 99.0, _tasks(0, ["a", "b", "c"]), 1.0)
    store.store_updates([_update(0, "a")], 2.0)
    store.record_outcome(0, "c", "over_budget", "memory", {}, 2.0)
    point = store.resume_point()
    assert point.last_committed is None and point.in_flight.idx == 0 and point.in_flight.salt == 7
    assert point.stored == ["a"] and point.to_retask == ["b"]


def test_commit_moves_resume_point(tmp_path):
    store = Store(tmp_path)
    store.create_round(0, 1, 9.0, _tasks(0, ["a"]), 1.0)
    f = write_tensors(store.state_path("strategy", 0), {"x": np.zeros(1, np.float32)}, {})
    store.commit_round(0, {"strategy": f, "global": f}, {"round": 0}, 3.0)
    point = store.resume_point()
    assert point.last_committed.idx == 0 and point.next_round == 1 and point.in_flight is None
    assert point.last_committed.strategy_file == "states/strategy-r00000.safetensors"


def test_updates_survive_reopen_and_stream(tmp_path):
    store = Store(tmp_path)
    store.create_round(0, 1, 9.0, _tasks(0, ["a", "b"]), 1.0)
    store.store_updates([_update(0, "a", b"1" * 5), _update(0, "b", b"2" * 6)], 2.0)
    store.close()
    again = Store(tmp_path)
    got = list(again.iter_updates(0))
    assert [(u.client, u.payload) for u in got] == [("a", b"1" * 5), ("b", b"2" * 6)]
    assert again.stored_digest(0, "a") == "f" * 64 and again.stored_digest(0, "zz") is None


def test_storing_twice_is_refused(tmp_path):
    """The (round, client) key makes double counting impossible even if the caller slips."""
    store = Store(tmp_path)
    store.create_round(0, 1, 9.0, _tasks(0, ["a"]), 1.0)
    store.store_updates([_update(0, "a")], 2.0)
    with pytest.raises(Exception):
        store.store_updates([_update(0, "a")], 3.0)
    assert len(list(store.iter_updates(0))) == 1


def test_rejections_and_dropped(tmp_path):
    store = Store(tmp_path)
    store.create_round(0, 1, 9.0, _tasks(0, ["a", "b"]), 1.0)
    store.record_rejection(0, "a", "r0-a", "non_finite", "NaN", "e" * 64, 10, 2.0, final=True)
    store.record_rejection(0, "b", None, "truncated", "short", "e" * 64, 3, 2.0, final=False)
    assert store.mark_dropped(0, 3.0) == 1
    statuses = {t.client: t.status for t in store.tasks(0)}
    assert statuses == {"a": "rejected", "b": "dropped"}
    assert [r["reason"] for r in store.rejections(0)] == ["non_finite", "truncated"]


def test_bind_run_refuses_another_run(tmp_path):
    Store(tmp_path).bind_run({"fleet": "f", "strategy": "fedhft"})
    Store(tmp_path).bind_run({"fleet": "f", "strategy": "fedhft"})
    with pytest.raises(StoreError, match="another run.*strategy"):
        Store(tmp_path).bind_run({"fleet": "f", "strategy": "hetlora"})


def test_wal_and_full_sync(tmp_path):
    store = Store(tmp_path)
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_readonly_store_needs_a_state_dir(tmp_path):
    with pytest.raises(StoreError, match="not a fedhft server state dir"):
        Store(tmp_path / "nothing", readonly=True)


def test_crash_during_state_write_keeps_the_old_file(tmp_path, monkeypatch):
    """A write that dies before its rename leaves the previous state whole (and no temp file)."""
    import os

    path = tmp_path / "s.safetensors"
    write_tensors(path, {"a": np.zeros(2, np.float32)}, {"round": 1})

    def crash(*_):
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        write_tensors(path, {"a": np.ones(2, np.float32)}, {"round": 2})
    monkeypatch.undo()
    tensors, meta = read_tensors(path)
    assert meta == {"round": 1} and tensors["a"].tolist() == [0.0, 0.0]
    assert [p.name for p in tmp_path.iterdir()] == ["s.safetensors"]


def test_batch_is_one_transaction(tmp_path):
    """Group commit: a failure inside a batch rolls back every write of the batch."""
    store = Store(tmp_path)
    store.create_round(0, 1, 9.0, _tasks(0, ["a", "b"]), 1.0)
    with pytest.raises(RuntimeError):
        with store.batch():
            store.store_updates([_update(0, "a")], 2.0)
            store.record_rejection(0, "b", None, "truncated", "short", "e" * 64, 3, 2.0)
            raise RuntimeError("crash before commit")
    assert list(store.iter_updates(0)) == [] and store.rejections(0) == []
    with store.batch():
        store.store_updates([_update(0, "a")], 2.0)
    assert store.stored_digest(0, "a") == "f" * 64

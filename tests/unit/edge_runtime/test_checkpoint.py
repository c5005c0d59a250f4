"""The local checkpoint: atomic writes, round records, pruning."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from edge_runtime import _checkpoint as ck
from edge_runtime import StateStore
from edge_runtime._checkpoint import RoundRecord, atomic_write_bytes, atomic_write_tensors


def test_atomic_write_never_leaves_a_torn_file(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    atomic_write_bytes(path, b"old")

    def crash(src, dst):
        raise OSError("killed between write and rename")

    monkeypatch.setattr(ck.os, "replace", crash)
    with pytest.raises(OSError):
        atomic_write_bytes(path, b"new content that never lands")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp file left behind


def test_atomic_tensors_roundtrip(tmp_path):
    from safetensors.numpy import load_file

    atomic_write_tensors(tmp_path / "t.safetensors", {"b": np.ones(3, np.float32), "a": np.zeros((2, 2), np.float32)})
    loaded = load_file(str(tmp_path / "t.safetensors"))
    assert sorted(loaded) == ["a", "b"] and loaded["b"].sum() == 3


def test_store_roundtrip_and_pending_uploads(tmp_path):
    store = StateStore(tmp_path, "dev-1", "fleet")
    store.record(RoundRecord(1, "t1", ck.RoundStatus.ACKED, digest="a" * 64))
    store.record(RoundRecord(2, "t2", ck.RoundStatus.UPLOADING, digest="b" * 64))
    store.save_task(b"task-bytes")
    again = StateStore(tmp_path, "dev-1", "fleet")
    assert again.get(1).done and not again.get(2).done
    assert [r.round for r in again.pending_uploads()] == [2]
    assert again.load_task() == b"task-bytes"
    again.clear_task()
    assert again.load_task() is None


def test_store_refuses_another_clients_state(tmp_path):
    StateStore(tmp_path, "dev-1", "fleet").record(RoundRecord(1, "t", ck.RoundStatus.TRAINING))
    with pytest.raises(ValueError, match="give each device its own --state"):
        StateStore(tmp_path, "dev-2", "fleet")


def test_store_prunes_old_payloads(tmp_path):
    store = StateStore(tmp_path, "dev-1", "fleet")
    for r in range(1, ck.KEEP_ROUNDS + 4):
        atomic_write_bytes(store.update_path(r), b"u")
        store.record(RoundRecord(r, f"t{r}", ck.RoundStatus.ACKED))
    kept = sorted(int(p.stem[1:]) for p in (tmp_path / "updates").iterdir())
    assert kept == list(range(4, ck.KEEP_ROUNDS + 4))
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))
    assert os.path.isfile(store.path)


def test_round_statuses_are_strings_on_disk_and_members_in_memory(tmp_path):
    store = StateStore(tmp_path, "dev-1", "fleet")
    store.record(RoundRecord(1, "t1", ck.RoundStatus.OUTCOME, kind="over_budget", reason="memory"))
    on_disk = json.loads(store.path.read_text())["rounds"]
    assert [(r["status"], r["kind"]) for r in on_disk] == [("outcome", "over_budget")]
    again = StateStore(tmp_path, "dev-1", "fleet").get(1)
    assert again.status is ck.RoundStatus.OUTCOME and again.done


def test_an_unknown_round_status_is_a_corrupt_state_file(tmp_path):
    StateStore(tmp_path, "dev-1", "fleet").record(RoundRecord(1, "t", ck.RoundStatus.TRAINING))
    path = tmp_path / "state.json"
    path.write_text(path.read_text().replace('"training"', '"parked"'))
    with pytest.raises(ValueError, match="state.json is corrupt .*'parked'.*move it away"):
        StateStore(tmp_path, "dev-1", "fleet")

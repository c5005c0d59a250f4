"""The read-only state readers another process uses (the simulation's progress and report): what they
return from a real Store, that they are empty before the server has written, and that they read
while the server holds its database open and mid-transaction."""

from __future__ import annotations

from server import (
    CLIENT_ROUND_FIELDS,
    ClientRoundStatus,
    Store,
    StoredUpdate,
    TaskRecord,
    count_clients,
    read_client_rounds,
)


def _store(path) -> Store:
    store = Store(path)
    for client in ("b", "a"):
        store.upsert_client(client, {"cpu_count": 4}, "small", "torch", ["torch"], 1.0)
    tasks = [TaskRecord(0, c, f"r0-{c}", "small", "torch", "d" * 64) for c in ("a", "b", "c")]
    store.create_round(0, 1, 9.0, tasks, 1.0)
    return store


def test_an_empty_or_missing_state_dir_reads_as_nothing(tmp_path):
    assert read_client_rounds(tmp_path / "not-there") == [] and count_clients(tmp_path / "not-there") == 0
    assert read_client_rounds(tmp_path) == [] and count_clients(tmp_path) == 0
    (tmp_path / "server.sqlite").write_bytes(b"")  # created, no tables yet
    assert read_client_rounds(tmp_path) == [] and count_clients(tmp_path) == 0


def test_records_come_back_ordered_with_their_metrics_parsed(tmp_path):
    store = _store(tmp_path)
    store.store_updates([StoredUpdate(0, "b", "r0-b", "e" * 64, "fp32", 12, b"xyz", {"train_loss": 0.5})], 2.0)
    store.record_outcome(0, "c", "over_budget", "memory", {}, 2.0)
    rows = read_client_rounds(tmp_path)
    assert [tuple(r) for r in rows] == [CLIENT_ROUND_FIELDS] * 3
    assert [(r["round"], r["client"], r["status"]) for r in rows] == [
        (0, "a", ClientRoundStatus.TASKED),
        (0, "b", ClientRoundStatus.STORED),
        (0, "c", ClientRoundStatus.OUTCOME),
    ]
    assert rows[0]["metrics"] == {} and rows[0]["bytes"] is None
    assert rows[1]["metrics"] == {"train_loss": 0.5} and rows[1]["bytes"] == 3 and rows[1]["num_examples"] == 12
    assert (rows[2]["outcome"], rows[2]["reason"]) == ("over_budget", "memory")
    assert count_clients(tmp_path) == 2
    store.close()


def test_they_read_the_last_commit_while_the_server_writes(tmp_path):
    store = _store(tmp_path)
    with store.batch():  # the server is inside a transaction: its write is not visible yet, nothing blocks
        store.record_outcome(0, "a", "low_battery", "battery", {}, 2.0)
        assert read_client_rounds(tmp_path)[0]["status"] == ClientRoundStatus.TASKED
    assert read_client_rounds(tmp_path)[0]["status"] == ClientRoundStatus.OUTCOME
    store.close()

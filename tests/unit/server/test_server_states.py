"""The server publishes only the states of ``fedhft.protocol.ServerState`` (running, finished; its
Last Will and a stop before the last round say offline), each retained."""

from __future__ import annotations

from fedhft.protocol import ServerState, ServerStatus

from .server_fakes import Harness, fake_bundles, make_config


def test_a_run_publishes_running_then_finished_and_nothing_else(tmp_path):
    h = Harness(tmp_path / "state", make_config(fake_bundles(tmp_path / "bundles"), rounds=1))
    h.join()
    for task in h.open_tasks().values():
        h.answer(task)
    h.coord.tick()
    assert h.coord.finished
    published = [(decode_status(p), retain) for t, p, retain in h.transport.published if t.endswith("/server/status")]
    states = [m.state for m, _ in published]
    assert states[0] == ServerState.RUNNING and states[-1] == ServerState.FINISHED
    assert set(states) <= set(ServerState) and all(type(s) is ServerState for s in states)
    assert all(retain for _, retain in published)


def decode_status(payload: bytes) -> ServerStatus:
    from fedhft.protocol import decode

    return decode(payload, expect=ServerStatus)

"""The status states are enums (one list each); the string tuples derive from them, and a state
outside the list (``paused``, which no server ever sent) is refused naming the allowed ones."""

from __future__ import annotations

import pytest

from fedhft.protocol import (
    CLIENT_STATES,
    SERVER_STATES,
    ClientState,
    ClientStatus,
    MalformedMessage,
    ServerState,
    ServerStatus,
    decode,
    encode,
)

from .test_protocol_compat import _with


def test_the_state_tuples_are_the_enums_strings():
    assert SERVER_STATES == ("running", "finished", "offline") == tuple(ServerState)
    assert CLIENT_STATES == tuple(ClientState) and "low_battery" in CLIENT_STATES
    assert all(type(s) is str for s in SERVER_STATES + CLIENT_STATES)


def test_decoded_states_are_members_and_encode_as_their_strings():
    status = decode(encode(ServerStatus("demo", ServerState.FINISHED, None, 1.0)))
    assert status.state is ServerState.FINISHED
    assert encode(status) == encode(ServerStatus("demo", "finished", None, 1.0))
    assert decode(encode(ClientStatus("demo", "dev-1", "training", 2))).state is ClientState.TRAINING


@pytest.mark.parametrize("state", ["paused", "online"])
def test_a_server_state_outside_the_list_is_refused(state):
    payload = _with(encode(ServerStatus("demo", ServerState.RUNNING, 1, 1.0)), state=state)
    with pytest.raises(MalformedMessage, match="running.*finished.*offline"):
        decode(payload)

"""The embedded amqtt broker: starts on a free port, authenticates fleet users, enforces the ACL
(MQTT 3.1.1: a refused publish is dropped silently), and stops cleanly."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("amqtt", reason="amqtt missing: pip install 'fedhft[broker]'")

from server.broker import EmbeddedBroker, Broker, start_broker  # noqa: E402

MQTT311 = 4
A, B = "dev-000", "dev-001"


@pytest.fixture
def embedded(fleet):
    broker = EmbeddedBroker(fleet).start()
    try:
        yield broker
    finally:
        broker.stop()


def _connect(paho_client, broker, cred, **kwargs):
    return paho_client(broker.url, cred.username, cred.password, cred.client_id, protocol=MQTT311, **kwargs)


def test_starts_and_authenticates_a_device(embedded, fleet, paho_client):
    assert isinstance(embedded, Broker) and embedded.running and not embedded.mqtt5
    assert embedded.url == f"mqtt://127.0.0.1:{embedded.port}"
    client = _connect(paho_client, embedded, fleet.device(A))
    assert not client.connack[0].is_failure


@pytest.mark.parametrize(
    ("username", "password"),
    [(A, "wrong"), (None, None), ("nobody", "x")],
    ids=["wrong-password", "anonymous", "unknown-user"],
)
def test_refuses_bad_credentials(embedded, paho_client, username, password):
    with pytest.raises(paho_client.ConnectError) as err:
        paho_client(embedded.url, username, password, "intruder", protocol=MQTT311)
    assert err.value.reason is not None and err.value.reason.is_failure


def test_enforces_the_fleet_acl(embedded, fleet, paho_client):
    base = f"fedhft/v1/{fleet.fleet}"
    server = _connect(paho_client, embedded, fleet.server)
    server.subscribe(f"{base}/from/#")
    a = _connect(paho_client, embedded, fleet.device(A))
    assert a.subscribe(f"{base}/to/{B}/#")[0].is_failure  # amqtt refuses the SUBSCRIBE itself
    a.publish(f"{base}/from/{B}/update", b"forged")  # PUBACK says success on 3.1.1 ...
    a.publish(f"{base}/from/{A}/update", b"mine")
    msg = server.next_message()
    assert msg is not None and msg.payload == b"mine"
    assert server.next_message(timeout=0.5) is None  # ... but the forged message was dropped


def test_stops_cleanly_and_frees_the_port(fleet, paho_client):
    broker = start_broker(fleet, prefer="embedded")
    client = _connect(paho_client, broker, fleet.device(A))
    port = broker.port
    broker.stop()
    client.wait_disconnect()
    assert not broker.running
    assert not [t for t in threading.enumerate() if t.name.startswith("fedhft-amqtt")]
    with EmbeddedBroker(fleet, port=port) as again:  # the port is free again
        assert again.port == port
    broker.stop()  # twice is harmless


def test_start_broker_rejects_unknown_preference(fleet):
    with pytest.raises(ValueError, match="prefer"):
        start_broker(fleet, prefer="emqx")


@pytest.mark.parametrize(
    ("user", "topic", "action", "allowed"),
    [
        (A, f"from/{A}/update", "publish", True),
        (A, f"from/{B}/update", "publish", False),
        (A, f"to/{A}/task", "receive", True),
        (A, f"to/{B}/task", "receive", False),
        (A, f"to/{A}/#", "subscribe", True),
        (A, "to/+/task", "subscribe", False),  # would match other devices' tasks
        (A, "#", "subscribe", False),
        (A, "server/status", "receive", True),
        (A, "server/status", "publish", False),
        ("server", "#", "subscribe", True),
        ("server", f"to/{B}/task", "publish", True),
        (None, "server/status", "receive", False),
    ],
)
def test_is_allowed_matches_the_contract_acl(user, topic, action, allowed):
    from fedhft.protocol import is_allowed

    assert is_allowed("f1", "server", user, f"fedhft/v1/f1/{topic}", action) is allowed
    # Another fleet's topics are never allowed, not even to the server user.
    assert not is_allowed("f1", "server", user, f"fedhft/v1/f2/{topic}", action)

"""Intrusion against the fleet-init broker config (auth + ACL, MQTT 5): every attempt is counted
and must be refused. Uses the shared `paho_client` fixture (tests/conftest.py)."""

from __future__ import annotations

import pytest

from .harness import FLEET, wait_for

pytestmark = [pytest.mark.reliability]

A, B = "dev-000", "dev-001"
BASE = f"fedhft/v1/{FLEET}"


def _connect(paho_client, broker, cred, client_id=None, **kw):
    return paho_client(broker.url, cred.username, cred.password, client_id or cred.client_id, **kw)


@pytest.mark.parametrize(
    "who,username,password",
    [
        ("anonymous", None, None),
        ("wrong password", A, "not-the-password"),
        ("unknown user", "intruder", "whatever"),
        ("empty password", A, ""),
        ("server user, wrong password", "server", "guess"),
    ],
)
def test_unauthenticated_or_wrong_password_cannot_connect(broker_for, paho_client, figures, who, username, password):
    fleet, broker = broker_for(2)
    figures.add(intrusions_tried=1)
    with pytest.raises(paho_client.ConnectError) as err:
        paho_client(broker.url, username, password, "intruder-client")
    assert err.value.reason is not None and err.value.reason.is_failure, who
    figures.add(intrusions_refused=1)


def test_device_cannot_write_or_read_what_is_not_its_own(broker_for, paho_client, figures):
    fleet, broker = broker_for(2)
    server = _connect(paho_client, broker, fleet.server)
    server.subscribe(f"{BASE}/#")
    a = _connect(paho_client, broker, fleet.device(A))
    b = _connect(paho_client, broker, fleet.device(B))
    b.subscribe(f"{BASE}/to/{B}/#")
    a.subscribe(f"{BASE}/to/{A}/#")
    # Publishing as someone else: another device's topics, the server's topics, its own inbox.
    forged = [
        f"{BASE}/from/{B}/update",
        f"{BASE}/from/{B}/hello",
        f"{BASE}/from/{B}/status",
        f"{BASE}/server/status",
        f"{BASE}/to/{B}/task",
        f"{BASE}/to/{B}/ack",
        f"{BASE}/to/{A}/task",
        f"{BASE}/to/{A}/bundle",
        "fedhft/v1/other-fleet/from/dev-000/update",
        "$SYS/broker/hack",
    ]
    for topic in forged:
        figures.add(intrusions_tried=1)
        reason = a.publish(topic, b"forged", qos=1)
        assert reason is not None and str(reason) == "Not authorized", (topic, reason)
        figures.add(intrusions_refused=1)
    # None of them reached the server or the victim.
    assert server.next_message(timeout=1.0) is None
    assert b.next_message(timeout=0.2) is None
    # Reading another device's tasks, or everything: granted or not, nothing is delivered.
    spies = [f"{BASE}/to/{B}/#", f"{BASE}/to/+/task", f"{BASE}/from/#", "#", f"{BASE}/#"]
    for topic in spies:
        a.subscribe(topic)
    server.publish(f"{BASE}/to/{B}/task", b"for B only", qos=1)
    server.publish(f"{BASE}/from/{B}/update", b"B's update (as seen by the server user)", qos=1)
    got_b = b.next_message(timeout=5)
    assert got_b is not None and got_b.payload == b"for B only"
    leaked = []
    while (m := a.next_message(timeout=1.0)) is not None:
        leaked.append(m.topic)
    figures.add(intrusions_tried=len(spies))
    assert not leaked, f"{A} read {leaked}"
    figures.add(intrusions_refused=len(spies))
    # Its own paths still work (the refusals above are the ACL, not a broken client).
    assert not a.publish(f"{BASE}/from/{A}/update", b"mine", qos=1).is_failure


def test_mqtt311_forgery_is_dropped_too(broker_for, paho_client, figures):
    """On MQTT 3.1.1 the broker acks a refused PUBLISH as success (no reason codes): assert on delivery."""
    fleet, broker = broker_for(2)
    server = _connect(paho_client, broker, fleet.server)
    server.subscribe(f"{BASE}/#")
    a = _connect(paho_client, broker, fleet.device(A), protocol=4)
    figures.add(intrusions_tried=2)
    a.publish(f"{BASE}/from/{B}/update", b"forged 3.1.1", qos=1)
    a.publish(f"{BASE}/server/status", b"forged 3.1.1", qos=1)
    assert server.next_message(timeout=1.0) is None
    figures.add(intrusions_refused=2)


def test_device_cannot_take_over_the_servers_session(tmp_path, bundles, broker_for, procs, paho_client, figures):
    """Mosquitto does not bind client ids to usernames: a device connecting with the server's client id
    would kick the server off and (clean start) discard the updates queued for it. The server's id is
    therefore derived from its secret; the guessable ids lead nowhere."""
    from fedhft.protocol import ServerStatus, decode

    from .harness import server_yaml

    fleet, broker = broker_for(2)
    cfg = server_yaml(tmp_path / "server.yaml", bundles, rounds=1, min_clients=3)  # idles: no round starts
    srv = procs.server(cfg, broker.url, tmp_path / "state", fleet)
    watcher = _connect(paho_client, broker, fleet.device(B))
    watcher.subscribe(f"{BASE}/server/status")
    msg = watcher.next_message(timeout=60)
    assert msg is not None and decode(msg.payload, expect=ServerStatus).state == "running", srv.tail()
    guesses = [f"fedhft-server-{FLEET}", "server", f"fedhft-server-{FLEET}-0000000000000000"]
    for guess in guesses:
        figures.add(intrusions_tried=1)
        _connect(paho_client, broker, fleet.device(A), client_id=guess, clean_start=True).close()
    # The server kept its connection: no takeover in the broker's log, no reconnect in the server's.
    assert "already connected, closing old connection" not in broker.log_path.read_text(), broker.log_tail()
    assert "disconnected from the broker" not in srv.log_path.read_text(), srv.tail()
    assert watcher.next_message(timeout=1.0) is None  # no offline Will, no re-announced status
    assert srv.alive
    figures.add(intrusions_refused=len(guesses))


def test_device_cannot_take_over_another_devices_session(tmp_path, bundles, broker_for, procs, paho_client, figures):
    """The same for a device: `fedhft edge` connects with an id derived from its own secret, so another
    device that guesses the documented id (the username, dev-001) opens a session of its own and the
    victim keeps its connection."""
    from .harness import write_toy_data

    fleet, broker = broker_for(2)
    victim = procs.edge(broker.url, fleet, B, write_toy_data(tmp_path / "d.csv", 10, 0), tmp_path / "edge", bundles)
    wait_for(
        lambda: any(e.get("event") == "mqtt_connected" for e in victim.events()),
        120,
        f"{B} connected",
        procs=[victim],
        must_live=[victim],
    )
    guesses = [B, fleet.device(B).client_id, f"{B}-0000000000000000"]
    for guess in dict.fromkeys(guesses):
        figures.add(intrusions_tried=1)
        _connect(paho_client, broker, fleet.device(A), client_id=guess, clean_start=True).close()
    assert "already connected, closing old connection" not in broker.log_path.read_text(), broker.log_tail()
    assert not [e for e in victim.events() if e.get("event") == "mqtt_disconnected"], victim.tail()
    assert victim.alive
    figures.add(intrusions_refused=len(dict.fromkeys(guesses)))

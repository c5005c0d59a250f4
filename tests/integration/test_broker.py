"""A real Mosquitto with the generated fleet config: auth, ACL, packet limit, persistence, TLS."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import time

import pytest

from fedhft.protocol import is_allowed
from server.broker import (
    BrokerStartError,
    BrokerUrl,
    BrokerUrlError,
    FleetConfigError,
    FleetNameError,
    MosquittoBroker,
    fleet_init,
    load_fleet,
    parse_broker_url,
)
from server.broker._passwd import hash_password, read_password_file, verify_password
from tests._helpers import wait_for
from tests._require import require

pytestmark = [
    pytest.mark.integration,
    pytest.mark.requires("mosquitto"),
]

A, B = "dev-000", "dev-001"


def _base(fleet) -> str:
    return f"fedhft/v1/{fleet.fleet}"


def _connect(paho_client, broker, cred, **kwargs):
    return paho_client(broker.url, cred.username, cred.password, cred.client_id, **kwargs)


def test_valid_device_connects_and_connack_advertises_packet_limit(mosquitto, fleet, paho_client):
    client = _connect(paho_client, mosquitto, fleet.device(A))
    reason, _, props = client.connack
    assert not reason.is_failure
    # Devices can read the broker's limit from CONNACK; paho itself does not enforce it.
    assert props.MaximumPacketSize == fleet.max_packet_size
    assert mosquitto.running and mosquitto.pid > 0
    assert mosquitto.url == f"mqtt://127.0.0.1:{mosquitto.port}"


@pytest.mark.parametrize(
    ("username", "password"),
    [(A, "wrong-password"), (None, None), ("nobody", "x")],
    ids=["wrong-password", "anonymous", "unknown-user"],
)
def test_bad_credentials_are_refused(mosquitto, paho_client, username, password):
    with pytest.raises(paho_client.ConnectError) as err:
        paho_client(mosquitto.url, username, password, "intruder")
    # Mosquitto 2.0.11 answers 0x87 for all three on MQTT 5 (not 0x86 "Bad user name or password").
    assert str(err.value.reason) == "Not authorized"


def test_device_cannot_publish_as_another_device(mosquitto, fleet, paho_client):
    server = _connect(paho_client, mosquitto, fleet.server)
    assert server.subscribe(f"{_base(fleet)}/from/#")[0].value == 1
    a = _connect(paho_client, mosquitto, fleet.device(A))
    forged = a.publish(f"{_base(fleet)}/from/{B}/update", b"forged", qos=1)
    assert str(forged) == "Not authorized"
    own = a.publish(f"{_base(fleet)}/from/{A}/update", b"mine", qos=1)
    assert not own.is_failure
    msg = server.next_message()
    assert msg is not None and msg.topic == f"{_base(fleet)}/from/{A}/update"
    assert server.next_message(timeout=0.5) is None  # the forged one never arrived


def test_device_cannot_receive_another_devices_tasks(mosquitto, fleet, paho_client):
    a = _connect(paho_client, mosquitto, fleet.device(A))
    b = _connect(paho_client, mosquitto, fleet.device(B))
    # Mosquitto 2.0 grants the SUBSCRIBE and filters at delivery, so assert on delivery.
    a.subscribe(f"{_base(fleet)}/to/{B}/#")
    a.subscribe(f"{_base(fleet)}/to/{A}/#")
    b.subscribe(f"{_base(fleet)}/to/{B}/#")
    server = _connect(paho_client, mosquitto, fleet.server)
    assert not server.publish(f"{_base(fleet)}/to/{B}/task", b"for B").is_failure
    assert not server.publish(f"{_base(fleet)}/to/{A}/task", b"for A").is_failure
    got_b = b.next_message()
    assert got_b is not None and got_b.payload == b"for B"
    got_a = a.next_message()
    assert got_a is not None and got_a.payload == b"for A"
    assert a.next_message(timeout=0.5) is None


def test_only_the_server_publishes_server_status(mosquitto, fleet, paho_client):
    topic = f"{_base(fleet)}/server/status"
    a = _connect(paho_client, mosquitto, fleet.device(A))
    a.subscribe(topic)
    assert str(a.publish(topic, b"fake status")) == "Not authorized"
    server = _connect(paho_client, mosquitto, fleet.server)
    assert not server.publish(topic, b"online", retain=True).is_failure
    msg = a.next_message()
    assert msg is not None and msg.payload == b"online"
    assert a.next_message(timeout=0.5) is None


def test_oversize_packet_is_refused(mosquitto, fleet, paho_client):
    topic = f"{_base(fleet)}/from/{A}/update"
    server = _connect(paho_client, mosquitto, fleet.server)
    server.subscribe(f"{_base(fleet)}/from/#")
    a = _connect(paho_client, mosquitto, fleet.device(A))
    a.publish(topic, b"x" * (fleet.max_packet_size + 1), qos=0)
    # Mosquitto 2.0.11 reads the fixed header, sends DISCONNECT 0x95 and closes; paho never checks
    # the size itself. Whether paho reads that DISCONNECT or first hits the closed socket while
    # still writing the 1 MB body (reported as "Unspecified error") is a race, so accept both.
    assert str(a.wait_disconnect()) in {"Packet too large", "Unspecified error"}
    assert server.next_message(timeout=0.5) is None
    # Just under the limit (payload + topic + header fit in max_packet_size) still goes through.
    a2 = _connect(paho_client, mosquitto, fleet.device(A))
    fits = fleet.max_packet_size - len(topic) - 16
    assert not a2.publish(topic, b"y" * fits, qos=1).is_failure
    msg = server.next_message()
    assert msg is not None and len(msg.payload) == fits


@pytest.mark.reliability
def test_restart_keeps_persistent_session_and_redelivers(mosquitto, fleet, paho_client):
    task = f"{_base(fleet)}/to/{A}/task"
    device = _connect(paho_client, mosquitto, fleet.device(A), clean_start=False, session_expiry=600)
    device.subscribe(task, qos=1)
    device.close()  # offline, session kept by the broker
    server = _connect(paho_client, mosquitto, fleet.server)
    assert not server.publish(task, b"round 7", qos=1).is_failure
    server.close()

    old_pid, old_url = mosquitto.pid, mosquitto.url
    mosquitto.restart()  # SIGTERM: Mosquitto saves its persistence file, then starts again
    assert mosquitto.pid != old_pid and mosquitto.url == old_url

    back = _connect(paho_client, mosquitto, fleet.device(A), clean_start=False, session_expiry=600)
    assert back.connack[1] is True  # session_present
    msg = back.next_message(timeout=5)
    assert msg is not None and msg.payload == b"round 7" and msg.qos == 1


def _saved(broker) -> bytes:
    try:
        return broker.persistence_path.read_bytes()
    except FileNotFoundError:
        return b""


@pytest.mark.slow
@pytest.mark.reliability
def test_crash_after_autosave_keeps_the_queued_message(mosquitto, fleet, paho_client):
    task = f"{_base(fleet)}/to/{A}/task"
    device = _connect(paho_client, mosquitto, fleet.device(A), clean_start=False, session_expiry=600)
    device.subscribe(task, qos=1)
    device.close()
    server = _connect(paho_client, mosquitto, fleet.server)
    assert not server.publish(task, b"queued before the crash", qos=1).is_failure
    server.close()
    # SIGKILL saves nothing: only what the last autosave wrote survives. Measured on Mosquitto
    # 2.0.11: with an interval of 2 s it saves every 3 s, so a fixed sleep of interval + 1 raced
    # the save (it failed in CI); wait for a save that holds the message instead.
    wait_for(
        lambda: b"queued before the crash" in _saved(mosquitto),  # payloads are stored verbatim
        10 * mosquitto.autosave_interval,
        f"an autosave of {mosquitto.persistence_path} holding the message",
        every=0.1,
    )
    mosquitto.restart(hard=True)
    back = _connect(paho_client, mosquitto, fleet.device(A), clean_start=False, session_expiry=600)
    msg = back.next_message(timeout=10)
    assert msg is not None and msg.payload == b"queued before the crash"


def test_stop_kills_the_process_and_frees_the_port(fleet):
    broker = MosquittoBroker(fleet)
    broker.start()
    pid, port = broker.pid, broker.port
    broker.stop()
    assert not broker.running and broker.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    # The port is free again: a new broker can take it.
    with MosquittoBroker(fleet, port=port) as again:
        assert again.port == port


def test_fleet_files_are_private_and_load_back(fleet):
    for path in [
        fleet.dir / "passwd",
        fleet.dir / "server.json",
        *(fleet.dir / "clients" / f"{cid}.json" for cid in fleet.devices),
    ]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    again = load_fleet(fleet.dir)
    assert again == fleet
    assert len({c.password for c in [fleet.server, *fleet.devices.values()]}) == len(fleet.devices) + 1


def test_tls_with_generated_ca_and_client_certificate(tmp_path, paho_client):
    fleet = fleet_init(tmp_path / "tls-fleet", 2, fleet="tls", tls=True)
    cred = fleet.device(A)
    with MosquittoBroker(fleet) as broker:
        client = paho_client(
            broker.tls_url,
            cred.username,
            cred.password,
            cred.client_id,
            tls_ca=cred.tls_ca,
            tls_cert=cred.tls_cert,
            tls_key=cred.tls_key,
        )
        assert not client.publish(f"fedhft/v1/tls/from/{A}/hello", b"hi").is_failure
        # Without a client certificate the TLS handshake fails: paho never sees a CONNACK.
        with pytest.raises(paho_client.ConnectError):
            paho_client(broker.tls_url, cred.username, cred.password, "no-cert", tls_ca=cred.tls_ca, timeout=2)
        # The plain listener keeps working for the co-located server, which also has a cert.
        paho_client(broker.url, fleet.server.username, fleet.server.password, "server")
        srv = fleet.server
        paho_client(
            broker.tls_url,
            srv.username,
            srv.password,
            "server-tls",
            tls_ca=srv.tls_ca,
            tls_cert=srv.tls_cert,
            tls_key=srv.tls_key,
        )


# Publish cases: (who publishes, topic below fedhft/v1/<fleet>/). `is_allowed` (which the embedded
# broker uses) must give exactly the answer Mosquitto gives with the generated acl file.
PUBLISH_CASES = [
    (A, f"from/{A}/update"),
    (A, f"from/{A}/status"),
    (A, f"from/{A}"),
    (A, f"from/{B}/update"),
    (A, f"to/{A}/task"),
    (A, "server/status"),
    (A, "elsewhere"),
    ("server", f"to/{A}/task"),
    ("server", "server/status"),
    ("server", f"from/{A}/update"),
]


def test_mosquitto_and_is_allowed_agree_on_publish(mosquitto, fleet, paho_client):
    clients = {
        A: _connect(paho_client, mosquitto, fleet.device(A)),
        "server": _connect(paho_client, mosquitto, fleet.server),
    }
    for who, rel in PUBLISH_CASES:
        topic = f"{_base(fleet)}/{rel}"
        broker_says = not clients[who].publish(topic, b"x").is_failure
        assert broker_says == is_allowed(fleet.fleet, "server", who, topic, "publish"), (who, topic)
    # Outside the fleet even the server has no rights.
    assert clients["server"].publish("fedhft/v1/other-fleet/server/status", b"x").is_failure


def test_mosquitto_passwd_hashes_interoperate(tmp_path):
    require("mosquitto_passwd")
    binary = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    path = tmp_path / "pw"
    subprocess.run([binary, "-c", "-b", str(path), "alice", "s3cret"], check=True, capture_output=True)
    hashed = read_password_file(path)["alice"]
    assert verify_password("s3cret", hashed) and not verify_password("wrong", hashed)
    assert hash_password("s3cret").startswith("$7$101$")


def test_broken_config_fails_fast_with_the_log_tail(fleet):
    (fleet.dir / "acl").unlink()
    with pytest.raises(BrokerStartError, match="acl"):
        MosquittoBroker(fleet).start()


def test_fixed_port_in_use_is_reported(fleet):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(BrokerStartError, match="already in use"):
            MosquittoBroker(fleet, port=busy.getsockname()[1]).start()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1:1884", BrokerUrl("127.0.0.1", 1884, False)),
        ("mqtts://broker.example:8884", BrokerUrl("broker.example", 8884, True)),
        ("MQTT://localhost", BrokerUrl("localhost", 1883, False)),
        ("mqtts://[::1]", BrokerUrl("::1", 8883, True)),
    ],
)
def test_parse_broker_url(url, expected):
    assert parse_broker_url(url) == expected
    assert parse_broker_url(str(expected)) == expected


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("127.0.0.1:1883", "no scheme"),
        ("ws://h:1", "only mqtt"),
        ("mqtt://:1883", "no host"),
        ("mqtt://h:99999", "invalid port"),
        ("mqtt://u:p@h:1", "credentials"),
        ("mqtt://h:1/x", "path"),
        ("", "empty"),
        ("mqtt://h:0", "port 0"),
    ],
)
def test_parse_broker_url_errors(url, complaint):
    with pytest.raises(BrokerUrlError, match=complaint):
        parse_broker_url(url)


def test_fleet_init_refuses_bad_input(tmp_path, fleet):
    with pytest.raises(FleetConfigError, match="already holds a fleet"):
        fleet_init(fleet.dir, 2)
    with pytest.raises(FleetNameError, match="invalid device name"):
        fleet_init(tmp_path / "x", ["ok", "bad/name"])
    with pytest.raises(FleetConfigError, match="duplicate"):
        fleet_init(tmp_path / "y", ["a", "a"])
    with pytest.raises(FleetConfigError, match="does not exist"):
        load_fleet(tmp_path / "nowhere")


@pytest.mark.reliability
def test_broker_dies_with_a_killed_launcher(fleet):
    require("setpriv")  # without it a killed launcher leaves its broker running
    script = (
        "import sys, time\n"
        "from server.broker import MosquittoBroker\n"
        "b = MosquittoBroker(sys.argv[1]).start()\n"
        "print(b.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    launcher = subprocess.Popen([sys.executable, "-c", script, str(fleet.dir)], stdout=subprocess.PIPE, text=True)
    try:
        broker_pid = int(launcher.stdout.readline())
        os.kill(broker_pid, 0)  # running
    finally:
        launcher.kill()  # SIGKILL: no finalizer, no atexit
        launcher.wait()
        launcher.stdout.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(broker_pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(broker_pid, 9)  # do not leak it even when the test fails
    pytest.fail(f"broker {broker_pid} outlived its SIGKILLed launcher")

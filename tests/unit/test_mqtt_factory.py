"""The one MQTT client factory (``fedhft.mqtt``): client-id rules, Last Will, MQTT 5 vs 3.1.1 session
settings, the packet-size check, and the defaults both sides take from it. No broker: these read the
paho client the factory builds (its CONNECT is never sent)."""

from __future__ import annotations

import pytest

pytest.importorskip("paho.mqtt.client")

import paho.mqtt.client as paho  # noqa: E402

from fedhft.mqtt import (  # noqa: E402
    DEFAULT_KEEPALIVE_S,
    DEFAULT_MAX_PACKET_SIZE,
    DEVICE_SESSION_EXPIRY_S,
    MQTT_MAX_PACKET,
    SERVER_SESSION_EXPIRY_S,
    ClientSpec,
    MqttConnection,
    Will,
    device_client_id,
    is_mqtt5,
    server_client_id,
)
from fedhft.protocol import PayloadTooLarge  # noqa: E402

URL = "mqtt://127.0.0.1:1"


# ----------------------------------------------------------------------------- client ids


def test_device_client_id_is_the_id_plus_a_tag_of_its_secret():
    # Golden values: the ids devices had before the factory (their broker sessions must carry over).
    assert device_client_id("dev-000", "s3cret") == "dev-000-04fd224e801084a7"
    assert device_client_id("dev-000", None) == "dev-000" == device_client_id("dev-000", "")
    assert device_client_id("dev-000", "other") != device_client_id("dev-000", "s3cret")


def test_server_client_id_is_fleet_secret_and_run_tag():
    assert server_client_id("fleet", "server", "pw", "abababab") == "fedhft-server-fleet-e31035b19859dbde-abababab"
    assert server_client_id("fleet", "server", "pw") == "fedhft-server-fleet-e31035b19859dbde"
    assert server_client_id("fleet", None, "pw") == "fedhft-server-fleet-93c8b69de57b5cbb"
    assert server_client_id("fleet", None, None, "abababab") == "fedhft-server-fleet-abababab"


def test_the_server_package_tags_its_id_with_the_run():
    from server._mqtt import server_client_id as for_run

    assert for_run("fleet", "server", "pw", "ab" * 16) == server_client_id("fleet", "server", "pw", "abababab")
    assert for_run("fleet", "server", "pw") == server_client_id("fleet", "server", "pw")


def test_the_connection_sends_the_id_it_is_given():
    conn = MqttConnection(ClientSpec(URL, "dev-000-04fd224e801084a7"))
    assert conn.paho._client_id == b"dev-000-04fd224e801084a7"


# ----------------------------------------------------------------------------- will, credentials, TLS


def test_the_will_is_qos1_and_retained():
    conn = MqttConnection(ClientSpec(URL, "c", will=Will("fedhft/v1/f/from/c/status", b"offline")))
    c = conn.paho
    assert (c._will, c._will_topic, c._will_payload, c._will_qos, c._will_retain) == (
        True,
        b"fedhft/v1/f/from/c/status",
        b"offline",
        1,
        True,
    )
    assert not MqttConnection(ClientSpec(URL, "c")).paho._will


def test_credentials_tls_and_client_knobs():
    c = MqttConnection(
        ClientSpec(
            "mqtts://127.0.0.1:8883",
            "c",
            "user",
            "pw",
            reconnect=False,
            reconnect_delay_s=(2, 30),
            max_inflight=100,
            manual_ack=True,
        )
    ).paho
    assert (c._username, c._password) == (b"user", b"pw")
    assert c._ssl and c._ssl_context is not None
    assert (c._reconnect_on_failure, c._reconnect_min_delay, c._reconnect_max_delay) == (False, 2, 30)
    assert c._max_inflight_messages == 100 and c._manual_ack
    plain = MqttConnection(ClientSpec(URL, "c")).paho
    assert plain._username is None and not plain._ssl and not plain._manual_ack


# ----------------------------------------------------------------------------- MQTT 5 vs 3.1.1


def test_mqtt5_session_goes_on_connect_with_properties():
    conn = MqttConnection(ClientSpec(URL, "c", clean_start=False, session_expiry_s=600, receive_maximum=1000))
    assert conn.mqtt5 and conn.paho.protocol == paho.MQTTv5
    kwargs = conn._connect_kwargs()
    assert (kwargs["host"], kwargs["port"], kwargs["keepalive"]) == ("127.0.0.1", 1, DEFAULT_KEEPALIVE_S)
    assert kwargs["clean_start"] is False
    assert (kwargs["properties"].SessionExpiryInterval, kwargs["properties"].ReceiveMaximum) == (600, 1000)
    assert conn.disconnect_properties(end_session=True).SessionExpiryInterval == 0
    assert conn.disconnect_properties(end_session=False) is None


def test_mqtt5_without_session_settings_sends_no_properties():
    conn = MqttConnection(ClientSpec(URL, "c"))
    assert conn.connect_properties is None and conn._connect_kwargs()["clean_start"] is True


@pytest.mark.parametrize("clean_start", [False, True])
def test_mqtt311_session_is_a_client_flag_and_connect_has_no_properties(clean_start):
    conn = MqttConnection(
        ClientSpec(URL, "c", protocol="3.1.1", clean_start=clean_start, session_expiry_s=600, receive_maximum=1000)
    )
    assert not conn.mqtt5 and conn.paho.protocol == paho.MQTTv311
    assert conn.paho._clean_session is clean_start
    assert conn.connect_properties is None
    assert set(conn._connect_kwargs()) == {"host", "port", "keepalive"}  # paho refuses the rest on 3.1.1
    assert conn.disconnect_properties(end_session=True) is None


def test_an_unknown_protocol_is_a_setting_to_fix():
    assert is_mqtt5("5") and not is_mqtt5("3.1.1")
    with pytest.raises(ValueError, match="'5' or '3.1.1'"):
        MqttConnection(ClientSpec(URL, "c", protocol="4"))


# ----------------------------------------------------------------------------- packet size


def test_publish_over_the_limit_raises_before_anything_is_sent():
    conn = MqttConnection(ClientSpec(URL, "c", max_packet_size=4096))
    sent = []
    conn.paho.publish = lambda *a, **k: sent.append(a)
    with pytest.raises(PayloadTooLarge, match="max_packet_size 4096"):
        conn.publish("fedhft/v1/f/from/c/update", b"x" * 5000)
    assert not sent
    conn.publish("fedhft/v1/f/from/c/update", b"x" * 1000)
    assert len(sent) == 1


def test_the_connack_limit_wins_over_the_configured_one():
    conn = MqttConnection(ClientSpec(URL, "c", max_packet_size=4096))
    assert conn.max_packet_size == 4096
    conn.note_connack(type("Props", (), {"MaximumPacketSize": 65536})())
    assert conn.max_packet_size == 65536 and conn.max_payload("t") > 60000
    conn.note_connack(None)  # 3.1.1: no CONNACK properties, the configured limit again
    assert conn.max_packet_size == 4096
    assert MqttConnection(ClientSpec(URL, "c", max_packet_size=0)).max_packet_size == MQTT_MAX_PACKET


def test_edge_and_server_refuse_oversize_with_the_same_type():
    from edge_runtime import MqttLink, MqttOptions
    from server._mqtt import MqttTransport

    link = MqttLink(MqttOptions(URL, "dev-000", max_packet_size=4096), [])
    transport = MqttTransport(URL, "f", "server", "pw", max_packet_size=4096)
    for publish in (link.publish, transport.publish):
        with pytest.raises(PayloadTooLarge):
            publish("fedhft/v1/f/to/dev-000/task", b"x" * 5000)


# ----------------------------------------------------------------------------- defaults have one home


def test_both_sides_take_their_defaults_from_the_factory():
    from edge_runtime import AgentConfig, MqttOptions
    from server import ServerConfig

    edge, opts = AgentConfig(), MqttOptions(URL, "d")
    assert edge.session_expiry_s == opts.session_expiry_s == DEVICE_SESSION_EXPIRY_S
    assert edge.max_packet_size == opts.max_packet_size == DEFAULT_MAX_PACKET_SIZE
    assert edge.keepalive == opts.keepalive == DEFAULT_KEEPALIVE_S
    server = ServerConfig.__dataclass_fields__
    assert server["session_expiry_s"].default == SERVER_SESSION_EXPIRY_S
    assert server["max_packet_size"].default == DEFAULT_MAX_PACKET_SIZE


def test_the_edge_link_and_server_transport_are_built_by_the_factory():
    from edge_runtime import MqttLink, MqttOptions
    from server._mqtt import RECEIVE_MAXIMUM, MqttTransport

    link = MqttLink(MqttOptions(URL, "dev-000", password="s3cret"), [], will=("st", b"off"))
    assert link._client._client_id == b"dev-000-04fd224e801084a7" and link._client._manual_ack
    assert link.conn._connect_kwargs()["clean_start"] is False
    assert link.conn.connect_properties.SessionExpiryInterval == DEVICE_SESSION_EXPIRY_S
    assert (link._client._will_topic, link._client._will_qos, link._client._will_retain) == (b"st", 1, True)
    transport = MqttTransport(URL, "f", "server", "pw")
    props = transport.conn.connect_properties
    assert (props.SessionExpiryInterval, props.ReceiveMaximum) == (SERVER_SESSION_EXPIRY_S, RECEIVE_MAXIMUM)
    assert transport.client._will_topic == b"fedhft/v1/f/server/status" and transport.client._will_retain

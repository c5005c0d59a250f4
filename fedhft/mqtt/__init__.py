"""The one MQTT client layer (paho-mqtt 2.x, MQTT 5 or 3.1.1) of the edge, the server, the
simulation, the synthetic peers and the tests: broker URLs, the client-id rules, the Last Will,
the packet-size check (``fedhft.protocol.PayloadTooLarge``) and every MQTT default. Importing it
is cheap: paho and the protocol are imported only when a client is made or used.

It sits beside ``fedhft.protocol`` rather than inside it: the protocol is the wire format,
independent of the transport (the in-process engine speaks it without a broker).
"""

from fedhft.mqtt._client import (
    DEFAULT_KEEPALIVE_S,
    DEFAULT_MAX_PACKET_SIZE,
    DEFAULT_MQTT_PROTOCOL,
    DEVICE_SESSION_EXPIRY_S,
    MQTT_MAX_PACKET,
    MQTT_PROTOCOLS,
    SERVER_SESSION_EXPIRY_S,
    ClientSpec,
    MqttConnection,
    MqttProtocol,
    Will,
    device_client_id,
    is_mqtt5,
    server_client_id,
)
from fedhft.mqtt._url import BrokerUrl, BrokerUrlError, parse_broker_url

__all__ = [
    "DEFAULT_KEEPALIVE_S",
    "DEFAULT_MAX_PACKET_SIZE",
    "DEFAULT_MQTT_PROTOCOL",
    "DEVICE_SESSION_EXPIRY_S",
    "MQTT_MAX_PACKET",
    "MQTT_PROTOCOLS",
    "SERVER_SESSION_EXPIRY_S",
    "BrokerUrl",
    "BrokerUrlError",
    "ClientSpec",
    "MqttConnection",
    "MqttProtocol",
    "Will",
    "device_client_id",
    "is_mqtt5",
    "parse_broker_url",
    "server_client_id",
]

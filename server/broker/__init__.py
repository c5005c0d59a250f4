"""Broker operations, on the server operator's side: fleet credentials, the ACL file and the broker launchers.

`fleet_init` writes a fleet folder (users, ACL, Mosquitto config, per-device credentials);
`MosquittoBroker` runs a private Mosquitto for it; `EmbeddedBroker` is the zero-setup amqtt
fallback (MQTT 3.1.1 only); `start_broker` picks one. What a device also reads stays shared
vocabulary: the credentials file (`fedhft.credentials`, re-exported here) and the ACL rules
(`fedhft.protocol.acl_lines`, `is_allowed`).
"""

from fedhft.credentials import Credentials, FleetConfigError, load_credentials
from fedhft.mqtt import BrokerUrl, BrokerUrlError, parse_broker_url
from server.broker._acl import FleetNameError, fleet_prefix, mosquitto_acl
from server.broker._base import Broker, BrokerStartError, free_port
from server.broker._embedded import EmbeddedBroker, start_broker
from server.broker._fleet_init import FleetConfig, fleet_init, load_fleet
from server.broker._mosquitto import MosquittoBroker, find_mosquitto

__all__ = [
    "Broker",
    "BrokerStartError",
    "BrokerUrl",
    "BrokerUrlError",
    "Credentials",
    "EmbeddedBroker",
    "FleetConfig",
    "FleetConfigError",
    "FleetNameError",
    "MosquittoBroker",
    "find_mosquitto",
    "fleet_init",
    "fleet_prefix",
    "free_port",
    "load_credentials",
    "load_fleet",
    "mosquitto_acl",
    "parse_broker_url",
    "start_broker",
]

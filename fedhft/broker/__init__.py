"""Broker side shared by server, simulate and tests: fleet credentials, ACL and broker launchers.

`fleet_init` writes a fleet folder (users, ACL, Mosquitto config, per-device credentials);
`MosquittoBroker` runs a private Mosquitto for it; `EmbeddedBroker` is the zero-setup amqtt
fallback (MQTT 3.1.1 only); `start_broker` picks one.
"""
from fedhft.broker._acl import FleetNameError, fleet_prefix, is_allowed, mosquitto_acl
from fedhft.broker._base import Broker, BrokerStartError, free_port
from fedhft.broker._embedded import EmbeddedBroker, start_broker
from fedhft.broker._fleet_init import (
    Credentials, FleetConfig, FleetConfigError, fleet_init, load_credentials, load_fleet,
)
from fedhft.broker._mosquitto import MosquittoBroker, find_mosquitto
from fedhft.mqtt import BrokerUrl, BrokerUrlError, parse_broker_url

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
    "is_allowed",
    "load_credentials",
    "load_fleet",
    "mosquitto_acl",
    "parse_broker_url",
    "start_broker",
]

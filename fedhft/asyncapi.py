"""The AsyncAPI 3.0 document of the protocol (``docs/asyncapi.yaml``), derived from the code: the
header schemas (``fedhft.protocol.json_schemas``), the topic tree (``Topics``, ``KIND_MESSAGE``), the
broker ACL (``acl_lines``, asked through ``is_allowed``) and the MQTT session facts of ``fedhft.mqtt``,
so that the published spec cannot drift: CI regenerates the file and compares it byte for byte
(tests/unit/protocol/test_spec_asyncapi.py).

It sits above both ``fedhft.protocol`` and ``fedhft.mqtt`` because it describes the wire format AND its
transport (session expiry, Last Wills); the protocol itself knows no transport. What the code does not
hold as data is written here once: one sentence per body, the cross-field rules, and the per-topic MQTT
facts (every message is published at QoS 1; only the two status topics are retained, and they are the
Last Will topics).

Regenerate after changing a message: ``python tools/gen_asyncapi.py`` (``--check`` only compares).
"""

from __future__ import annotations

from typing import Any

from fedhft.mqtt import DEVICE_SESSION_EXPIRY_S, SERVER_SESSION_EXPIRY_S
from fedhft.protocol import (
    ENCODINGS,
    FROM_CLIENT,
    ID_PATTERN,
    KIND_MESSAGE,
    MAGIC,
    MASK_TENSOR,
    MAX_HEADER_BYTES,
    MESSAGE_TYPES,
    PROTOCOL_MINOR,
    PROTOCOL_VERSION,
    REF_SCHEMAS,
    SCALE_SUFFIX,
    SERVER_STATUS,
    TO_CLIENT,
    UPDATE_HEADER_MAX,
    Message,
    Topics,
    acl_lines,
    is_allowed,
    json_schemas,
)

ASYNCAPI_VERSION = "3.0.0"
MQTT_BINDING_VERSION = "0.2.0"
#: Every fedhft message is published at QoS 1 (at least once: receivers dedupe).
QOS = 1
#: Topic kinds whose messages the broker retains: the two status topics, which are also the Last Wills.
RETAINED_KINDS = ("status", SERVER_STATUS)

#: What each message carries after its JSON header.
_BODIES = {
    "hello": ("empty", "No body (body_len 0)."),
    "client_status": ("empty", "No body (body_len 0)."),
    "server_status": ("empty", "No body (body_len 0)."),
    "outcome": ("empty", "No body (body_len 0)."),
    "ack": ("empty", "No body (body_len 0)."),
    "bundle_request": ("empty", "No body (body_len 0)."),
    "task": (
        "safetensors",
        f"The start state: every trainable tensor of the plan under its canonical name, "
        f"float32, whole (B not reduced), plus the flat row mask as a 1-D float32 tensor "
        f"named {MASK_TENSOR} (1 = train that output row of that B).",
    ),
    "update": (
        "safetensors",
        "The update (trained - start, each lora_B reduced to its masked rows) in the "
        f"header's encoding: fp32 or fp16 tensors, or int8 tensors each with a float32 "
        f"'<name>{SCALE_SUFFIX}' of per-row scales.",
    ),
    "bundle_chunk": ("raw", "The chunk's bytes (at most the server's chunk size)."),
}
#: Cross-field rules a JSON Schema does not express, per message type.
_RULES = {
    "task": ["hyper.lr > 0", f"the body holds {MASK_TENSOR} (1-D float32)"],
    "bundle_request": ["chunks is null unless files names exactly one file"],
    "bundle_chunk": ["index < count", "len(body) <= file_size", "sha256(body) == chunk_sha256"],
}
_ROLE = {"from": "device -> server", "to": "server -> that device", "server": "server -> every device"}


def _summary(cls: type) -> str:
    """The first line of a class docstring, without reST literal markup."""
    return (cls.__doc__ or "").strip().splitlines()[0].replace("``", "'")


def _revision(minor: int) -> str:
    return f"{PROTOCOL_VERSION}.{minor}"


# ----------------------------------------------------------------------------- topics and the ACL

# Stand-ins run through the real Topics/acl_lines, then replaced by AsyncAPI parameters, so that the
# addresses and the ACL in the document are the code's own (ids are [A-Za-z0-9_-], so no clash).
_FLEET, _CLIENT, _OTHER, _SERVER_USER = "fleet0stand0in", "client0stand0in", "other0stand0in", "server0stand0in"
_PLACEHOLDERS = ((_FLEET, "{fleet}"), (_CLIENT, "{client}"), (_SERVER_USER, "{server_user}"))


def _templated(text: str) -> str:
    for stand_in, name in _PLACEHOLDERS:
        text = text.replace(stand_in, name)
    return text


def channel_id(kind: str) -> str:
    """The AsyncAPI channel id of a topic kind: from_<kind>, to_<kind>, or server_status."""
    if kind == SERVER_STATUS:
        return SERVER_STATUS
    return f"from_{kind}" if kind in FROM_CLIENT else f"to_{kind}"


def _topic(kind: str, client: str = _CLIENT) -> str:
    topics = Topics(_FLEET)
    return topics.server_status if kind == SERVER_STATUS else getattr(topics, kind)(client)


def _direction(kind: str) -> str:
    return "server" if kind == SERVER_STATUS else ("from" if kind in FROM_CLIENT else "to")


def _acl_of(kind: str) -> dict[str, list[str]]:
    """Who the fleet ACL lets publish and subscribe on this topic (asked of the broker's own ACL check)."""
    topic = _topic(kind)
    users = (("the server", _SERVER_USER), ("the device {client}", _CLIENT), ("any other device", _OTHER))
    return {
        action: [who for who, user in users if is_allowed(_FLEET, _SERVER_USER, user, topic, action)]
        for action in ("publish", "subscribe")
    }


def _channel(kind: str) -> dict[str, Any]:
    type_ = KIND_MESSAGE[kind]
    retained = kind in RETAINED_KINDS
    params = {"fleet": {"$ref": "#/components/parameters/fleet"}}
    if kind != SERVER_STATUS:
        params["client"] = {"$ref": "#/components/parameters/client"}
    will = " It is also the Last Will topic (an offline status)." if retained else ""
    return {
        "address": _templated(_topic(kind)),
        "title": f"{type_} ({_ROLE[_direction(kind)]})",
        "description": f"Carries {type_} messages, QoS {QOS}, {'retained' if retained else 'not retained'}.{will}",
        "messages": {type_: {"$ref": f"#/components/messages/{type_}"}},
        "parameters": params,
        "x-fedhft-acl": _acl_of(kind),
    }


def _operation(kind: str) -> dict[str, Any]:
    cid, type_ = channel_id(kind), KIND_MESSAGE[kind]
    action = "send" if kind in FROM_CLIENT else "receive"
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{cid}"},
        "summary": f"The device {'publishes' if action == 'send' else 'subscribes to'} {type_} "
        f"(the server does the opposite).",
        "messages": [{"$ref": f"#/channels/{cid}/messages/{type_}"}],
        "bindings": {"mqtt": {"qos": QOS, "retain": kind in RETAINED_KINDS, "bindingVersion": MQTT_BINDING_VERSION}},
    }


def _kinds() -> list[str]:
    return [SERVER_STATUS, *FROM_CLIENT, *TO_CLIENT]


# ----------------------------------------------------------------------------- the document

#: The session client-id rules (fedhft.mqtt: device_client_id, server_client_id); tests check the code against them.
DEVICE_CLIENT_ID = "{client}-{hex(sha256(utf8('fedhft-session|' + client + '|' + password)))[:16]}"
SERVER_CLIENT_ID = (
    "fedhft-server-{fleet}-{hex(sha256(utf8('fedhft-server-id|' + fleet + '|' + username + '|' "
    "+ password)))[:16]}-{run_tag}"
)

_INFO = f"""The MQTT 5 API between a fedhft server and its devices, generated from the message classes
(fedhft.protocol); docs/PROTOCOL.md explains it for people. The operations are the DEVICE's: it sends
on the from_* channels and receives on to_* and server_status; the server does the opposite.

Every payload is one envelope: {MAGIC.decode()!r} | version byte ({PROTOCOL_VERSION}) | header length (u32,
big-endian) | header (canonical JSON: sorted keys, no spaces, UTF-8, at most {MAX_HEADER_BYTES} bytes) | body.
A message's header schema is its x-fedhft-header, its body is described by its x-fedhft-body.

Versions: {PROTOCOL_VERSION} is the major (the version byte and the header's schema); a payload of another
major is refused. Revision {_revision(PROTOCOL_MINOR)} (this document) only adds optional fields to 1.0:
readers ignore header keys they do not know, a field marked 'Added in 1.N' may be absent, and every
other field is always sent, optional ones as null."""


def _server() -> dict[str, Any]:
    will_topic = _templated(_topic("status"))
    return {
        "host": "{host}:{port}",
        "protocol": "mqtt",
        "protocolVersion": "5",
        "description": "Mosquitto 2 (or EMQX) with per-device users and the fleet ACL (x-fedhft-acl). "
        "MQTT 3.1.1 works too, but then an ACL refusal is silent.",
        "variables": {"host": {"default": "127.0.0.1"}, "port": {"default": "1883"}},
        "security": [{"$ref": "#/components/securitySchemes/fleetUser"}],
        "bindings": {
            "mqtt": {
                "clientId": DEVICE_CLIENT_ID,
                "cleanSession": False,
                "lastWill": {
                    "topic": will_topic,
                    "qos": QOS,
                    "retain": True,
                    "message": "a client_status envelope with state offline (binary)",
                },
                "sessionExpiryInterval": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "Long enough to cover a device's absence (fedhft edge: "
                    f"{DEVICE_SESSION_EXPIRY_S} s).",
                },
                "bindingVersion": MQTT_BINDING_VERSION,
            }
        },
        "x-fedhft-server-session": {
            "clientId": SERVER_CLIENT_ID,
            "cleanSession": False,
            "lastWill": {
                "topic": _templated(_topic(SERVER_STATUS)),
                "qos": QOS,
                "retain": True,
                "message": "a server_status envelope with state offline (binary)",
            },
            "sessionExpiryInterval": SERVER_SESSION_EXPIRY_S,
            "description": "The server's own session: one per server run (state dir); a finished run ends it "
            "(session expiry 0). Without a password the secret part is left out; without a run "
            "id (a state dir from before run ids) the run tag is.",
        },
    }


def _message(cls: type[Message]) -> dict[str, Any]:
    body_format, body_text = _BODIES[cls.TYPE]
    out: dict[str, Any] = {
        "name": cls.TYPE,
        "title": cls.__name__,
        "summary": _summary(cls),
        "contentType": "application/octet-stream",
        "payload": {"$ref": REF_SCHEMAS + "Envelope"},
        "x-fedhft-header": {"$ref": REF_SCHEMAS + f"{cls.__name__}Header"},
        "x-fedhft-body": {"format": body_format, "description": body_text},
    }
    if cls.TYPE in _RULES:
        out["x-fedhft-rules"] = list(_RULES[cls.TYPE])
    if cls.TYPE == "update":
        out["x-fedhft-header-max-bytes"] = UPDATE_HEADER_MAX
    return out


def _components() -> dict[str, Any]:
    ids = f"1-64 characters from A-Z a-z 0-9 _ - (pattern ^{ID_PATTERN.pattern}$)."
    return {
        "schemas": json_schemas(),
        "messages": {cls.TYPE: _message(cls) for cls in MESSAGE_TYPES.values()},
        "parameters": {
            "fleet": {"description": f"The fleet id: {ids}", "examples": ["demo"]},
            "client": {
                "description": f"The device's client id (= its broker username): {ids}",
                "examples": ["dev-000"],
            },
        },
        "securitySchemes": {
            "fleetUser": {
                "type": "userPassword",
                "description": "Each device logs in with username = its client id and its own password "
                "(fedhft server fleet-init writes them); the server has its own user.",
            }
        },
    }


def _acl() -> dict[str, Any]:
    return {
        "description": "Mosquitto acl_file of a fleet (fedhft.protocol.acl_lines). A device may publish only "
        "under from/<itself>/ and read only to/<itself>/ and server/; the server user reads and "
        "writes the whole fleet tree. Each channel's x-fedhft-acl is this file's verdict.",
        "acl_file": [_templated(line) for line in acl_lines(_FLEET, _SERVER_USER)],
    }


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the protocol, as a plain dict (keys in output order)."""
    kinds = _kinds()
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {"title": "fedhft wire protocol", "version": _revision(PROTOCOL_MINOR), "description": _INFO},
        "defaultContentType": "application/octet-stream",
        "servers": {"broker": _server()},
        "channels": {channel_id(k): _channel(k) for k in kinds},
        "operations": {f"{_operation(k)['action']}_{channel_id(k)}": _operation(k) for k in kinds},
        "components": _components(),
        "x-fedhft-acl": _acl(),
        "x-fedhft-encodings": list(ENCODINGS),
    }


_BANNER = (
    "# Generated by fedhft.asyncapi.asyncapi_yaml() from the message classes: do not edit by hand.\n"
    "# Regenerate with `python tools/gen_asyncapi.py`; CI fails when this file differs. See docs/PROTOCOL.md.\n"
)


def asyncapi_yaml() -> str:
    """``asyncapi_document()`` as the YAML text of docs/asyncapi.yaml (deterministic)."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        # Multi-line text as a literal block, so the file reads like the source.
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    Dumper.add_representer(str, text)
    return _BANNER + yaml.dump(asyncapi_document(), Dumper=Dumper, sort_keys=False, allow_unicode=True, width=110)


__all__ = [
    "ASYNCAPI_VERSION",
    "DEVICE_CLIENT_ID",
    "QOS",
    "RETAINED_KINDS",
    "SERVER_CLIENT_ID",
    "asyncapi_document",
    "asyncapi_yaml",
    "channel_id",
]

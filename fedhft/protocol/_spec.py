"""The protocol as data for tools: a JSON Schema per message header and the AsyncAPI 3.0 document
(``docs/asyncapi.yaml``), derived from the message classes (their ``FIELDS`` validators, ``SINCE``
revisions and defaults), the topic tree (``Topics``, ``KIND_MESSAGE``) and the broker ACL
(``acl_lines``), so that the published spec cannot drift from the code: CI regenerates the file and
compares it byte for byte (tests/unit/protocol/test_spec_asyncapi.py).

What the classes do not hold as data is written here once, next to the derivation: one sentence per
header field and per body, and the per-topic MQTT facts (every message is published at QoS 1; only
the two status topics are retained, and they are the Last Will topics). A field without a sentence
makes the generator raise, so a new field cannot ship undocumented.

Regenerate after changing a message: ``python tools/gen_asyncapi.py`` (``--check`` only compares).
"""
from __future__ import annotations

import json
import re
from typing import Any

from fedhft.protocol import _fields as F
from fedhft.protocol._envelope import ENVELOPE_KEYS, MAGIC, MAX_HEADER_BYTES, PROTOCOL_MINOR, PROTOCOL_VERSION
from fedhft.protocol._messages import MASK_TENSOR, MESSAGE_TYPES, UPDATE_HEADER_MAX, Hyper, Message
from fedhft.protocol._topics import FROM_CLIENT, KIND_MESSAGE, SERVER_STATUS, TO_CLIENT, Topics, acl_lines
from fedhft.protocol._update_codec import ENCODINGS, SCALE_SUFFIX

ASYNCAPI_VERSION = "3.0.0"
MQTT_BINDING_VERSION = "0.2.0"
#: Every fedhft message is published at QoS 1 (at least once: receivers dedupe).
QOS = 1
#: Topic kinds whose messages the broker retains: the two status topics, which are also the Last Wills.
RETAINED_KINDS = ("status", SERVER_STATUS)
_REF_SCHEMAS = "#/components/schemas/"

# ----------------------------------------------------------------------------- the words

#: Header fields, by name (a message type may refine one in ``_TYPE_FIELD_DOCS``).
_FIELD_DOCS = {
    "fleet": "The fleet id; equals the {fleet} level of the topic.",
    "client": "The device's client id (= its broker username); equals the {client} level of the topic.",
    "round": "The round number (0-based).",
    "task_id": "The task's opaque id, r<round>-<client>-<digest[:10]>.<run tag>: match tasks, updates, outcomes "
               "and acks by it, never by round alone. The tag after the last '.' names the server run.",
    "profile": "The device's measured DeviceProfile (devices.DeviceProfile.to_dict); the server picks the tier "
               "from it. Unknown profile keys are ignored; a newer profile schema_version (its major) is "
               "refused. An invalid profile registers the device but it is never tasked.",
    "backends": "Backends the device can train, most preferred first (executorch, ort, torch).",
    "tier_hint": "A tier the operator pinned, or null to let the server choose from the profile.",
    "runtime_version": "Free text naming the device software and version.",
    "detail": "Free text for people (e.g. 'step 10/50'); empty when there is nothing to say.",
    "battery_percent": "Battery charge in percent (0-100, the unit of the Hello profile and of the tiers' "
                       "thresholds), or null when unknown or there is no battery.",
    "rss_mb": "Resident memory of the training process in MB, or null when not measured.",
    "ts": "Sender's wall clock, seconds since the Unix epoch (0 = unknown).",
    "tier": "The tier whose plan the task trains.",
    "backend": "The backend of the bundle to train.",
    "bundle_id": "The bundle's id (<tier>.<backend>.<manifest sha256[:16]>); ask for its files with bundle_request.",
    "bundle_sha256": "sha256 of the bundle's manifest.json.",
    "plan": "The AdapterPlan the task trains (devices.AdapterPlan.to_dict).",
    "hyper": "Local training hyper-parameters (see Hyper).",
    "deadline_ts": "Wall-clock deadline (Unix seconds): the round closes then, and a later update is refused "
                   "(round_closed, or replay once the next round is open).",
    "num_examples": "Training examples used this round; the server's aggregation weight.",
    "metrics": "Name -> finite number. Keys the server reads: accuracy, val_acc_after, acc, eval_accuracy (the "
               "first present is the client's accuracy), loss, val_loss_after, val_acc_before, "
               "val_bal_acc_before, val_bal_acc_after, val_majority_acc, val_examples; others are stored.",
    "encoding": "The update body's encoding; must equal the task's hyper.encoding (else wrong_encoding).",
    "kind": "Why the task produced no update.",
    "reason": "Free text for people; for a rejected ack, '<reason code>: <detail>'.",
    "update_digest": "sha256 of the update's body (its identity), as computed by the server.",
    "status": "stored (durably), duplicate (already stored), or rejected (see reason).",
    "files": "Bundle file names to send, or null for every file (manifest.json first).",
    "chunks": "Chunk indices of the ONE file in files to send, or null for all of its chunks.",
    "file": "Bundle file name: a relative POSIX path.",
    "index": "This chunk's index, 0-based, < count.",
    "count": "How many chunks the file has (an empty file is one empty chunk).",
    "chunk_sha256": "sha256 of this chunk's bytes (the body).",
    "file_sha256": "sha256 of the whole file.",
    "file_size": "Size of the whole file in bytes.",
    "lr": "Learning rate of the round's AdamW (> 0).",
    "local_steps": "Optimizer steps to take (0 = run the epochs).",
    "epochs": "Passes over the local training data (used when local_steps is 0).",
    "batch_size": "Batch size.",
    "seq_len": "Maximum tokens per example.",
}
_TYPE_FIELD_DOCS = {
    ("client_status", "state"): "The device's state; its Last Will says offline.",
    ("client_status", "round"): "The round the device is working on, or null.",
    ("server_status", "state"): "The server's state; its Last Will says offline, a finished run says finished.",
    ("server_status", "round"): "The open round, or null between rounds.",
    ("ack", "reason"): "Empty when stored; for rejected, '<reason code>: <detail>' (stale_run, wrong_encoding, ...).",
    ("outcome", "metrics"): "Name -> finite number (e.g. peak_rss_mb); stored, not read by the server.",
    ("outcome", "reason"): "Free text for people.",
    ("hyper", "encoding"): "The encoding the update must use (an update in another is refused wrong_encoding).",
}
#: What each message carries after its JSON header.
_BODIES = {
    "hello": ("empty", "No body (body_len 0)."),
    "client_status": ("empty", "No body (body_len 0)."),
    "server_status": ("empty", "No body (body_len 0)."),
    "outcome": ("empty", "No body (body_len 0)."),
    "ack": ("empty", "No body (body_len 0)."),
    "bundle_request": ("empty", "No body (body_len 0)."),
    "task": ("safetensors", f"The start state: every trainable tensor of the plan under its canonical name, "
                            f"float32, whole (B not reduced), plus the flat row mask as a 1-D float32 tensor "
                            f"named {MASK_TENSOR} (1 = train that output row of that B)."),
    "update": ("safetensors", "The update (trained - start, each lora_B reduced to its masked rows) in the "
                              f"header's encoding: fp32 or fp16 tensors, or int8 tensors each with a float32 "
                              f"'<name>{SCALE_SUFFIX}' of per-row scales."),
    "bundle_chunk": ("raw", "The chunk's bytes (at most the server's chunk size)."),
}
#: Cross-field rules a JSON Schema does not express, per message type.
_RULES = {
    "task": ["hyper.lr > 0", f"the body holds {MASK_TENSOR} (1-D float32)"],
    "bundle_request": ["chunks is null unless files names exactly one file"],
    "bundle_chunk": ["index < count", "len(body) <= file_size", "sha256(body) == chunk_sha256"],
}
_ROLE = {"from": "device -> server", "to": "server -> that device", "server": "server -> every device"}


def _field_doc(type_: str, name: str) -> str:
    doc = _TYPE_FIELD_DOCS.get((type_, name)) or _FIELD_DOCS.get(name)
    if doc is None:
        raise KeyError(f"{type_}.{name} has no description: add one to fedhft/protocol/_spec.py (_FIELD_DOCS)")
    return doc


# ----------------------------------------------------------------------------- validators -> JSON Schema


def _anchored(pattern: re.Pattern[str]) -> str:
    # The validators fullmatch; a JSON Schema pattern matches anywhere unless anchored.
    return f"^{pattern.pattern}$"


def _closure(check: Any) -> dict[str, Any]:
    return dict(zip(check.__code__.co_freevars, (c.cell_contents for c in check.__closure__ or ())))


def _number(lo: float, hi: float, kind: str) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind}
    if lo > float("-inf"):
        out["minimum"] = lo
    if hi < float("inf"):
        out["maximum"] = hi
    return out


def schema_of(check: Any) -> dict[str, Any]:
    """The JSON Schema of one ``fedhft.protocol._fields`` validator (read from its closure)."""
    if check is F.json_object:
        return {"type": "object", "description": "A JSON object with string keys."}
    if check is F.file_path:
        return {"type": "string", "minLength": 1, "maxLength": 255, "pattern": _anchored(F.FILE_PATTERN),
                "description": "No empty, '.' or '..' segments."}
    if getattr(check, "__func__", None) is Hyper.check.__func__:
        return {"$ref": _REF_SCHEMAS + "Hyper"}
    kind, cells = check.__qualname__.split(".<locals>")[0], _closure(check)
    if kind == "int_":
        return _number(cells["lo"], cells["hi"], "integer")
    if kind == "float_":
        return _number(cells["lo"], cells["hi"], "number")
    if kind == "str_":
        out: dict[str, Any] = {"type": "string", "maxLength": cells["max_len"]}
        if cells["pattern"] is not None:
            out["pattern"] = _anchored(cells["pattern"])
        return out
    if kind == "enum":
        # choices: a tuple of strings or a StrEnum class (whose members are their wire strings)
        return {"type": "string", "enum": [str(c) for c in cells["choices"]]}
    if kind == "optional":
        return {"anyOf": [schema_of(cells["inner"]), {"type": "null"}]}
    if kind == "list_":
        return {"type": "array", "maxItems": cells["max_items"], "items": schema_of(cells["inner"])}
    if kind == "float_dict":
        return {"type": "object", "maxProperties": cells["max_items"], "propertyNames": schema_of(cells["key"]),
                "additionalProperties": schema_of(cells["num"])}
    raise TypeError(f"no JSON Schema for the validator {check.__qualname__}: teach fedhft/protocol/_spec.py "
                    "(schema_of) the new validator")


def _described(schema: dict[str, Any], text: str) -> dict[str, Any]:
    if "$ref" in schema:  # siblings of $ref are ignored by JSON Schema draft 7: wrap it
        return {"allOf": [schema], "description": text}
    return {**schema, "description": text}


def _summary(cls: type) -> str:
    """The first line of a class docstring, without reST literal markup."""
    return (cls.__doc__ or "").strip().splitlines()[0].replace("``", "'")


def _revision(minor: int) -> str:
    return f"{PROTOCOL_VERSION}.{minor}"


def header_schema(cls: type[Message]) -> dict[str, Any]:
    """JSON Schema of the JSON header of one message type (the envelope keys included)."""
    defaults = {f.name: f.default for f in cls.__dataclass_fields__.values()}
    props: dict[str, Any] = {
        "type": {"const": cls.TYPE, "description": "The message type."},
        "schema": {"const": PROTOCOL_VERSION, "description": "The protocol's major version."},
        "body_sha256": _described({"$ref": _REF_SCHEMAS + "Sha256"}, "sha256 of the body (of b'' when empty)."),
        "body_len": {"type": "integer", "minimum": 0, "description": "Length of the body in bytes."},
    }
    for name, check in cls.FIELDS.items():
        text = _field_doc(cls.TYPE, name)
        if name in cls.SINCE:
            text += (f" Added in {_revision(cls.SINCE[name])}: absent from older senders "
                     f"({json.dumps(defaults[name])} stands in).")
        props[name] = _described(schema_of(check), text)
        if name in cls.SINCE:
            props[name]["default"] = defaults[name]
    required = list(ENVELOPE_KEYS) + [n for n in cls.FIELDS if n not in cls.SINCE and n not in ENVELOPE_KEYS]
    return {
        "title": f"{cls.__name__} header",
        "description": _summary(cls) + " Unknown keys are ignored (1.x rule); "
                       "every listed key is sent, optional ones as null.",
        "type": "object",
        "required": required,
        "properties": props,
        "additionalProperties": True,
    }


def hyper_schema() -> dict[str, Any]:
    return {
        "title": "Hyper",
        "description": "A task's local training hyper-parameters. Unknown keys are ignored (1.x rule).",
        "type": "object",
        "required": list(Hyper.FIELDS),
        "properties": {n: _described(schema_of(c), _field_doc("hyper", n)) for n, c in Hyper.FIELDS.items()},
        "additionalProperties": True,
    }


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
    from fedhft.protocol._acl import is_allowed

    topic = _topic(kind)
    users = (("the server", _SERVER_USER), ("the device {client}", _CLIENT), ("any other device", _OTHER))
    return {action: [who for who, user in users if is_allowed(_FLEET, _SERVER_USER, user, topic, action)]
            for action in ("publish", "subscribe")}


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
SERVER_CLIENT_ID = ("fedhft-server-{fleet}-{hex(sha256(utf8('fedhft-server-id|' + fleet + '|' + username + '|' "
                    "+ password)))[:16]}-{run_tag}")

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
    from fedhft.mqtt import DEVICE_SESSION_EXPIRY_S, SERVER_SESSION_EXPIRY_S

    will_topic = _templated(_topic("status"))
    return {
        "host": "{host}:{port}",
        "protocol": "mqtt",
        "protocolVersion": "5",
        "description": "Mosquitto 2 (or EMQX) with per-device users and the fleet ACL (x-fedhft-acl). "
                       "MQTT 3.1.1 works too, but then an ACL refusal is silent.",
        "variables": {"host": {"default": "127.0.0.1"}, "port": {"default": "1883"}},
        "security": [{"$ref": "#/components/securitySchemes/fleetUser"}],
        "bindings": {"mqtt": {
            "clientId": DEVICE_CLIENT_ID,
            "cleanSession": False,
            "lastWill": {"topic": will_topic, "qos": QOS, "retain": True,
                         "message": "a client_status envelope with state offline (binary)"},
            "sessionExpiryInterval": {"type": "integer", "minimum": 1,
                                      "description": "Long enough to cover a device's absence (fedhft edge: "
                                                     f"{DEVICE_SESSION_EXPIRY_S} s)."},
            "bindingVersion": MQTT_BINDING_VERSION,
        }},
        "x-fedhft-server-session": {
            "clientId": SERVER_CLIENT_ID,
            "cleanSession": False,
            "lastWill": {"topic": _templated(_topic(SERVER_STATUS)), "qos": QOS, "retain": True,
                         "message": "a server_status envelope with state offline (binary)"},
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
        "payload": {"$ref": _REF_SCHEMAS + "Envelope"},
        "x-fedhft-header": {"$ref": _REF_SCHEMAS + f"{cls.__name__}Header"},
        "x-fedhft-body": {"format": body_format, "description": body_text},
    }
    if cls.TYPE in _RULES:
        out["x-fedhft-rules"] = list(_RULES[cls.TYPE])
    if cls.TYPE == "update":
        out["x-fedhft-header-max-bytes"] = UPDATE_HEADER_MAX
    return out


def _components() -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "Envelope": {"type": "string", "format": "binary", "description": "The fedhft envelope (see info)."},
        "Sha256": {"type": "string", "pattern": _anchored(F.HEX64), "description": "64 lowercase hex digits."},
        "Hyper": hyper_schema(),
    }
    schemas.update({f"{cls.__name__}Header": header_schema(cls) for cls in MESSAGE_TYPES.values()})
    ids = f"1-64 characters from A-Z a-z 0-9 _ - (pattern {_anchored(F.ID_PATTERN)})."
    return {
        "schemas": schemas,
        "messages": {cls.TYPE: _message(cls) for cls in MESSAGE_TYPES.values()},
        "parameters": {"fleet": {"description": f"The fleet id: {ids}", "examples": ["demo"]},
                       "client": {"description": f"The device's client id (= its broker username): {ids}",
                                  "examples": ["dev-000"]}},
        "securitySchemes": {"fleetUser": {
            "type": "userPassword",
            "description": "Each device logs in with username = its client id and its own password "
                           "(fedhft server fleet-init writes them); the server has its own user."}},
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


_BANNER = ("# Generated by fedhft.protocol.asyncapi_yaml() from the message classes: do not edit by hand.\n"
           "# Regenerate with `python tools/gen_asyncapi.py`; CI fails when this file differs. See docs/PROTOCOL.md.\n")


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
    "header_schema",
    "hyper_schema",
    "schema_of",
]

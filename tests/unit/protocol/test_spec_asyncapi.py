"""docs/asyncapi.yaml is what the generator makes of the message classes (so the two cannot drift),
it is a structurally sound AsyncAPI 3.0 document, and its header schemas accept what ``encode``
writes and refuse what ``decode`` refuses."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import pytest
import yaml

from fedhft.asyncapi import RETAINED_KINDS, asyncapi_document, asyncapi_yaml, channel_id
from fedhft.protocol import KIND_MESSAGE, MESSAGE_TYPES, Topics, encode
from fedhft.protocol._envelope import ENVELOPE_KEYS, PREFIX_LEN

from .protocol_samples import samples

ROOT = Path(__file__).resolve().parents[3]
DOC_PATH = ROOT / "docs" / "asyncapi.yaml"


@pytest.fixture(scope="module")
def doc() -> dict:
    return yaml.safe_load(DOC_PATH.read_text(encoding="utf-8"))


def test_the_committed_document_is_the_generated_one():
    assert DOC_PATH.read_text(encoding="utf-8") == asyncapi_yaml(), (
        "docs/asyncapi.yaml differs from what the message classes generate: run `python tools/gen_asyncapi.py` "
        "and commit docs/asyncapi.yaml (and explain the change in docs/PROTOCOL.md)"
    )


def test_generation_is_deterministic():
    assert asyncapi_yaml() == asyncapi_yaml()
    assert yaml.safe_load(asyncapi_yaml()) == json.loads(json.dumps(asyncapi_document()))


# ----------------------------------------------------------------------------- structure


def _refs(node: Any, where: str = "#"):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield where, value
            else:
                yield from _refs(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _refs(value, f"{where}/{i}")


def _resolve(doc: dict, ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref}: only local references are used"
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve (no {part!r})"
        node = node[part]
    return node


def test_required_asyncapi_3_top_level_keys(doc):
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] and re.fullmatch(r"\d+\.\d+", doc["info"]["version"])
    for key in ("servers", "channels", "operations", "components"):
        assert isinstance(doc[key], dict) and doc[key], key
    allowed = {"asyncapi", "id", "info", "servers", "defaultContentType", "channels", "operations", "components"}
    assert not {k for k in doc if k not in allowed and not k.startswith("x-")}
    for server in doc["servers"].values():
        assert server["host"] and server["protocol"] == "mqtt"


def test_every_ref_resolves(doc):
    refs = list(_refs(doc))
    assert len(refs) > 50
    for where, ref in refs:
        assert _resolve(doc, ref) is not None, where


def test_channels_declare_exactly_the_parameters_of_their_address(doc):
    for cid, channel in doc["channels"].items():
        used = set(re.findall(r"{(\w+)}", channel["address"]))
        assert used == set(channel["parameters"]), cid


def test_operations_use_messages_of_their_own_channel(doc):
    for oid, op in doc["operations"].items():
        assert op["action"] in ("send", "receive"), oid
        channel = op["channel"]["$ref"]
        for message in op["messages"]:
            assert message["$ref"].startswith(channel + "/messages/"), oid
        mqtt = op["bindings"]["mqtt"]
        assert mqtt["qos"] in (0, 1, 2) and isinstance(mqtt["retain"], bool)


# ----------------------------------------------------------------------------- against the code


def test_every_message_type_has_a_message_a_channel_and_a_header_schema(doc):
    messages = doc["components"]["messages"]
    assert set(messages) == set(MESSAGE_TYPES)
    on_channels = {name for ch in doc["channels"].values() for name in ch["messages"]}
    assert on_channels == set(MESSAGE_TYPES)
    for type_, cls in MESSAGE_TYPES.items():
        schema = _resolve(doc, messages[type_]["x-fedhft-header"]["$ref"])
        assert set(schema["properties"]) == set(ENVELOPE_KEYS) | set(cls.FIELDS), type_
        assert set(schema["required"]) == (set(ENVELOPE_KEYS) | set(cls.FIELDS)) - set(cls.SINCE), type_


def test_addresses_are_the_topics_of_the_code(doc):
    topics = Topics("demo")
    for cid, channel in doc["channels"].items():
        topic = channel["address"].replace("{fleet}", "demo").replace("{client}", "dev-1")
        kind, client = topics.parse(topic)
        assert channel_id(kind) == cid and client in (None, "dev-1")
        assert list(channel["messages"]) == [KIND_MESSAGE[kind]]
        op = next(o for o in doc["operations"].values() if o["channel"]["$ref"] == f"#/channels/{cid}")
        assert op["bindings"]["mqtt"] == {"qos": 1, "retain": kind in RETAINED_KINDS, "bindingVersion": "0.2.0"}


def test_the_last_wills_are_on_retained_status_channels(doc):
    mqtt = doc["servers"]["broker"]["bindings"]["mqtt"]
    wills = [mqtt["lastWill"], doc["servers"]["broker"]["x-fedhft-server-session"]["lastWill"]]
    addresses = {ch["address"]: cid for cid, ch in doc["channels"].items()}
    assert sorted(addresses[w["topic"]] for w in wills) == ["from_status", "server_status"]
    assert all(w["qos"] == 1 and w["retain"] for w in wills)
    assert mqtt["cleanSession"] is False


def test_the_acl_confines_each_device_to_its_own_topics(doc):
    for cid, channel in doc["channels"].items():
        acl = channel["x-fedhft-acl"]
        assert "any other device" not in acl["publish"], cid
        if cid.startswith("from_"):
            assert acl["publish"] == ["the server", "the device {client}"] and acl["subscribe"] == ["the server"]
        elif cid.startswith("to_"):
            assert acl["publish"] == ["the server"] and "any other device" not in acl["subscribe"]


# ----------------------------------------------------------------------------- the header schemas


def _type_ok(value: Any, kind: str) -> bool:
    checks = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "null": lambda v: v is None,
        "integer": lambda v: type(v) is int,
        "number": lambda v: type(v) in (int, float),
    }
    return checks[kind](value)


def _errors(doc: dict, schema: dict, value: Any, where: str = "$") -> list[str]:
    """The JSON Schema keywords the generator writes, checked the way draft 7 does (a small subset)."""
    if "$ref" in schema:
        return _errors(doc, _resolve(doc, schema["$ref"]), value, where)
    out: list[str] = []
    for sub in schema.get("allOf", []):
        out += _errors(doc, sub, value, where)
    if "anyOf" in schema and all(_errors(doc, s, value, where) for s in schema["anyOf"]):
        out.append(f"{where}: matches none of anyOf")
    if "const" in schema and value != schema["const"]:
        out.append(f"{where}: != {schema['const']!r}")
    if "type" in schema and not _type_ok(value, schema["type"]):
        return out + [f"{where}: not {schema['type']}"]
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{where}: not in enum")
    return out + _scalar_errors(schema, value, where) + _container_errors(doc, schema, value, where)


def _scalar_errors(schema: dict, value: Any, where: str) -> list[str]:
    out = []
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < schema.get("minimum", value) or value > schema.get("maximum", value):
            out.append(f"{where}: out of range")
    if isinstance(value, str):
        if len(value) > schema.get("maxLength", len(value)) or len(value) < schema.get("minLength", 0):
            out.append(f"{where}: bad length")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            out.append(f"{where}: does not match {schema['pattern']}")
    return out


def _container_errors(doc: dict, schema: dict, value: Any, where: str) -> list[str]:
    out = []
    if isinstance(value, list):
        if len(value) > schema.get("maxItems", len(value)):
            out.append(f"{where}: too many items")
        for i, item in enumerate(value):
            out += _errors(doc, schema.get("items", {}), item, f"{where}[{i}]")
    if isinstance(value, dict):
        out += [f"{where}: lacks {k}" for k in schema.get("required", []) if k not in value]
        if len(value) > schema.get("maxProperties", len(value)):
            out.append(f"{where}: too many properties")
        props, extra = schema.get("properties", {}), schema.get("additionalProperties", True)
        for key, item in value.items():
            out += _errors(doc, schema.get("propertyNames", {}), key, f"{where} key {key!r}")
            sub = props.get(key, extra if isinstance(extra, dict) else {})
            out += _errors(doc, sub, item, f"{where}.{key}")
    return out


def _header(payload: bytes) -> dict:
    (n,) = struct.unpack(">I", payload[5:9])
    return json.loads(payload[PREFIX_LEN : PREFIX_LEN + n])


def _schema(doc: dict, type_: str) -> dict:
    return _resolve(doc, doc["components"]["messages"][type_]["x-fedhft-header"]["$ref"])


@pytest.mark.parametrize("msg", samples(), ids=lambda m: type(m).__name__)
def test_every_encoded_header_is_valid_against_its_schema(doc, msg):
    header = _header(encode(msg))
    assert _errors(doc, _schema(doc, msg.TYPE), header) == []


@pytest.mark.parametrize(
    "change, why",
    [
        ({"round": -1}, "out of range"),
        ({"client": "a/b"}, "does not match"),
        ({"encoding": "bf16"}, "not in enum"),
        ({"num_examples": 1.5}, "not integer"),
        ({"schema": 2}, "!= 1"),
        ({"metrics": {"loss": "low"}}, "not number"),
    ],
)
def test_the_schemas_refuse_what_decode_refuses(doc, change, why):
    update = next(m for m in samples() if m.TYPE == "update")
    header = {**_header(encode(update)), **change}
    assert any(why in e for e in _errors(doc, _schema(doc, "update"), header))


def test_a_newer_revisions_extra_key_is_allowed_and_a_missing_since_field_too(doc):
    status = next(m for m in samples() if m.TYPE == "client_status")
    header = _header(encode(status))
    del header["battery_percent"]
    header["added_in_1_9"] = [1, 2]
    assert _errors(doc, _schema(doc, "client_status"), header) == []
    del header["rss_mb"]  # a 1.0 field is required
    assert _errors(doc, _schema(doc, "client_status"), header) == ["$: lacks rss_mb"]

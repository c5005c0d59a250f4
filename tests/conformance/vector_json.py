"""The JSON form of a vector (see README.md): a message's fields, its tensors, its payload's parts.

A tensor is ``{"dtype": "float32", "shape": [2, 4], "values": [...]}`` (values flat, row-major);
bytes are ``{"hex": "..."}``. Every float32/float16 value is written as the decimal that reads back
to the same binary value, so a reader gets the exact tensor.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import fields
from enum import Enum
from typing import Any

import numpy as np

from fedhft.protocol import MESSAGE_TYPES, Hyper, Message, decode
from fedhft.protocol._update_codec import load_tensors

from tests.conformance.cases import split

_DTYPES = {"float32": np.float32, "float16": np.float16, "int8": np.int8, "int64": np.int64}
_TENSOR_DICTS = ("start_state", "tensors")


def tensor_json(arr: np.ndarray) -> dict[str, Any]:
    arr = np.asarray(arr)
    return {"dtype": str(arr.dtype), "shape": list(arr.shape), "values": [v.item() for v in arr.reshape(-1)]}


def tensor_from_json(d: dict[str, Any]) -> np.ndarray:
    return np.asarray(d["values"], dtype=_DTYPES[d["dtype"]]).reshape(d["shape"])


def _value_json(value: Any) -> Any:
    if isinstance(value, Hyper):
        return value.to_dict()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, np.ndarray):
        return tensor_json(value)
    if isinstance(value, (bytes, bytearray)):
        return {"hex": bytes(value).hex()}
    if isinstance(value, dict) and value and all(isinstance(v, np.ndarray) for v in value.values()):
        return {k: tensor_json(v) for k, v in sorted(value.items())}
    return value


def message_json(msg: Message) -> dict[str, Any]:
    """Every dataclass field of the message (header fields and body-carried ones), in class order."""
    return {f.name: _value_json(getattr(msg, f.name)) for f in fields(msg)}


def message_from_json(type_: str, d: dict[str, Any]) -> Message:
    cls = MESSAGE_TYPES[type_]
    kw: dict[str, Any] = {}
    for f in fields(cls):
        value = d[f.name]
        if f.name == "hyper":
            value = Hyper(**value)
        elif f.name in _TENSOR_DICTS:
            value = {k: tensor_from_json(v) for k, v in value.items()}
        elif f.name == "mask":
            value = tensor_from_json(value)
        elif f.name == "data":
            value = bytes.fromhex(value["hex"])
        kw[f.name] = value
    return cls(**kw)


def body_json(type_: str, body: bytes) -> dict[str, Any]:
    """The body as it travels: its tensors exactly as stored (int8 values and their scales included)."""
    out: dict[str, Any] = {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    if type_ in ("task", "update"):
        out["format"] = "safetensors"
        out["tensors"] = {k: tensor_json(v) for k, v in sorted(load_tensors(body, type_).items())}
    elif body:
        out["format"], out["hex"] = "raw", body.hex()
    else:
        out["format"] = "empty"
    return out


def payload_json(payload: bytes) -> dict[str, Any]:
    """The payload's length and digest, its header text exactly as sent, and its body."""
    header, body = split(payload)
    header_len = int.from_bytes(payload[5:9], "big")
    return {
        "length": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "header": payload[9 : 9 + header_len].decode("utf-8"),
        "body": body_json(str(header.get("type")), body),
    }


def vector_json(name: str, msg: Message, payload: bytes, description: str) -> dict[str, Any]:
    out = {
        "name": name,
        "type": msg.TYPE,
        "expect": "roundtrip",
        "description": description,
        "payload_file": f"{name}.bin",
        "payload": payload_json(payload),
        "message": message_json(msg),
    }
    if msg.TYPE == "update" and msg.encoding != "fp32":
        decoded = decode(payload)
        out["decoded_tensors"] = {k: tensor_json(v) for k, v in sorted(decoded.tensors.items())}
    return out


_NUMBER_LIST = re.compile(r"\[\n[-0-9.e+,\s]*\n\s*\]")


def dumps(d: dict[str, Any]) -> str:
    """Indented JSON with each list of numbers on one line (raw newlines never occur inside JSON strings)."""
    text = json.dumps(d, indent=1, ensure_ascii=False)
    one_line = lambda m: "[" + ", ".join(v.strip() for v in m.group(0)[1:-1].split(",")) + "]"  # noqa: E731
    return _NUMBER_LIST.sub(one_line, text) + "\n"

"""The wire format as data for tools: a JSON Schema per message header, derived from the message
classes (their ``FIELDS`` validators, ``SINCE`` revisions and defaults), so that a published schema
cannot drift from the code. ``fedhft.asyncapi`` puts them into docs/asyncapi.yaml.

What the classes do not hold as data is written here once, next to the derivation: one sentence per
header field. A field without a sentence makes the generator raise, so a new field cannot ship
undocumented.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fedhft.protocol import _fields as F
from fedhft.protocol._envelope import ENVELOPE_KEYS, PROTOCOL_VERSION
from fedhft.protocol._messages import MESSAGE_TYPES, Hyper, Message

#: Where the schemas sit in the document that holds them (AsyncAPI components): their $refs point there.
REF_SCHEMAS = "#/components/schemas/"

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
        return {
            "type": "string",
            "minLength": 1,
            "maxLength": 255,
            "pattern": _anchored(F.FILE_PATTERN),
            "description": "No empty, '.' or '..' segments.",
        }
    if getattr(check, "__func__", None) is Hyper.check.__func__:
        return {"$ref": REF_SCHEMAS + "Hyper"}
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
        return {
            "type": "object",
            "maxProperties": cells["max_items"],
            "propertyNames": schema_of(cells["key"]),
            "additionalProperties": schema_of(cells["num"]),
        }
    raise TypeError(
        f"no JSON Schema for the validator {check.__qualname__}: teach fedhft/protocol/_spec.py "
        "(schema_of) the new validator"
    )


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
        "body_sha256": _described({"$ref": REF_SCHEMAS + "Sha256"}, "sha256 of the body (of b'' when empty)."),
        "body_len": {"type": "integer", "minimum": 0, "description": "Length of the body in bytes."},
    }
    for name, check in cls.FIELDS.items():
        text = _field_doc(cls.TYPE, name)
        if name in cls.SINCE:
            text += (
                f" Added in {_revision(cls.SINCE[name])}: absent from older senders "
                f"({json.dumps(defaults[name])} stands in)."
            )
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


def json_schemas() -> dict[str, Any]:
    """Every schema of the wire format by name: the envelope, a sha256, Hyper and each ``<Type>Header``."""
    schemas: dict[str, Any] = {
        "Envelope": {"type": "string", "format": "binary", "description": "The fedhft envelope (see info)."},
        "Sha256": {"type": "string", "pattern": _anchored(F.HEX64), "description": "64 lowercase hex digits."},
        "Hyper": hyper_schema(),
    }
    schemas.update({f"{cls.__name__}Header": header_schema(cls) for cls in MESSAGE_TYPES.values()})
    return schemas


__all__ = ["REF_SCHEMAS", "header_schema", "hyper_schema", "json_schemas", "schema_of"]

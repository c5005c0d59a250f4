"""The conformance cases: one message of every type, an update in each encoding, and payloads a
reader must accept or refuse. ``generate.py`` writes them to ``vectors/``; ``test_conformance.py``
checks the code against what is written there. Values are small and exact in float32 so the JSON
files read well; the task and its updates share one tiny plan, so they fit together.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import numpy as np

from devices import AdapterPlan
from fedhft.layout import ModelDims, gather_update, mask_from_rows
from fedhft.protocol import (
    Ack,
    BundleChunk,
    BundleRequest,
    ClientStatus,
    Hello,
    Hyper,
    Message,
    Outcome,
    ServerStatus,
    Task,
    Update,
    encode,
)
from fedhft.protocol._envelope import PREFIX_LEN, sha256_hex

FLEET, CLIENT = "demo", "dev-000"
TASK_ID = "r3-dev-000-5d41402abc.1f2e3d4c"
PLAN = AdapterPlan(depth=1, ranks=(2,), mask_density=0.5, max_seq_len=16, batch_size=4)
DIMS = ModelDims(num_layers=2, hidden=4, intermediate=8, num_labels=2)
#: Rows of each B this task trains (density 0.5 of 4 rows): mask [1,0,1,0, 0,1,0,1].
ROWS = {"layer1.query.lora_B": [0, 2], "layer1.value.lora_B": [1, 3]}
PROFILE = {
    "total_memory_mb": 5734.0,
    "available_memory_mb": 2900.5,
    "cpu_count": 8,
    "battery_percent": 64.0,
    "charging": False,
    "matmul_gflops": 21.5,
    "platform": "Android",
    "machine": "aarch64",
    "has_cuda": False,
    "schema_version": 1,
}


def _f32(values, shape) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).reshape(shape)


def start_state() -> dict[str, np.ndarray]:
    """Round 3's start state of the plan: A [2,4], B [4,2] per module, head [2,4] and [2]."""
    return {
        "layer1.query.lora_A": _f32(np.arange(8) * 0.125 - 0.5, (2, 4)),
        "layer1.query.lora_B": _f32(np.arange(8) * 0.0625, (4, 2)),
        "layer1.value.lora_A": _f32(np.arange(8) * -0.125 + 0.5, (2, 4)),
        "layer1.value.lora_B": _f32(np.arange(8) * -0.0625, (4, 2)),
        "head.weight": _f32([0.02, -0.01, 0.0, 0.03, -0.02, 0.01, 0.05, 0.0], (2, 4)),
        "head.bias": _f32([0.25, -0.25], (2,)),
    }


def trained_state() -> dict[str, np.ndarray]:
    """The state after local training: chosen so the delta shows fp16 rounding, int8 steps and a zero row."""
    delta = {
        "layer1.query.lora_A": _f32([0.1, -0.2, 0.3, -0.4, 1 / 3, -1 / 3, 1e-3, -1e-5], (2, 4)),
        "layer1.query.lora_B": _f32([0.01, -0.02, 0, 0, 0.7, 0.07, 0, 0], (4, 2)),
        "layer1.value.lora_A": _f32([0.05, 0.05, -0.05, 0.0, 2.5, -1.25, 0.625, 1e-4], (2, 4)),
        "layer1.value.lora_B": _f32([0, 0, 0, 0, 0, 0, 0.5, -0.25], (4, 2)),
        "head.weight": _f32([0.125, -0.0625, 0.2, 0.0, -0.3, 0.15, 0.001, -0.001], (2, 4)),
        "head.bias": _f32([0.0125, -0.0125], (2,)),
    }
    return {k: (v + delta[k]).astype(np.float32) for k, v in start_state().items()}


def mask() -> np.ndarray:
    return mask_from_rows(PLAN, DIMS, ROWS)


def update_tensors() -> dict[str, np.ndarray]:
    """trained - start, each B reduced to its masked rows (fedhft.layout.gather_update)."""
    return gather_update(PLAN, DIMS, start_state(), trained_state(), mask())


def _task() -> Task:
    hyper = Hyper(lr=5e-4, local_steps=0, epochs=1, batch_size=4, seq_len=16, encoding="int8")
    return Task(
        FLEET,
        CLIENT,
        3,
        TASK_ID,
        "android-mid",
        "executorch",
        "android-mid.executorch.0123456789abcdef",
        "0123456789abcdef" * 4,
        PLAN.to_dict(),
        hyper,
        1767226200.0,
        start_state(),
        mask(),
    )


def _update(encoding: str) -> Update:
    metrics = {"loss_mean": 0.6931, "val_acc_after": 0.75, "val_acc_before": 0.5, "val_examples": 8.0}
    return Update(FLEET, CLIENT, 3, TASK_ID, 32, metrics, encoding, update_tensors())


CHUNK = b"\x00fedhft bundle chunk\xff" * 3


def messages() -> dict[str, Message]:
    """Vector name -> message: every type once, an update per encoding, both Last Will payloads."""
    return {
        "hello": Hello(FLEET, CLIENT, PROFILE, ["executorch", "ort"], None, "fedhft 0.1.0"),
        "client_status": ClientStatus(FLEET, CLIENT, "training", 3, "step 10/50", 64.0, 212.5, 1767225600.5),
        "client_status_will": ClientStatus(FLEET, CLIENT, "offline"),
        "server_status": ServerStatus(FLEET, "running", 3, 1767225600.0),
        "server_status_will": ServerStatus(FLEET, "offline"),
        "task": _task(),
        "update_fp32": _update("fp32"),
        "update_fp16": _update("fp16"),
        "update_int8": _update("int8"),
        "outcome": Outcome(
            FLEET, CLIENT, 3, TASK_ID, "over_budget", "peak RSS 300 MB > 256 MB", {"peak_rss_mb": 300.0}
        ),
        "ack_stored": Ack(FLEET, CLIENT, 3, TASK_ID, sha256_hex(b"update body"), "stored"),
        "ack_rejected": Ack(
            FLEET,
            CLIENT,
            3,
            "r3-dev-000-5d41402abc.99aa88bb",
            sha256_hex(b"update body"),
            "rejected",
            "stale_run: task 'r3-dev-000-5d41402abc.99aa88bb' was issued by another server run",
        ),
        "bundle_request": BundleRequest(FLEET, CLIENT, "android-mid.executorch.0123456789abcdef"),
        "bundle_request_chunks": BundleRequest(
            FLEET, CLIENT, "android-mid.executorch.0123456789abcdef", ["model.pte"], [0, 2]
        ),
        "bundle_chunk": BundleChunk(
            FLEET,
            "android-mid.executorch.0123456789abcdef",
            "model.pte",
            1,
            3,
            sha256_hex(CHUNK),
            "fe" * 32,
            200,
            CHUNK,
        ),
    }


# ----------------------------------------------------------------------------- payloads to accept or refuse


def split(payload: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack(">I", payload[5:9])
    return json.loads(payload[PREFIX_LEN : PREFIX_LEN + n]), payload[PREFIX_LEN + n :]


def frame(header_text: str, body: bytes, version: int = 1, magic: bytes = b"FHFT") -> bytes:
    raw = header_text.encode("utf-8")
    return magic + bytes([version]) + struct.pack(">I", len(raw)) + raw + body


def canonical(header: dict) -> str:
    return json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Variant:
    """A payload made from a valid one: ``code`` is the ProtocolError code a reader must raise, or
    None when it must accept it and decode ``equals`` (a vector name) or the message ``message``."""

    description: str
    payload: bytes
    code: str | None = None
    equals: str | None = None
    message: Message | None = None


def variants() -> dict[str, Variant]:
    status = encode(messages()["client_status"])
    update = encode(messages()["update_int8"])
    header, body = split(update)
    s_header, _ = split(status)
    old = {k: v for k, v in s_header.items() if k != "battery_percent"} | {"battery": 0.64}
    bad_digest = bytearray(update)
    bad_digest[-1] ^= 0x01
    dup = canonical(s_header)[:-1] + ',"client":"dev-001"}'
    return {
        "accept_unknown_header_key": Variant(
            "A newer 1.x sender's extra header keys: ignored.",
            frame(canonical(s_header | {"added_in_1_9": [1, 2]}), b""),
            equals="client_status",
        ),
        "accept_1_0_client_status": Variant(
            "A 1.0 sender's status: no battery_percent (added in 1.1) and its old 0-1 'battery' (now unknown).",
            frame(canonical(old), b""),
            message=ClientStatus(FLEET, CLIENT, "training", 3, "step 10/50", None, 212.5, 1767225600.5),
        ),
        "reject_bad_magic": Variant("Not a fedhft payload.", b"XXXX" + update[4:], code="malformed"),
        "reject_major_2": Variant(
            "Another major version (the version byte).", update[:4] + b"\x02" + update[5:], code="schema_version"
        ),
        "reject_truncated": Variant("The body is one byte shorter than body_len.", update[:-1], code="truncated"),
        "reject_digest_mismatch": Variant(
            "One body bit flipped: body_sha256 no longer matches.", bytes(bad_digest), code="digest_mismatch"
        ),
        "reject_missing_field": Variant(
            "rss_mb (a 1.0 field) is missing: every field except the SINCE ones is required.",
            frame(canonical({k: v for k, v in s_header.items() if k != "rss_mb"}), b""),
            code="malformed",
        ),
        "reject_duplicate_key": Variant("The header repeats a key.", frame(dup, b""), code="malformed"),
        "reject_unknown_type": Variant(
            "An unknown message type.", frame(canonical(s_header | {"type": "gossip"}), b""), code="malformed"
        ),
        "reject_int8_without_scale": Variant(
            "An int8 update whose body lacks a tensor's '.__scale'.", _without_scale(header, body), code="malformed"
        ),
    }


def _without_scale(header: dict, body: bytes) -> bytes:
    from safetensors.numpy import load, save

    tensors = {k: v for k, v in load(body).items() if k != "head.bias.__scale"}
    new_body = save(tensors)
    return frame(canonical(header | {"body_len": len(new_body), "body_sha256": sha256_hex(new_body)}), new_body)


# ----------------------------------------------------------------------------- session client ids

#: (client, password) and (fleet, username, password, run tag) inputs of the client-id rules.
DEVICE_IDS = [("dev-000", "s3cret-Pa55"), ("phone_42", "pässwörd"), ("dev-001", None)]
SERVER_IDS = [
    ("demo", "fedhft-server", "srv-pass", "1f2e3d4c"),
    ("demo", "fedhft-server", "srv-pass", ""),
    ("demo", None, None, "1f2e3d4c"),
]


def client_ids() -> dict:
    """What fedhft.mqtt makes of those inputs (written to client_ids.json)."""
    from fedhft.mqtt import device_client_id, server_client_id

    return {
        "device": [{"client": c, "password": p, "client_id": device_client_id(c, p)} for c, p in DEVICE_IDS],
        "server": [
            {"fleet": f, "username": u, "password": p, "run_tag": t, "client_id": server_client_id(f, u, p, t)}
            for f, u, p, t in SERVER_IDS
        ],
    }

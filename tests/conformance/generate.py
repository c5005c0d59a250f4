"""Rewrite the conformance vectors in tests/conformance/vectors/ from cases.py.

    python tests/conformance/generate.py

Run it ON PURPOSE, when the wire format changes (a new message, field or case), and review the diff:
these files are what other implementations test against, so a change here is a protocol change.
CI never runs this; tests/conformance/test_conformance.py only compares the code with the files.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fedhft.protocol import encode  # noqa: E402
from tests.conformance.cases import client_ids, messages, variants  # noqa: E402
from tests.conformance.vector_json import dumps, message_json, payload_json, vector_json  # noqa: E402

VECTORS = Path(__file__).resolve().parent / "vectors"
CLIENT_IDS = Path(__file__).resolve().parent / "client_ids.json"

DESCRIPTIONS = {
    "hello": "A device joins: its profile, its backends, no tier hint.",
    "client_status": "A device's retained status while training round 3 (battery in percent, 1.1).",
    "client_status_will": "The device's Last Will payload (retained on from/<client>/status).",
    "server_status": "The server's retained status while round 3 is open.",
    "server_status_will": "The server's Last Will payload (retained on server/status).",
    "task": "Round 3's task: the start state (A, B, head; float32, whole) and __mask__ in the body; int8 asked.",
    "update_fp32": "The task's update in fp32: A and head whole, each B reduced to its 2 masked rows.",
    "update_fp16": "The same update in fp16; decoded_tensors is what the reader gets (float32).",
    "update_int8": "The same update in int8 with one float32 scale per row ('<name>.__scale'); a zero row has "
    "scale 0; decoded_tensors is q * scale.",
    "outcome": "A task that produced no update: over the memory budget.",
    "ack_stored": "The server stored the update with this digest.",
    "ack_rejected": "The server refused an update trained under another server run (stale_run).",
    "bundle_request": "Send every file of the bundle (files and chunks null).",
    "bundle_request_chunks": "Send chunks 0 and 2 of one file.",
    "bundle_chunk": "Chunk 1 of 3 of model.pte; the body is the raw chunk.",
}


def _variant_json(name: str, variant) -> dict:
    out = {
        "name": name,
        "expect": "reject" if variant.code else "accept",
        "description": variant.description,
        "payload_file": f"{name}.bin",
    }
    if variant.code:
        out["code"] = variant.code
        return out
    out["payload"] = payload_json(variant.payload)
    if variant.equals:
        out["decodes_like"] = variant.equals
    else:
        out["type"] = variant.message.TYPE
        out["message"] = message_json(variant.message)
    return out


def main() -> int:
    VECTORS.mkdir(exist_ok=True)
    for old in VECTORS.iterdir():
        old.unlink()
    written = 0
    for name, msg in messages().items():
        payload = encode(msg)
        (VECTORS / f"{name}.bin").write_bytes(payload)
        (VECTORS / f"{name}.json").write_text(dumps(vector_json(name, msg, payload, DESCRIPTIONS[name])))
        written += 1
    for name, variant in variants().items():
        (VECTORS / f"{name}.bin").write_bytes(variant.payload)
        (VECTORS / f"{name}.json").write_text(dumps(_variant_json(name, variant)))
        written += 1
    CLIENT_IDS.write_text(dumps(client_ids()), encoding="utf-8")
    print(f"wrote {written} vectors to {VECTORS.relative_to(ROOT)}: review `git diff` before committing")
    return 0


if __name__ == "__main__":
    sys.exit(main())

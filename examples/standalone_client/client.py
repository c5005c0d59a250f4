#!/usr/bin/env python3
"""A fedhft device in one file, written from docs/PROTOCOL.md and docs/MANIFEST.md alone.

It joins a fleet over MQTT 5, receives tasks, fetches the task's ONNX Runtime training bundle
(pre-provisioned or in chunks from the server), trains the masked LoRA adapters with a fresh AdamW
each round, and sends the update in the encoding the task asks for. Nothing here comes from the
fedhft package: only paho-mqtt, onnxruntime-training, tokenizers, numpy and the standard library.
Torch is not needed either (see import_ort_training).

    python client.py --credentials fleet/clients/dev-000.json --broker mqtt://127.0.0.1:1883 \\
        --data my_texts.csv --tier rpi5 --rounds 3

The data file is a CSV with a header and the columns ``text`` and ``label`` (class indices, or names
that are numbered in sorted order). It keeps no state across restarts: a task is acknowledged to
the broker once its update is sent, so a crash mid-round gets the task redelivered.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import importlib
import importlib.util
import json
import math
import os
import platform
import queue
import signal
import struct
import sys
import time
import types
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from tokenizers import Tokenizer

MAGIC, MAJOR = b"FHFT", 1  # PROTOCOL.md section 6: the envelope and its version byte
MASK_TENSOR, SCALE_SUFFIX = "__mask__", ".__scale"
ST_DTYPES = {"F32": "<f4", "F16": "<f2", "I8": "i1", "I64": "<i8"}  # safetensors codes a body may carry
SESSION_EXPIRY_S = 7 * 24 * 3600


def say(event: str, **fields) -> None:
    print(json.dumps({"event": event, "ts": round(time.time(), 3), **fields}), flush=True)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def session_id(client: str, password: str | None) -> str:
    """PROTOCOL.md section 4: the MQTT client id carries a tag only the owner can compute; with a bare
    id, another device could take this device's session (and its queued tasks) over."""
    return f"{client}-{sha256(f'fedhft-session|{client}|{password}'.encode())[:16]}" if password else client


# ----------------------------------------------------------------------------- ONNX Runtime without torch


def import_ort_training():
    """``onnxruntime/training/__init__.py`` imports torch (through ``training.optim``). A stand-in
    ``onnxruntime.training`` package with the real ``__path__`` lets the three ``api`` modules load
    without running that ``__init__``; ``ortmodule = None`` makes onnxruntime's own probe for it fail
    quietly, as it does on a device without torch (DEPLOY.md)."""
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None:
        sys.exit("onnxruntime-training is missing: pip install onnxruntime-training-cpu==1.19.2")
    training_dir = Path(list(spec.submodule_search_locations)[0]) / "training"
    if not (training_dir / "api").is_dir():
        sys.exit("this onnxruntime is the inference-only build: pip install onnxruntime-training-cpu==1.19.2")
    stub = types.ModuleType("onnxruntime.training")
    stub.__path__ = [str(training_dir)]
    sys.modules["onnxruntime.training"] = stub
    sys.modules["onnxruntime.training.ortmodule"] = None
    import onnxruntime

    api = {name: importlib.import_module(f"onnxruntime.training.api.{name}")
           for name in ("checkpoint_state", "module", "optimizer")}
    return api["checkpoint_state"].CheckpointState, api["module"].Module, api["optimizer"].Optimizer, onnxruntime


CheckpointState, Module, Optimizer, ort = import_ort_training()

# ----------------------------------------------------------------------------- wire format (PROTOCOL.md 6, 11)


def pack(header: dict, body: bytes = b"") -> bytes:
    """The envelope: magic, version byte, header length, canonical JSON header, body."""
    header = {**header, "schema": MAJOR, "body_sha256": sha256(body), "body_len": len(body)}
    raw = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    return MAGIC + bytes([MAJOR]) + struct.pack(">I", len(raw)) + raw + body


def unpack(payload: bytes) -> tuple[dict, bytes]:
    if payload[:4] != MAGIC or len(payload) < 9 or payload[4] != MAJOR:
        raise ValueError("not a fedhft schema-1 payload")
    (length,) = struct.unpack(">I", payload[5:9])
    header, body = json.loads(payload[9:9 + length]), payload[9 + length:]
    if (header.get("schema"), header.get("body_len"), header.get("body_sha256")) != (MAJOR, len(body), sha256(body)):
        raise ValueError("envelope check failed (schema, body_len or body_sha256)")
    return header, body


def st_load(blob: bytes) -> dict[str, np.ndarray]:
    """A safetensors blob: 8-byte little-endian header length, JSON header, raw little-endian data."""
    (length,) = struct.unpack("<Q", blob[:8])
    header, data = json.loads(blob[8:8 + length]), blob[8 + length:]
    out = {}
    for name, info in header.items():
        if name != "__metadata__":
            start, stop = info["data_offsets"]
            dtype = np.dtype(ST_DTYPES[info["dtype"]])
            array = np.frombuffer(data[start:stop], dtype=dtype).reshape(info["shape"])
            out[name] = array.astype(dtype.newbyteorder("="))  # native byte order, and a writable copy
    return out


def st_save(tensors: dict[str, np.ndarray]) -> bytes:
    code = {np.dtype(v).newbyteorder("="): k for k, v in ST_DTYPES.items()}
    header, chunks, offset = {}, [], 0
    # The reference library's order (dtype size descending, then name): the same tensors give the same bytes.
    for name in sorted(tensors, key=lambda n: (-np.asarray(tensors[n]).dtype.itemsize, n)):
        array = np.ascontiguousarray(tensors[name])
        raw = array.astype(ST_DTYPES[code[array.dtype]]).tobytes()
        header[name] = {"dtype": code[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def encode_update(tensors: dict[str, np.ndarray], encoding: str) -> bytes:
    """fp32, fp16, or int8 with one float32 scale per row (first axis; 1-D tensors have one)."""
    out = {}
    for name, x in tensors.items():
        x = np.asarray(x, dtype=np.float32)
        if encoding == "fp32":
            out[name] = x
        elif encoding == "fp16":
            out[name] = x.astype(np.float16)
        elif encoding == "int8":
            rows = x.reshape(x.shape[0], -1) if x.ndim >= 2 else x.reshape(1, -1)
            scale = (np.abs(rows).max(axis=1) / np.float32(127)).astype(np.float32)
            safe = np.where(scale > 0, scale, 1.0).astype(np.float64)
            q = np.clip(np.rint(rows.astype(np.float64) / safe[:, None]), -127, 127).astype(np.int8)
            out[name], out[name + SCALE_SUFFIX] = q.reshape(x.shape), scale
        else:
            raise ValueError(f"unknown update encoding {encoding!r}")
    return st_save(out)


# ----------------------------------------------------------------------------- bundles (MANIFEST.md)


def checked_bundle(folder: Path, manifest_sha256: str) -> dict | None:
    """The manifest of ``folder`` if it is the task's bundle (its sha256) and every file matches it."""
    path = folder / "manifest.json"
    if not path.is_file() or sha256(path.read_bytes()) != manifest_sha256:
        return None
    manifest = json.loads(path.read_text())
    for name, entry in manifest["files"].items():
        if not (folder / name).is_file():
            return None  # not all there yet (a fetch in progress)
        if sha256((folder / name).read_bytes()) != entry["sha256"]:
            raise RuntimeError(f"{folder / name} does not match the manifest: delete {folder} and fetch it again")
    if manifest["schema_version"] != 2 or manifest["backend"] != "ort":
        raise RuntimeError(f"{folder}: this client trains schema-2 ort bundles, got schema "
                           f"{manifest['schema_version']} {manifest['backend']}: re-export it with fedhft export")
    return manifest


def read_data(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    names = sorted({r["label"] for r in rows})
    index = {n: int(n) for n in names} if all(n.isdigit() for n in names) else {n: i for i, n in enumerate(names)}
    return [r["text"] for r in rows], np.array([index[r["label"]] for r in rows], dtype=np.int64)


def tokenize(manifest: dict, bundle: Path, texts: list[str], seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    spec = manifest["tokenizer"]
    seq = max(spec["min_length"], min(seq_len, spec["max_length"]))  # the graphs' sequence bounds
    tok = Tokenizer.from_file(str(bundle / spec["file"]))
    tok.enable_truncation(max_length=seq)
    tok.enable_padding(length=seq, pad_id=spec["pad_id"], pad_token=spec["pad_token"])
    encoded = tok.encode_batch(texts)
    return (np.array([e.ids for e in encoded], dtype=np.int64),
            np.array([e.attention_mask for e in encoded], dtype=np.int64))


def train(manifest: dict, bundle: Path, task: dict, start: dict, mask: np.ndarray, data) -> tuple[dict, int, dict]:
    """One round: (update tensors, examples used, metrics). Checkpoint, Module and Optimizer are made
    fresh, so no Adam moments carry over from the previous round's mask (optimizer.state)."""
    hyper, extras = task["hyper"], manifest["backend_extras"]
    graph, order = extras["training_graph"], extras["param_order"]
    files = {entry["role"]: bundle / name for name, entry in manifest["files"].items()}
    texts, labels = data
    ids, attn = tokenize(manifest, bundle, texts, hyper["seq_len"])
    batch = max(1, min(hyper["batch_size"], manifest["plan"]["batch_size"]))
    steps = hyper["local_steps"] or max(1, hyper["epochs"]) * math.ceil(len(labels) / batch)
    state = CheckpointState.load_checkpoint(str(files["checkpoint"]))
    module = Module(str(files["training_model"]), state, str(files["eval_model"]), "cpu")
    optimizer = Optimizer(str(files["optimizer_model"]), module)
    optimizer.set_learning_rate(float(hyper["lr"]))
    flat = np.concatenate([np.asarray(start[name], dtype=np.float32).ravel() for name in order])
    value = ort.OrtValue.ortvalue_from_numpy(flat)  # borrows `flat`: both stay alive until the copy returns
    module.copy_buffer_to_parameters(value._ortvalue, True)
    rng, pending, seen, losses = np.random.default_rng(task["round"]), [], set(), []
    module.train()
    for _ in range(steps):
        if len(pending) < batch:
            pending += rng.permutation(len(labels)).tolist()
        rows, pending = np.array(pending[:batch]), pending[batch:]
        feeds = {"input_ids": ids[rows], "attention_mask": attn[rows], "mask": mask, "labels": labels[rows]}
        module.lazy_reset_grad()
        outputs = module(*[feeds[name] for name in graph["inputs"]])  # the graph's feed order, not `inputs`'
        losses.append(float(np.asarray(outputs[graph["outputs"].index(graph["loss_output"])])))
        optimizer.step()
        seen.update(rows.tolist())
    params = module.get_contiguous_parameters(trainable_only=True)
    trained = np.array(params.numpy(), dtype=np.float32, copy=True)  # a copy while `params` still holds the data
    update, offset, shapes = {}, 0, {t["name"]: t["shape"] for t in manifest["trainable"]}
    for name in order:
        size = math.prod(shapes[name])
        update[name] = trained[offset:offset + size].reshape(shapes[name]) - np.asarray(start[name], np.float32)
        offset += size
    for piece in manifest["mask"]["layout"]:  # each lora_B: only the rows the mask selects, ascending
        selected = np.flatnonzero(mask[piece["offset"]:piece["offset"] + piece["rows"]] == 1.0)
        update[piece["b_name"]] = np.ascontiguousarray(update[piece["b_name"]][selected])
    metrics = {"loss_first": losses[0], "loss_last": losses[-1], "loss_mean": float(np.mean(losses)),
               "steps": float(steps)}
    return update, len(seen), metrics


# ----------------------------------------------------------------------------- the device


class Device:
    def __init__(self, args, creds: dict):
        self.args, self.fleet, self.id = args, creds["fleet"], creds["client_id"]
        self.base = f"fedhft/v1/{self.fleet}"
        self.data, self.profile = read_data(Path(args.data)), self.measure()
        self.inbox: queue.Queue = queue.Queue()
        self.stop = False
        self.done: dict[str, bytes] = {}  # task id -> the update payload sent for it (re-sent as is)
        self.pending: dict | None = None  # the update awaiting its ack: task_id, digest, payload, sent
        self.acked, self.server_state, self.max_packet = 0, None, 1 << 20
        self.mqtt = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=session_id(self.id, creds["password"]),
                                protocol=mqtt.MQTTv5, manual_ack=True)
        self.mqtt.username_pw_set(creds["username"], creds["password"])
        self.mqtt.will_set(self.topic("status"), self.status("offline"), qos=1, retain=True)
        self.mqtt.on_connect, self.mqtt.on_message = self.on_connect, lambda c, u, msg: self.inbox.put(msg)

    @staticmethod
    def measure() -> dict:
        """The device profile of the hello (PROTOCOL.md section 8): the server picks a tier from it."""
        size = 256
        a = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
        began, products = time.perf_counter(), 0
        while time.perf_counter() - began < 0.2:
            a @ a
            products += 1
        page = os.sysconf("SC_PAGE_SIZE")
        return {"total_memory_mb": os.sysconf("SC_PHYS_PAGES") * page / 2**20,
                "available_memory_mb": os.sysconf("SC_AVPHYS_PAGES") * page / 2**20,
                "cpu_count": os.cpu_count() or 1, "battery_percent": None, "charging": None,
                "matmul_gflops": 2 * size**3 * products / (time.perf_counter() - began) / 1e9,
                "platform": platform.system(), "machine": platform.machine(), "has_cuda": False, "schema_version": 1}

    def topic(self, kind: str) -> str:
        return f"{self.base}/from/{self.id}/{kind}"

    def status(self, state: str, round_: int | None = None) -> bytes:
        return pack({"type": "client_status", "fleet": self.fleet, "client": self.id, "state": state,
                     "round": round_, "detail": "", "battery_percent": None, "rss_mb": None, "ts": time.time()})

    def publish(self, kind: str, payload: bytes, retain: bool = False):
        if len(payload) > self.max_packet - 512:  # paho would resend an oversize QoS 1 message forever
            raise RuntimeError(f"a {len(payload)}-byte {kind} exceeds the broker's packet limit {self.max_packet}")
        return self.mqtt.publish(self.topic(kind), payload, qos=1, retain=retain)

    def hello(self) -> None:
        self.publish("hello", pack({"type": "hello", "fleet": self.fleet, "client": self.id, "profile": self.profile,
                                    "backends": ["ort"], "tier_hint": self.args.tier,
                                    "runtime_version": "fedhft-standalone-client/1"}))

    def on_connect(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            return say("refused", reason=str(reason))
        self.max_packet = int(getattr(properties, "MaximumPacketSize", 0) or self.max_packet)
        client.subscribe([(f"{self.base}/to/{self.id}/#", 1), (f"{self.base}/server/status", 1)])
        self.hello()
        self.publish("status", self.status("idle"), retain=True)
        say("connected", session_present=bool(flags.session_present))

    # -- messages in
    def on_task(self, header: dict, body: bytes) -> None:
        task_id = header["task_id"]
        if header["client"] != self.id or header["fleet"] != self.fleet:
            return
        if task_id in self.done:  # a redelivered task: the same bytes again (the server dedupes)
            self.publish("update", self.done[task_id])
            return
        tensors = st_load(body)
        mask = tensors.pop(MASK_TENSOR).astype(np.float32)
        say("task", round=header["round"], task_id=task_id, encoding=header["hyper"]["encoding"])
        self.publish("status", self.status("fetching", header["round"]), retain=True)
        try:
            bundle, manifest = self.bundle(header)
            if manifest["plan"] != header["plan"]:
                raise RuntimeError(f"bundle plan {manifest['plan']} is not the task's {header['plan']}")
            if not np.isin(mask, manifest["mask"]["values"]).all():  # PROTOCOL.md: exactly 0.0 or 1.0
                raise RuntimeError(f"mask must hold only {manifest['mask']['values']}")
            self.publish("status", self.status("training", header["round"]), retain=True)
            update, examples, metrics = train(manifest, bundle, header, tensors, mask, self.data)
            body = encode_update(update, header["hyper"]["encoding"])  # the encoding the task asks for
            payload = pack({"type": "update", "fleet": self.fleet, "client": self.id, "round": header["round"],
                            "task_id": task_id, "num_examples": examples, "metrics": metrics,
                            "encoding": header["hyper"]["encoding"]}, body)
            self.publish("update", payload)
        except Exception as exc:  # one bad round is reported as a typed outcome, the device goes on
            say("round_failed", round=header["round"], error=f"{type(exc).__name__}: {exc}")
            fields = {k: header[k] for k in ("fleet", "client", "round", "task_id")}
            self.publish("outcome", pack({"type": "outcome", **fields, "kind": "error", "reason": str(exc)[:1000],
                                          "metrics": {}}))
            return
        self.done[task_id] = payload
        self.pending = {"task_id": task_id, "digest": sha256(body), "payload": payload, "sent": time.monotonic()}
        self.publish("status", self.status("uploading", header["round"]), retain=True)
        say("update_sent", round=header["round"], digest=sha256(body)[:16], bytes=len(payload), **metrics)

    def on_ack(self, header: dict) -> None:
        if self.pending is None or (header["task_id"], header["update_digest"]) != (self.pending["task_id"],
                                                                                self.pending["digest"]):
            return  # an ack settles the upload it names: its task id and its digest
        say("ack", round=header["round"], status=header["status"], reason=header["reason"])
        self.pending, self.acked = None, self.acked + 1
        self.publish("status", self.status("idle"), retain=True)

    def on_server_status(self, header: dict) -> None:
        if header["state"] == "running" and self.server_state != "running":
            self.hello()  # a (re)starting server may have missed the first hello
        self.server_state = header["state"]

    def bundle(self, task: dict) -> tuple[Path, dict]:
        """The task's bundle: pre-provisioned (--bundles) or cached, else fetched in chunks."""
        for root in filter(None, (self.args.bundles, self.args.state)):
            for path in sorted(Path(root).glob("**/manifest.json")):
                manifest = checked_bundle(path.parent, task["bundle_sha256"])
                if manifest is not None:
                    return path.parent, manifest
        return self.fetch(task)

    def fetch(self, task: dict) -> tuple[Path, dict]:
        """PROTOCOL.md section 9: ask for every file, assemble chunks, verify, then keep the bundle."""
        folder = Path(self.args.state) / task["bundle_sha256"]
        chunks: dict[str, dict] = {}  # file -> {"count", "sha", "parts": {index: bytes}}
        asked, deferred, deadline = 0.0, [], time.monotonic() + self.args.fetch_timeout
        request = pack({"type": "bundle_request", "fleet": self.fleet, "client": self.id,
                        "bundle_id": task["bundle_id"], "files": None, "chunks": None})
        while (manifest := self.assembled(folder, chunks, task)) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"bundle {task['bundle_id']} did not arrive in {self.args.fetch_timeout} s")
            if time.monotonic() - asked > 15:
                self.publish("bundle_req", request)
                asked = time.monotonic()
            try:
                msg = self.inbox.get(timeout=0.5)
            except queue.Empty:
                continue
            if not msg.topic.endswith("/bundle"):
                deferred.append(msg)  # tasks and acks wait until the bundle is here
                continue
            header, body = unpack(msg.payload)
            self.mqtt.ack(msg.mid, msg.qos)
            if header["bundle_id"] == task["bundle_id"] and sha256(body) == header["chunk_sha256"]:
                entry = chunks.setdefault(header["file"], {"count": header["count"], "sha": header["file_sha256"],
                                                           "parts": {}})
                entry["parts"][header["index"]] = body  # any order; a duplicate overwrites itself
        for msg in deferred:
            self.inbox.put(msg)
        say("bundle_fetched", bundle_id=task["bundle_id"])
        return folder, manifest

    def assembled(self, folder: Path, chunks: dict, task: dict) -> dict | None:
        for name, entry in chunks.items():
            if not (folder / name).is_file() and len(entry["parts"]) == entry["count"]:
                data = b"".join(entry["parts"][i] for i in range(entry["count"]))
                if sha256(data) == entry["sha"]:
                    (folder / name).parent.mkdir(parents=True, exist_ok=True)
                    (folder / name).write_bytes(data)
        if not (folder / "manifest.json").is_file():
            return None
        wanted = json.loads((folder / "manifest.json").read_text())["files"]
        return checked_bundle(folder, task["bundle_sha256"]) if all((folder / n).is_file() for n in wanted) else None

    def handle(self, msg) -> None:
        kind = msg.topic.rsplit("/", 1)[-1]
        try:
            header, body = unpack(msg.payload)
            if kind == "task":
                self.on_task(header, body)
            elif kind == "ack":
                self.on_ack(header)
            elif kind == "status":
                self.on_server_status(header)
        except Exception as exc:  # one bad message must not end the device
            say("bad_message", topic=msg.topic, error=f"{type(exc).__name__}: {str(exc)[:200]}")
        self.mqtt.ack(msg.mid, msg.qos)  # late: only once handled (a crash before this gets it redelivered)

    def run(self) -> int:
        url = self.args.broker.split("://", 1)[-1]
        host, _, port = url.rpartition(":")
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S  # queued tasks wait for a device that was away
        self.mqtt.connect(host, int(port), keepalive=30, clean_start=False, properties=props)
        self.mqtt.loop_start()
        try:
            while not self.stop and (not self.args.rounds or self.acked < self.args.rounds):
                try:
                    self.handle(self.inbox.get(timeout=0.5))
                except queue.Empty:
                    pass
                if self.pending and time.monotonic() - self.pending["sent"] > self.args.ack_timeout:
                    self.publish("update", self.pending["payload"])  # the same bytes: the server dedupes
                    self.pending["sent"] = time.monotonic()
        finally:
            try:
                self.publish("status", self.status("offline"), retain=True).wait_for_publish(5)
            except (RuntimeError, ValueError):  # not connected: the Last Will says offline instead
                pass
            self.mqtt.disconnect()
            self.mqtt.loop_stop()
        say("stopped", rounds=self.acked, torch_loaded="torch" in sys.modules)
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--credentials", required=True, help="the device's JSON (client_id, username, password, "
                                                             "fleet, broker_url) from `fedhft server fleet-init`")
    parser.add_argument("--broker", help="mqtt://host:port (default: the credentials' broker_url)")
    parser.add_argument("--data", required=True, help="CSV with columns text,label")
    parser.add_argument("--tier", help="tier hint for the server (default: the server chooses)")
    parser.add_argument("--bundles", help="pre-provisioned bundles folder (searched by manifest sha256)")
    parser.add_argument("--state", default="standalone-state", help="where fetched bundles are kept")
    parser.add_argument("--rounds", type=int, default=0, help="stop after this many acknowledged rounds (0: never)")
    parser.add_argument("--ack-timeout", type=float, default=30.0, help="re-send an unacknowledged update after s")
    parser.add_argument("--fetch-timeout", type=float, default=600.0, help="give up a bundle download after s")
    args = parser.parse_args()
    creds = json.loads(Path(args.credentials).read_text())
    args.broker = args.broker or creds.get("broker_url")
    if not args.broker or args.broker.startswith(("mqtts", "ssl", "tls")):
        sys.exit("give --broker mqtt://host:port (this example speaks plain MQTT; add paho's tls_set for TLS)")
    device = Device(args, creds)
    signal.signal(signal.SIGTERM, lambda *_: setattr(device, "stop", True))
    signal.signal(signal.SIGINT, lambda *_: setattr(device, "stop", True))
    return device.run()


if __name__ == "__main__":
    sys.exit(main())

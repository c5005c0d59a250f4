"""One valid sample of every message type, shared by the protocol tests."""

from __future__ import annotations

import numpy as np

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
)
from fedhft.protocol._envelope import sha256_hex

FLEET = "demo"
CLIENT = "phone-1"


def sample_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "layer1.query.lora_A": rng.standard_normal((4, 16)).astype(np.float32),
        "layer1.query.lora_B": rng.standard_normal((3, 4)).astype(np.float32) * 0.01,
        "head.weight": rng.standard_normal((2, 16)).astype(np.float32),
        "head.bias": rng.standard_normal(2).astype(np.float32),
    }


def samples() -> list[Message]:
    data = b"chunk-bytes\x00\xff"
    return [
        Hello(
            FLEET,
            CLIENT,
            {"ram_mb": 4096, "cpu": {"cores": 8}, "os": "android"},
            ["ort", "torch"],
            "phone-mid",
            "0.1.0",
        ),
        Hello(FLEET, CLIENT, {}, [], None, ""),
        ClientStatus(FLEET, CLIENT, "training", 3, "step 10/50", 61.0, 512.5, 1700000000.25),
        ClientStatus(FLEET, CLIENT, "offline"),
        ServerStatus(FLEET, "running", 7, 1700000000.0),
        ServerStatus(FLEET, "offline"),
        Task(
            FLEET,
            CLIENT,
            3,
            "r3-phone-1",
            "phone-mid",
            "ort",
            "minilm-phone-mid-ort",
            "ab" * 32,
            {"depth": 2, "ranks": [4, 8], "mask_density": 0.5},
            Hyper(lr=1e-3, local_steps=20, epochs=1, batch_size=8, seq_len=64, encoding="int8"),
            1700000600.0,
            sample_tensors(1),
            np.array([1, 0, 1, 1, 0], dtype=np.float32),
        ),
        Update(FLEET, CLIENT, 3, "r3-phone-1", 128, {"loss": 0.42, "acc": 1}, "fp32", sample_tensors(2)),
        Update(FLEET, CLIENT, 3, "r3-phone-1", 128, {}, "fp16", sample_tensors(3)),
        Update(FLEET, CLIENT, 3, "r3-phone-1", 0, {}, "int8", sample_tensors(4)),
        Outcome(FLEET, CLIENT, 3, "r3-phone-1", "over_budget", "peak RSS 900 MB > 800 MB", {"rss_mb": 900.0}),
        Outcome(FLEET, CLIENT, 0, "t", "skipped"),
        Ack(FLEET, CLIENT, 3, "r3-phone-1", "cd" * 32, "stored"),
        Ack(FLEET, CLIENT, 3, "r3-phone-1", "cd" * 32, "rejected", "non_finite: head.bias"),
        BundleRequest(FLEET, CLIENT, "minilm-phone-mid-ort"),
        BundleRequest(FLEET, CLIENT, "minilm-phone-mid-ort", ["model/train.onnx"], [0, 5]),
        BundleChunk(FLEET, "minilm-phone-mid-ort", "model/train.onnx", 1, 4, sha256_hex(data), "ef" * 32, 100, data),
    ]


def assert_same(a: Message, b: Message) -> None:
    """Field-by-field equality, arrays compared exactly (tensor messages have eq=False)."""
    assert type(a) is type(b)
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, dict) and x and isinstance(next(iter(x.values())), np.ndarray):
            assert sorted(x) == sorted(y), name
            for k in x:
                np.testing.assert_array_equal(x[k], y[k], err_msg=f"{name}[{k}]")
                assert x[k].dtype == y[k].dtype
        elif isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=name)
        else:
            assert x == y, name

"""The reference client (examples/standalone_client/client.py), written from docs/PROTOCOL.md and
docs/MANIFEST.md alone, against the real thing: a `fedhft server` process (fedhft strategy), a real
Mosquitto with the fleet's auth and ACL, real ONNX Runtime training bundles of the tiny model.

Two standalone clients (one with the bundle pre-provisioned, one fetching it in chunks) and one
`fedhft edge` train 3 rounds; every update of every round must be stored, in the encoding the server
asked for (int8). The clients run with torch and every fedhft package blocked from import, so a
passing run shows they need neither. The client's encoder is also checked byte for byte against the
conformance vectors (tests/conformance/)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from devices import AdapterPlan
from fedhft.protocol import decode_update
from tests._helpers import REPO, Proc, wait_for, write_toy_data

pytestmark = [pytest.mark.integration, pytest.mark.requires("mosquitto", "onnxruntime", "paho", "torch")]

CLIENT = REPO / "examples" / "standalone_client" / "client.py"
#: What the client may import besides the standard library.
RUNTIMES = {"numpy", "paho", "onnxruntime", "tokenizers"}
#: Packages the client must not need: torch and everything of this repository.
BLOCKED = ("torch", "fedhft", "devices", "export", "edge_runtime", "server", "benchmarks", "tests")
TIER = "rpi5"  # a catalog tier whose devices run ONNX Runtime; the plan is sized for the 2-layer tiny model
PLAN = AdapterPlan(depth=2, ranks=(2, 4), mask_density=0.5, precision="int8", batch_size=4, max_seq_len=16)
ROUNDS = 3


@pytest.fixture(scope="module")
def ort_bundles(tmp_path_factory) -> Path:
    from export import export_bundle

    out = tmp_path_factory.mktemp("bundles")
    export_bundle("tiny", 2, TIER, PLAN, "ort", out, progress=lambda _: None)
    return out


@pytest.fixture
def blocked(tmp_path) -> dict:
    """An environment in which importing torch or any fedhft package fails (PYTHONPATH shadows them)."""
    root = tmp_path / "blocked"
    for name in BLOCKED:
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text(
            f"raise ImportError('{name} is blocked: the standalone client must run without it')\n"
        )
    return {"PYTHONPATH": str(root)}


def test_the_client_imports_only_the_standard_library_and_its_runtimes():
    tree = ast.parse(CLIENT.read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
    }
    assert imported - set(sys.stdlib_module_names) - {"__future__"} == RUNTIMES
    assert len(CLIENT.read_text().splitlines()) < 500  # one short file


_VECTOR_CHECK = """
import importlib.util, json, sys
from pathlib import Path
import numpy as np
spec = importlib.util.spec_from_file_location("client", sys.argv[1])
client = importlib.util.module_from_spec(spec); spec.loader.exec_module(client)
vectors, out = Path(sys.argv[2]), {}
def tensor(t):
    return np.array(t["values"], dtype=t["dtype"]).reshape(t["shape"])
for enc in ("fp32", "fp16", "int8"):
    v = json.loads((vectors / f"update_{enc}.json").read_text())
    m = v["message"]
    header = {k: m[k] for k in ("fleet", "client", "round", "task_id", "num_examples", "metrics", "encoding")}
    body = client.encode_update({k: tensor(t) for k, t in m["tensors"].items()}, enc)
    out[enc] = client.pack({"type": "update", **header}, body) == (vectors / v["payload_file"]).read_bytes()
task = json.loads((vectors / "task.json").read_text())
header, body = client.unpack((vectors / "task.bin").read_bytes())
out["task_mask"] = client.st_load(body)["__mask__"].tolist() == task["message"]["mask"]["values"]
ids = json.loads((vectors.parent / "client_ids.json").read_text())["device"]
out["session_ids"] = all(client.session_id(d["client"], d["password"]) == d["client_id"] for d in ids)
print(json.dumps(out))
"""


def test_the_client_encodes_exactly_like_the_conformance_vectors(blocked):
    """Updates in fp32, fp16 and int8 byte for byte, the task's mask, the session client ids (run in
    a subprocess with torch and fedhft blocked: loading the client swaps onnxruntime.training)."""
    vectors = REPO / "tests" / "conformance" / "vectors"
    run = subprocess.run(
        [sys.executable, "-c", _VECTOR_CHECK, str(CLIENT), str(vectors)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**_env(), **blocked},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout.splitlines()[-1]) == {
        "fp32": True,
        "fp16": True,
        "int8": True,
        "task_mask": True,
        "session_ids": True,
    }


def _env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _server_config(path: Path, bundles: Path, fleet: str) -> Path:
    settings = {
        "fleet": fleet,
        "bundles_dir": str(bundles),
        "strategy": "fedhft",
        "rounds": ROUNDS,
        "clients_per_round": 3,
        "min_clients": 3,
        "round_deadline_s": 300,
        "update_encoding": "int8",
        "local_steps": 4,
        "lr": 0.01,
        "warmup_rounds": 1,
        "seed": 3,
        "norm_bound": 100.0,
        "strategy_options": json.dumps({"num_clusters": 2}),
    }
    path.write_text("".join(f"{k}: {v}\n" for k, v in settings.items()))
    return path


def _events(proc: Proc, name: str) -> list[dict]:
    return [e for e in proc.events() if e.get("event") == name]


def test_standalone_clients_train_three_fedhft_rounds_beside_fedhft_edge(
    tmp_path, ort_bundles, mosquitto, fleet, blocked
):
    from server import Store

    data = write_toy_data(tmp_path / "toy.csv", 48, seed=1)
    server = Proc(
        "server",
        [
            sys.executable,
            "-m",
            "fedhft",
            "--log-level",
            "INFO",
            "server",
            "--broker",
            mosquitto.url,
            "--state",
            str(tmp_path / "state"),
            "--config",
            str(_server_config(tmp_path / "server.yaml", ort_bundles, fleet.fleet)),
            "--credentials",
            str(fleet.dir / "server.json"),
        ],
        tmp_path / "server.log",
    )
    creds = {cid: fleet.dir / "clients" / f"{cid}.json" for cid in ("dev-000", "dev-001", "dev-002")}
    client_cmd = [
        sys.executable,
        str(CLIENT),
        "--broker",
        mosquitto.url,
        "--data",
        str(data),
        "--tier",
        TIER,
        "--rounds",
        str(ROUNDS),
        "--ack-timeout",
        "20",
    ]
    standalone = {
        "dev-000": Proc(
            "dev-000",
            [
                *client_cmd,
                "--credentials",
                str(creds["dev-000"]),
                "--bundles",
                str(ort_bundles),
                "--state",
                str(tmp_path / "s0"),
            ],
            tmp_path / "dev-000.log",
            {**_env(), **blocked},
        ),
        "dev-001": Proc(
            "dev-001",
            [*client_cmd, "--credentials", str(creds["dev-001"]), "--state", str(tmp_path / "s1")],
            tmp_path / "dev-001.log",
            {**_env(), **blocked},
        ),
    }
    edge = Proc(
        "dev-002",
        [
            sys.executable,
            "-m",
            "fedhft",
            "edge",
            f"broker={mosquitto.url}",
            f"credentials={creds['dev-002']}",
            f"data={data}",
            f"state={tmp_path / 's2'}",
            "backend=ort",
            f"tier={TIER}",
            "threads=1",
            "ack_timeout_s=20",
            "progress_every=0",
            "log_format=json",
            f"bundle_dir={ort_bundles}",
        ],
        tmp_path / "dev-002.log",
    )
    procs = [server, *standalone.values(), edge]
    try:
        wait_for(lambda: not server.alive, 600, "the server to finish 3 rounds", procs=procs)
        assert server.wait(5) == 0, server.tail()
        for proc in standalone.values():
            wait_for(lambda p=proc: not p.alive, 120, f"{proc.name} to stop after {ROUNDS} acks", procs=procs)
            assert proc.wait(5) == 0, proc.tail()
    finally:
        for proc in procs:
            proc.stop()

    store = Store(tmp_path / "state", readonly=True)
    try:
        rounds = store.rounds()
        assert [r.state for r in rounds] == ["committed"] * ROUNDS, server.tail()
        for r in rounds:
            tasks = {t.client: t for t in store.tasks(r.idx)}
            assert sorted(tasks) == sorted(creds) and {t.status for t in tasks.values()} == {"stored"}, (r.idx, tasks)
            assert {t.backend for t in tasks.values()} == {"ort"}
            for update in store.iter_updates(r.idx):  # what was stored: int8, as asked, and a real training step
                assert update.encoding == "int8"
                tensors = decode_update(update.payload, "int8")
                assert tensors["layer1.query.lora_B"].shape == (32, 4)  # the masked half of the 64 rows
                assert any(np.abs(t).max() > 0 for t in tensors.values())
        assert rounds[-1].metrics["stored"] == 3
    finally:
        store.close()
    for cid, proc in standalone.items():
        acks = _events(proc, "ack")
        assert [a["status"] for a in acks] == ["stored"] * ROUNDS, proc.tail()
        assert _events(proc, "stopped")[-1]["torch_loaded"] is False
    assert _events(standalone["dev-001"], "bundle_fetched"), "dev-001 should have fetched the bundle in chunks"
    assert not _events(standalone["dev-000"], "bundle_fetched"), "dev-000 has the bundle pre-provisioned"

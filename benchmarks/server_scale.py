"""How the fedhft server scales with the number of clients, over a real Mosquitto it starts.

For each client count (100, 1,000, 5,000 by default) it runs the real server (``python -m fedhft
server`` as a subprocess, so its peak RSS is its own) for a few rounds against synthetic clients,
then sends the very same payloads through the same broker without the server (raw publish ->
subscribe) to show what the broker alone needs for those bytes.

ONE publisher process speaks for all N clients, with the server's credentials, on each client's
own ``from/<client>/...`` topics: the server's intake path is the one real devices exercise, but
N TCP connections with N Last Wills are not (why: docs/DESIGN-NOTES.md).

    python benchmarks/server_scale.py --quick               # 100 clients, CI (< 1 minute)
    python benchmarks/server_scale.py --out scale.json      # 100, 1000, 5000
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devices import AdapterPlan  # noqa: E402
from server.broker import MosquittoBroker, fleet_init  # noqa: E402
from fedhft.layout import ModelDims  # noqa: E402
from fedhft.manifest import Manifest, write_manifest  # noqa: E402
from fedhft.mqtt import ClientSpec, MqttConnection, Will  # noqa: E402
from fedhft.protocol import Hello, Task, Topics, decode, encode  # noqa: E402

FLEET = "bench"
DIMS = ModelDims(num_layers=4, hidden=128, intermediate=512, num_labels=2)
PLANS = {
    "low": AdapterPlan(depth=1, ranks=(4,), mask_density=0.25, batch_size=8, max_seq_len=64),
    "mid": AdapterPlan(depth=2, ranks=(4, 8), mask_density=0.5, batch_size=8, max_seq_len=64),
    "high": AdapterPlan(depth=3, ranks=(4, 8, 8), mask_density=1.0, batch_size=8, max_seq_len=64),
}


def make_bundles(root: Path) -> Path:
    """Manifests without model files: the server only reads manifests (it never loads a model)."""
    for tier, plan in PLANS.items():
        d = root / tier / "torch"
        d.mkdir(parents=True, exist_ok=True)
        write_manifest(d, Manifest("torch", tier, plan, DIMS, "synthetic", "0" * 64, (), {}))
    return root


def _paho_client(url: str, cred, client_id: str):
    conn = MqttConnection(ClientSpec(url, client_id, cred.username, cred.password, keepalive=60, max_inflight=1000))
    c = conn.paho
    c.max_queued_messages_set(0)
    ready = threading.Event()
    c.on_connect = lambda *a: ready.set()
    conn.connect()
    c.loop_start()
    if not ready.wait(10):
        raise RuntimeError(f"{client_id}: no CONNACK from {url}")
    return c


class Simulator:
    """N synthetic clients behind one connection: hello each, answer each task with an update."""

    def __init__(self, url: str, cred, n: int, seed: int = 0):
        self.n, self.seed, self.topics = n, seed, Topics(FLEET)
        self.ids = [f"sim-{i:05d}" for i in range(n)]
        self.inbox: queue.Queue = queue.Queue()
        self.last_round: dict[int, list[tuple[bytes, bytes]]] = {}
        self.client = _paho_client(url, cred, "bench-sim")
        self.server_up = threading.Event()
        self.client.on_message = self._on_message
        self.client.subscribe([(f"{self.topics.base}/to/+/task", 1), (self.topics.server_status, 1)])
        self.worker = threading.Thread(target=self._answer_tasks, daemon=True)
        self.worker.start()

    def _on_message(self, client, userdata, msg) -> None:
        if msg.topic == self.topics.server_status:
            if getattr(decode(msg.payload), "state", None) == "running":
                self.server_up.set()  # it has subscribed: hellos from now on reach it
            return
        self.inbox.put((msg.topic, bytes(msg.payload)))

    def hello_all(self) -> None:
        from server import SYNTHETIC_PROFILE

        tiers = list(PLANS)
        for i, cid in enumerate(self.ids):
            hello = Hello(FLEET, cid, dict(SYNTHETIC_PROFILE), ["torch"], tiers[i % len(tiers)], "bench")
            self.client.publish(self.topics.hello(cid), encode(hello), qos=1)

    def _answer_tasks(self) -> None:
        from server import synthetic_update

        while True:
            item = self.inbox.get()
            if item is None:
                return
            task = decode(item[1])
            if not isinstance(task, Task):
                continue
            payload = encode(synthetic_update(task, self.seed))
            self.last_round.setdefault(task.round, []).append((item[1], payload))
            self.client.publish(self.topics.update(task.client), payload, qos=1)

    def stop(self) -> None:
        self.inbox.put(None)
        self.worker.join(10)
        self.client.disconnect()
        self.client.loop_stop()


class _Device:
    """One real MQTT connection (device credentials, Last Will, retained status) driven by an
    external select loop: thousands per process without a thread each."""

    def __init__(self, url: str, cred, seed: int):
        from fedhft.protocol import ClientStatus

        self.cid, self.seed, self.topics = cred.client_id, seed, Topics(FLEET)
        self.server_state = None
        will = Will(self.topics.status(self.cid), encode(ClientStatus(FLEET, self.cid, "offline")))
        conn = MqttConnection(ClientSpec(url, self.cid, cred.username, cred.password, keepalive=120, will=will))
        self.c = conn.paho
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        conn.connect()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        from fedhft.protocol import ClientStatus

        client.subscribe([(t, 1) for t in self.topics.client_subscriptions(self.cid)])
        client.publish(self.topics.status(self.cid), encode(ClientStatus(FLEET, self.cid, "online")), 1, True)

    def _on_message(self, client, userdata, msg):
        from server import SYNTHETIC_PROFILE, synthetic_update

        message = decode(msg.payload)
        if isinstance(message, Task):
            client.publish(self.topics.update(self.cid), encode(synthetic_update(message, self.seed)), qos=1)
        elif getattr(message, "state", None) == "running" and self.server_state != "running":
            tier = list(PLANS)[int(self.cid.split("-")[-1]) % len(PLANS)]
            hello = Hello(FLEET, self.cid, dict(SYNTHETIC_PROFILE), ["torch"], tier, "bench")
            client.publish(self.topics.hello(self.cid), encode(hello), qos=1)
        self.server_state = getattr(message, "state", self.server_state)


def connection_worker(url: str, fleet_dir: str, ids: list[str], stop, seed: int = 0) -> None:
    """Process body: ``ids`` devices, one TCP connection each, one selector loop for all."""
    import selectors

    from fedhft.credentials import load_credentials

    sel = selectors.DefaultSelector()
    devices = []
    for cid in ids:
        d = _Device(url, load_credentials(Path(fleet_dir) / "clients" / f"{cid}.json"), seed)
        sel.register(d.c.socket(), selectors.EVENT_READ, d)
        devices.append(d)
    last_misc = 0.0
    while not stop.is_set():
        for key, _ in sel.select(timeout=0.02):
            key.data.c.loop_read()
        for d in devices:
            if d.c.want_write():
                d.c.loop_write()
        if time.monotonic() - last_misc > 1.0:  # keepalive pings, retries
            last_misc = time.monotonic()
            for d in devices:
                d.c.loop_misc()
    for d in devices:
        d.c.disconnect()
        d.c.loop_write()


def _vm_hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def start_clients(url: str, fleet, n: int, connections: bool, procs: int):
    """The synthetic clients: one publisher (default) or ``procs`` processes of real connections."""
    if not connections:
        return Simulator(url, fleet.server, n)
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    stop = ctx.Event()
    ids = list(fleet.devices)[:n]
    workers = [
        ctx.Process(target=connection_worker, args=(url, str(fleet.dir), ids[k::procs], stop), daemon=True)
        for k in range(procs)
    ]
    for w in workers:
        w.start()
    return _Workers(workers, stop)


class _Workers:
    """The connection-mode clients, seen through the Simulator's interface."""

    def __init__(self, workers, stop):
        self.workers, self.stop_event = workers, stop
        self.last_round: dict = {}
        self.server_up = threading.Event()
        self.server_up.set()  # the devices say hello on their own when the server comes up

    def hello_all(self) -> None:
        pass

    def stop(self) -> None:
        self.stop_event.set()
        for w in self.workers:
            w.join(20)
            if w.is_alive():
                w.kill()


def _write_server_config(work: Path, fleet, n: int, rounds: int, strategy: str, timeout: float) -> Path:
    """work/server.yaml (and the bundles it names): every one of the ``n`` clients in every round."""
    cfg = work / "server.yaml"
    cfg.write_text(
        json.dumps(
            {  # JSON is YAML
                "fleet": FLEET,
                "bundles_dir": str(make_bundles(work / "bundles")),
                "strategy": strategy,
                "rounds": rounds,
                "clients_per_round": n,
                "min_clients": n,
                "round_deadline_s": timeout,
                "update_encoding": "fp16",
                "norm_bound": 1e4,
                "intake_batch": 256,
                "max_packet_size": fleet.max_packet_size,
            }
        )
    )
    return cfg


def _server_command(url: str, work: Path, cfg: Path, fleet) -> list[str]:
    """``fedhft server`` on ``url`` with the fleet's server credentials, its state in work/state."""
    return [
        sys.executable,
        "-m",
        "fedhft",
        "--log-level",
        "WARNING",
        "server",
        "--broker",
        url,
        "--state",
        str(work / "state"),
        "--config",
        str(cfg),
        "--credentials",
        str(fleet.dir / "server.json"),
    ]


def run_server(
    work: Path,
    url: str,
    fleet,
    n: int,
    rounds: int,
    strategy: str,
    timeout: float,
    connections: bool = False,
    procs: int = 2,
) -> dict:
    cfg = _write_server_config(work, fleet, n, rounds, strategy, timeout)
    cmd = _server_command(url, work, cfg, fleet)
    log = open(work / "server.log", "wb")
    t0 = time.perf_counter()
    sim = start_clients(url, fleet, n, connections, procs)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    peak, hello_sent = 0.0, False
    try:
        while proc.poll() is None:
            peak = max(peak, _vm_hwm_mb(proc.pid))
            if not hello_sent and sim.server_up.is_set():
                sim.hello_all()
                hello_sent = True
            if time.perf_counter() - t0 > timeout:
                proc.kill()
                raise RuntimeError(
                    f"server did not finish {rounds} rounds for {n} clients in {timeout}s; see {work / 'server.log'}"
                )
            time.sleep(0.1)
    finally:
        sim.stop()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"server exited with {proc.returncode}; see {work / 'server.log'}")
    metrics = [json.loads(line) for line in (work / "state" / "metrics.jsonl").read_text().splitlines()]
    return {"wall_s": wall, "peak_rss_mb": peak, "metrics": metrics, "payloads": sim.last_round.get(rounds - 1, [])}


def raw_delivery(url: str, cred, payloads: list[bytes]) -> float:
    """Seconds for the broker alone to carry ``payloads`` publisher -> subscriber at QoS 1."""
    base = Topics(FLEET).base + "/raw"
    got, done = [0], threading.Event()
    sub = _paho_client(url, cred, "bench-raw-sub")

    def on_message(c, u, m):
        got[0] += 1
        if got[0] >= len(payloads):
            done.set()

    sub.on_message = on_message
    sub.subscribe(f"{base}/#", qos=1)
    time.sleep(0.3)  # let the SUBACK land
    pub = _paho_client(url, cred, "bench-raw-pub")
    t0 = time.perf_counter()
    for i, p in enumerate(payloads):
        pub.publish(f"{base}/{i % 1000}", p, qos=1)
    ok = done.wait(600)
    elapsed = time.perf_counter() - t0
    for c in (pub, sub):
        c.disconnect()
        c.loop_stop()
    if not ok:
        raise RuntimeError(f"raw delivery: {got[0]} of {len(payloads)} messages arrived")
    return elapsed


def bench_one(n: int, rounds: int, strategy: str, timeout: float, connections: bool = False, procs: int = 2) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"fedhft-scale-{n}-") as tmp:
        work = Path(tmp)
        fleet = fleet_init(work / "fleet", n if connections else 1, fleet=FLEET)
        with MosquittoBroker(fleet) as broker:
            res = run_server(work, broker.url, fleet, n, rounds, strategy, timeout, connections, procs)
            m = res["metrics"]
            pairs = res.pop("payloads") or _same_sizes(m[-1], n)
            same_bytes = [t for t, _ in pairs] + [u for _, u in pairs]
            raw_s = raw_delivery(broker.url, fleet.server, same_bytes)
    last = m[-1]
    return {
        "clients": n,
        "rounds": rounds,
        "strategy": strategy,
        "mode": f"{n} connections in {procs} processes" if connections else "one publisher for all clients",
        "round_s_mean": float(np.mean([r["round_s"] for r in m])),
        "round_s_last": last["round_s"],
        "aggregation_s_mean": float(np.mean([r["aggregation_s"] for r in m])),
        "peak_rss_mb": round(res["peak_rss_mb"], 1),
        "wall_s": round(res["wall_s"], 2),
        "stored_last_round": last["stored"],
        "bytes_down_last_round": last["bytes_down"],
        "bytes_up_last_round": last["bytes_up"],
        "raw_broker_s_same_bytes": round(raw_s, 3),
        "raw_messages": len(same_bytes),
        "raw_bytes": int(sum(len(p) for p in same_bytes)),
    }


def _same_sizes(last: dict, n: int) -> list[tuple[bytes, bytes]]:
    """Random payloads of the last round's mean task and update sizes (connection mode keeps no
    payloads in the parent process)."""
    down, up = max(1, last["bytes_down"] // n), max(1, last["bytes_up"] // max(1, last["stored"]))
    return [(os.urandom(down), os.urandom(up)) for _ in range(n)]


def print_table(rows: list[dict]) -> None:
    head = (
        "clients",
        "round s (mean)",
        "round s (last)",
        "aggregation s",
        "server peak RSS MB",
        "MB/round",
        "broker alone s",
        "round/broker",
    )
    print(" | ".join(head))
    print(" | ".join("-" * len(h) for h in head))
    print(f"clients: {rows[0]['mode'] if rows else ''}; strategy {rows[0]['strategy'] if rows else ''}")
    for r in rows:
        mb = (r["bytes_down_last_round"] + r["bytes_up_last_round"]) / 2**20
        print(
            " | ".join(
                [
                    f"{r['clients']:,}",
                    f"{r['round_s_mean']:.2f}",
                    f"{r['round_s_last']:.2f}",
                    f"{r['aggregation_s_mean']:.3f}",
                    f"{r['peak_rss_mb']:.0f}",
                    f"{mb:.1f}",
                    f"{r['raw_broker_s_same_bytes']:.2f}",
                    f"{r['round_s_last'] / max(r['raw_broker_s_same_bytes'], 1e-9):.1f}x",
                ]
            )
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, nargs="+", default=[100, 1000, 5000])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--strategy", default="fedavg-lora")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per client count")
    p.add_argument("--quick", action="store_true", help="100 clients, 2 rounds (CI)")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument(
        "--connections",
        action="store_true",
        help="one real MQTT connection per client (device credentials, Last Will), in --procs processes",
    )
    p.add_argument("--procs", type=int, default=2, help="client processes for --connections")
    args = p.parse_args(argv)
    counts = [100] if args.quick else args.clients
    rows = []
    for n in counts:
        print(f"... {n} clients", file=sys.stderr, flush=True)
        rows.append(bench_one(n, args.rounds, args.strategy, args.timeout, args.connections, args.procs))
    print_table(rows)
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": {"cpus": os.cpu_count()}, "results": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

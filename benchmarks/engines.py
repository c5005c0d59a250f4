"""Engine speed: the same federated run on the MQTT engine and on the in-process engine, side by side.

    fedhft bench engines [--quick] [--out benchmarks/results/engines] [--threads N] [--no-profile]
                         [key=value ...  (SimConfig overrides)]

1. ``fedhft simulate`` (Mosquitto, the ``fedhft server`` process, one ``fedhft edge`` process per
   client) runs the config; its federated phase (broker start to the server's exit) is timed.
2. ``InProcessEngine`` runs the same config on that run's data files and bundles, timed without and
   then with cProfile (forward+backward, validation forwards, global evaluation, session opening,
   tokenizing, the rest). Its evaluation (``eval_s``) is reported beside, not in, its time.

Seconds per client-round = engine seconds / (clients x rounds). Default config: the accuracy
benchmark's MiniLM run (6 clients over three tiers, torch backend, 4 rounds of 5 local steps, seq 32,
SST-2 1,200/300); ``--quick`` runs the tiny model. The in-process engine uses ``--threads`` torch
threads (default: every core, as the MQTT engine's processes together do).
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FULL = {"model": "minilm", "dataset": "sst2", "clients": 6, "rounds": 4, "local_steps": 5, "max_seq_len": 32,
        "train_size": 1200, "test_size": 300, "lr": 3e-3}
QUICK = {"model": "tiny", "clients": 3, "rounds": 2, "local_steps": 4, "max_seq_len": 16, "train_size": 0,
         "test_size": 0, "lr": 2e-2}
COMMON = {"tiers": "[android-mid,rpi5,jetson-orin-nano]", "backend": "torch", "memory_budget": "off",
          "progress": "false", "broker": "auto", "strategy": "fedhft", "seed": 0}
#: Profile buckets: (label, file suffix, function name); cumulative time of the outermost call.
BUCKETS = (
    ("forward+backward (session.train_step)", "sessions/_torch.py", "train_step"),
    ("device validation forwards (session.logits)", "sessions/_torch.py", "logits"),
    ("global evaluation (Evaluator)", "simulate/_inprocess.py", "_evaluate"),
    ("opening sessions (backbone load, once per bundle)", "sessions/__init__.py", "open_session"),
    ("tokenizing (once per client)", "simulate/_inprocess.py", "_prepared"),
    ("server: check_update", "server/_validation.py", "check_update"),
    ("server: aggregation + commit", "simulate/_inprocess.py", "_commit"),
    ("protocol encode/decode", "protocol/_messages.py", "encode"),
)


def _mqtt(settings: dict, run_dir: Path) -> dict:
    args = [f"{k}={v}" for k, v in {**settings, "out": str(run_dir)}.items()]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "fedhft", "simulate", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=1800)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"fedhft simulate failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    results = json.loads((run_dir / "results.json").read_text())
    return {"wall_s": round(wall, 2), "phases": results["phases"], "federated_s": results["phases"]["federated_s"],
            "accuracy": results["accuracy"], "status": results["status"]}


def _engine(run_dir: Path, threads: int):
    from fedhft.simulate._config import load_sim_config
    from fedhft.simulate._datasets import Example
    from fedhft.simulate._evaluate import encode_examples
    from fedhft.simulate._inprocess import InProcessEngine, devices_for

    cfg = load_sim_config(run_dir / "config.yaml")
    results = json.loads((run_dir / "results.json").read_text())
    tiers, backends = results["tier_of_client"], results["backend_of_tier"]
    files = {c: run_dir / "data" / f"{c}.jsonl" for c in tiers}
    tier0 = tiers[sorted(tiers)[0]]
    test = [Example(**json.loads(x)) for x in (run_dir / "data" / "test.jsonl").read_text().splitlines()]
    test_set = encode_examples(run_dir / "bundles" / tier0 / backends[tier0] / "tokenizer.json", test,
                               cfg.max_seq_len)
    return InProcessEngine(cfg, devices_for(files, tiers, backends), run_dir / "bundles", test=test_set,
                           threads=threads, say=lambda line: None), cfg


def _inprocess(run_dir: Path, threads: int) -> dict:
    engine, cfg = _engine(run_dir, threads)
    t0 = time.perf_counter()
    result = engine.run()
    wall = time.perf_counter() - t0
    return {"wall_s": round(wall, 2), "phases": result.phases, "threads": threads,
            "federated_s": round(wall - result.phases.get("eval_s", 0.0), 2),
            "accuracy": [r.get("accuracy") for r in result.rounds],
            "stored": [r["stored"] for r in result.rounds]}


def _profile(run_dir: Path, threads: int) -> dict:
    engine, _ = _engine(run_dir, threads)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    engine.run()
    prof.disable()
    wall = time.perf_counter() - t0
    stats = pstats.Stats(prof).stats
    shares = {}
    for label, suffix, func in BUCKETS:
        ct = sum(v[3] for (file, _, name), v in stats.items() if name == func and file.endswith(suffix))
        shares[label] = round(ct / wall, 4)
    shares["rest"] = round(max(0.0, 1.0 - sum(shares.values())), 4)
    top = sorted(((v[3], f"{Path(f).name}:{n}") for (f, _, n), v in stats.items()), reverse=True)[:25]
    return {"wall_s": round(wall, 2), "shares": shares, "top_cumulative": [(n, round(t, 3)) for t, n in top]}


def _table(out: dict) -> str:
    m, p, cr = out["mqtt"], out["inprocess"], out["client_rounds"]
    lines = ["| engine | federated s | s per client-round | whole run s |", "|---|---|---|---|",
             f"| MQTT (broker + server + {out['settings']['clients']} edge processes) | {m['federated_s']:.1f} | "
             f"{m['federated_s'] / cr:.2f} | {m['wall_s']:.1f} |",
             f"| in-process ({p['threads']} torch threads) | {p['federated_s']:.1f} | {p['federated_s'] / cr:.2f} | "
             f"{p['wall_s']:.1f} (global evaluation {p['phases'].get('eval_s', 0):.1f}) |",
             "", f"speed ratio per client-round (MQTT / in-process): **{out['ratio']:.1f}x** federated phase, "
             f"{m['wall_s'] / p['wall_s']:.1f}x whole run (evaluation included on both sides); same global "
             f"accuracy every round: {out['same_accuracy']}"]
    if "profile" in out:
        lines += ["", f"In-process profile (cProfile, {out['profile']['wall_s']:.1f} s wall; share of wall time):", "",
                  "| where | share |", "|---|---|"]
        lines += [f"| {k} | {v:.1%} |" for k, v in sorted(out["profile"]["shares"].items(), key=lambda kv: -kv[1])]
    return "\n".join(lines) + "\n"


def parse(argv):
    p = argparse.ArgumentParser(prog="fedhft bench engines", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny model (CI-sized)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "engines"))
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads of the in-process engine")
    p.add_argument("--no-profile", action="store_true", help="skip the profiled in-process run")
    p.add_argument("--work", default=None, help="folder for the MQTT run's files (default: a new temp folder)")
    p.add_argument("--table-only", action="store_true", help="re-write engines.md from --out's engines.json, run nothing")
    p.add_argument("overrides", nargs="*", help="SimConfig key=value for both engines")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.table_only:
        table = _table(json.loads((out_dir / "engines.json").read_text()))
        (out_dir / "engines.md").write_text(table, encoding="utf-8")
        print(table)
        return 0
    settings = {**COMMON, **(QUICK if args.quick else FULL)}
    work = Path(args.work or tempfile.mkdtemp(prefix="fedhft-bench-engines-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.quick:
        from benchmarks.accuracy import toy_dataset

        settings["dataset"] = str(toy_dataset(work / "toy.jsonl", 240))
    settings.update(dict(o.split("=", 1) for o in args.overrides))
    run_dir = work / "run"
    print(f"MQTT engine: fedhft simulate {settings['model']}, {settings['clients']} clients x {settings['rounds']} "
          "rounds ...", flush=True)
    mqtt = _mqtt(settings, run_dir)
    print(f"  federated phase {mqtt['federated_s']:.1f} s; in-process engine ({args.threads} threads) ...", flush=True)
    inproc = _inprocess(run_dir, args.threads)
    cr = int(settings["clients"]) * int(settings["rounds"])
    out = {"settings": settings, "client_rounds": cr, "mqtt": mqtt, "inprocess": inproc,
           "ratio": round(mqtt["federated_s"] / max(inproc["federated_s"], 1e-9), 2),
           "same_accuracy": mqtt["accuracy"] == inproc["accuracy"]}
    if not args.no_profile:
        print("  profiled in-process run ...", flush=True)
        out["profile"] = _profile(run_dir, args.threads)
    (out_dir / "engines.json").write_text(json.dumps(out, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (out_dir / "engines.md").write_text(_table(out), encoding="utf-8")
    print(_table(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

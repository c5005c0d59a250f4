"""Engine speed: the same federated run on the MQTT engine and on the in-process engine, side by side.

    fedhft bench engines [--quick] [--out benchmarks/results/engines] [--threads N] [--workers N] [--no-profile]
                         [key=value ...  (SimConfig overrides)]

1. ``fedhft simulate`` (Mosquitto, ``fedhft server``, one ``fedhft edge`` process per client) runs the
   config; its federated phase (broker start to the server's exit) is timed.
2. ``InProcessEngine`` runs the same config on that run's data and bundles: as configured, then
   without the frozen-layer cache (device seconds per tier), then with one worker under cProfile
   (the split of its wall time; the evaluation runs on its own thread, beside it).

Seconds per client-round = engine seconds / (clients x rounds), without the evaluation (the MQTT
engine's runs on a side thread; the in-process one's too, or is subtracted). Default config: 6 MiniLM
clients over three tiers, 4 rounds of 5 steps, seq 32, SST-2 1,200/300; ``--quick`` runs the tiny model.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FULL = {
    "model": "minilm",
    "dataset": "sst2",
    "clients": 6,
    "rounds": 4,
    "local_steps": 5,
    "max_seq_len": 32,
    "train_size": 1200,
    "test_size": 300,
    "lr": 3e-3,
}
QUICK = {
    "model": "tiny",
    "clients": 3,
    "rounds": 2,
    "local_steps": 4,
    "max_seq_len": 16,
    "train_size": 0,
    "test_size": 0,
    "lr": 2e-2,
}
COMMON = {
    "tiers": "[android-mid,rpi5,jetson-orin-nano]",
    "backend": "torch",
    "memory_budget": "off",
    "progress": "false",
    "broker": "auto",
    "strategy": "fedhft",
    "seed": 0,
}
#: Profile buckets: (label, file suffix, function name); cumulative time of the outermost call.
#: The first three are the model's forward and backward passes.
BUCKETS = (
    ("forward+backward (session.train_step)", "sessions/_torch.py", "train_step"),
    ("device validation forwards (session.logits)", "sessions/_torch.py", "logits"),
    ("frozen-layer cache fill (forwards, once per client)", "sessions/_torch.py", "cache_frozen_rows"),
    ("opening sessions (backbone load, once per bundle)", "sessions/__init__.py", "open_session"),
    ("tokenizing (once per client)", "edge_runtime/_data.py", "tokenize"),
    ("server: plan_round (strategy configure)", "server/_plan_round.py", "plan_round"),
    ("server: check_update", "server/_validation.py", "check_update"),
    ("server: aggregation (strategy add)", "simulate/_inprocess.py", "_intake"),
    ("server: commit (finish, state files)", "simulate/_inprocess.py", "_commit"),
    ("protocol encode/decode", "protocol/_messages.py", "encode"),
)
MODEL = 3  # the first MODEL buckets are model compute


def _mqtt(settings: dict, run_dir: Path) -> dict:
    args = [f"{k}={v}" for k, v in {**settings, "out": str(run_dir)}.items()]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "fedhft", "simulate", *args], cwd=ROOT, capture_output=True, text=True, timeout=1800
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"fedhft simulate failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    results = json.loads((run_dir / "results.json").read_text())
    return {
        "wall_s": round(wall, 2),
        "phases": results["phases"],
        "federated_s": results["phases"]["federated_s"],
        "accuracy": results["accuracy"],
        "status": results["status"],
    }


def _engine(run_dir: Path, threads: int, **options):
    from simulate import Example, InProcessEngine, devices_for, encode_examples, load_sim_config

    cfg = load_sim_config(run_dir / "config.yaml")
    results = json.loads((run_dir / "results.json").read_text())
    tiers, backends = results["tier_of_client"], results["backend_of_tier"]
    files = {c: run_dir / "data" / f"{c}.jsonl" for c in tiers}
    tier0 = tiers[sorted(tiers)[0]]
    test = [Example(**json.loads(x)) for x in (run_dir / "data" / "test.jsonl").read_text().splitlines()]
    test_set = encode_examples(run_dir / "bundles" / tier0 / backends[tier0] / "tokenizer.json", test, cfg.max_seq_len)
    return InProcessEngine(
        cfg,
        devices_for(files, tiers, backends),
        run_dir / "bundles",
        test=test_set,
        threads=threads,
        say=lambda line: None,
        **options,
    ), cfg


def _inprocess(run_dir: Path, threads: int, **options) -> dict:
    engine, cfg = _engine(run_dir, threads, **options)
    t0 = time.perf_counter()
    result = engine.run()
    wall = time.perf_counter() - t0
    inline = 0.0 if engine.eval_thread else result.phases.get("eval_s", 0.0)  # MQTT evaluates on a side thread
    return {
        "wall_s": round(wall, 2),
        "phases": result.phases,
        "threads": threads,
        "workers": engine.workers,
        "eval_thread": engine.eval_thread,
        "federated_s": round(wall - inline, 2),
        "accuracy": [r.get("accuracy") for r in result.rounds],
        "stored": [r["stored"] for r in result.rounds],
    }


def _tiers(cached: dict, plain: dict) -> dict[str, dict]:
    """Device seconds per tier with and without the frozen-layer cache."""
    out = {}
    for key, secs in sorted(plain["phases"].items()):
        if key.startswith("device_s/"):
            tier, got = key.split("/", 1)[1], cached["phases"].get(key, 0.0)
            out[tier] = {"uncached_s": secs, "cached_s": got, "speedup": round(secs / max(got, 1e-9), 2)}
    return out


def _profile(run_dir: Path, threads: int) -> dict:
    engine, _ = _engine(run_dir, threads, workers=1, eval_thread=True)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    result = engine.run()
    prof.disable()
    wall = time.perf_counter() - t0
    stats = pstats.Stats(prof).stats

    def cumulative(suffix: str, func: str) -> float:
        return sum(v[3] for (file, _, name), v in stats.items() if name == func and suffix in file)

    shares = {label: cumulative(suffix, func) / wall for label, suffix, func in BUCKETS}
    shares["server: aggregation (strategy add)"] -= shares["server: check_update"]  # _intake holds both
    shares["protocol encode/decode"] += cumulative("protocol/_messages.py", "decode") / wall
    shares = {k: round(v, 4) for k, v in shares.items()}
    shares["rest"] = round(max(0.0, 1.0 - sum(shares.values())), 4)
    top = sorted(((v[3], f"{Path(f).name}:{n}") for (f, _, n), v in stats.items()), reverse=True)[:25]
    return {
        "wall_s": round(wall, 2),
        "shares": shares,
        "model_share": round(sum(list(shares.values())[:MODEL]), 4),
        "eval_s": result.phases.get("eval_s", 0.0),
        "top_cumulative": [(n, round(t, 3)) for t, n in top],
    }


def _table(out: dict) -> str:
    m, p, cr = out["mqtt"], out["inprocess"], out["client_rounds"]
    lines = [
        "| engine | federated s | s per client-round | whole run s |",
        "|---|---|---|---|",
        f"| MQTT (broker + server + {out['settings']['clients']} edge processes) | {m['federated_s']:.1f} | "
        f"{m['federated_s'] / cr:.2f} | {m['wall_s']:.1f} |",
        f"| in-process ({p.get('workers', 1)} workers x {p['threads']} torch thread(s)) | "
        f"{p['federated_s']:.1f} | {p['federated_s'] / cr:.2f} | {p['wall_s']:.1f} (evaluation "
        f"{'on a side thread' if p.get('eval_thread') else 'inline'}: {p['phases'].get('eval_s', 0):.1f} s) |",
        "",
        f"speed ratio per client-round (MQTT / in-process): **{out['ratio']:.1f}x**; same global accuracy "
        f"every round: {out['same_accuracy']}",
    ]
    if "tiers" in out:
        lines += [
            "",
            "Frozen-layer cache (device seconds per tier, in-process, the same bits):",
            "",
            "| tier | without s | with s | speed-up |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {t} | {v['uncached_s']:.1f} | {v['cached_s']:.1f} | {v['speedup']:.2f}x |"
            for t, v in out["tiers"].items()
        ]
    if "profile" in out:
        prof = out["profile"]
        lines += [
            "",
            f"In-process profile (cProfile, one worker, {prof['wall_s']:.1f} s wall; share of wall time; "
            f"model forward+backward {prof.get('model_share', 0):.1%}; the evaluation, "
            f"{prof.get('eval_s', 0):.1f} s, ran beside it on its own thread):",
            "",
            "| where | share |",
            "|---|---|",
        ]
        lines += [f"| {k} | {v:.1%} |" for k, v in sorted(prof["shares"].items(), key=lambda kv: -kv[1])]
    if out.get("notes"):  # measurements made beside the benchmark (kept in engines.json), e.g. a sweep-size run
        lines += [""] + list(out["notes"])
    return "\n".join(lines) + "\n"


def parse(argv):
    p = argparse.ArgumentParser(prog="fedhft bench engines", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny model (CI-sized)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "engines"))
    p.add_argument("--threads", type=int, default=1, help="torch threads per in-process worker (1: as each edge)")
    p.add_argument("--workers", type=int, default=None, help="in-process workers (default: the engine's)")
    p.add_argument("--no-profile", action="store_true", help="skip the profiled in-process run")
    p.add_argument("--work", default=None, help="folder for the MQTT run's files (default: a new temp folder)")
    p.add_argument(
        "--table-only", action="store_true", help="re-write engines.md from --out's engines.json, run nothing"
    )
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
    print(
        f"MQTT engine: fedhft simulate {settings['model']}, {settings['clients']} clients x {settings['rounds']} "
        "rounds ...",
        flush=True,
    )
    t0 = time.perf_counter()
    mqtt = _mqtt(settings, run_dir)
    print(f"  federated phase {mqtt['federated_s']:.1f} s; in-process engine ...", flush=True)
    inproc = _inprocess(run_dir, args.threads, workers=args.workers)
    print(f"  {inproc['wall_s']:.1f} s; again without the frozen-layer cache ...", flush=True)
    plain = _inprocess(run_dir, args.threads, workers=args.workers, frozen_cache_mb=0)
    cr = int(settings["clients"]) * int(settings["rounds"])
    out = {
        "settings": settings,
        "client_rounds": cr,
        "mqtt": mqtt,
        "inprocess": inproc,
        "uncached": plain,
        "tiers": _tiers(inproc, plain),
        "ratio": round(mqtt["federated_s"] / max(inproc["federated_s"], 1e-9), 2),
        "same_accuracy": mqtt["accuracy"] == inproc["accuracy"] == plain["accuracy"],
        "quick": args.quick,
        "command": " ".join(["fedhft bench engines", *(argv or sys.argv[1:])]),
    }
    if not args.no_profile:
        print("  profiled in-process run (one worker) ...", flush=True)
        out["profile"] = _profile(run_dir, args.threads)
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    (out_dir / "engines.json").write_text(json.dumps(out, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (out_dir / "engines.md").write_text(_table(out), encoding="utf-8")
    print(_table(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Device-step benchmark: per tier and backend on the real MiniLM backbone, export time, bundle
size, median training-step time and peak RSS of the training process, each against eager
PyTorch on the same batch in the same run.

    python benchmarks/device_step.py [--tiers all|a,b] [--backends all|torch,ort] [--steps 10]
                                     [--quick] [--out results/device_step]

Run it on the device you want to characterise (`fedhft bench device` does the same).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BACKENDS = ("torch", "ort", "executorch")


def _worker(bundle: Path, eager: bool, steps: int, threads: int) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks._step_worker",
        "--bundle",
        str(bundle),
        "--steps",
        str(steps),
        "--threads",
        str(threads),
    ] + (["--eager"] if eager else [])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        tail = [line for line in proc.stderr.strip().splitlines() if "Error" in line or "error" in line]
        return {"error": f"exit {proc.returncode}: " + (tail[-1] if tail else "no error message (killed by a signal?)")}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _bundle(model: str, tier: str, plan, backend: str, out: Path, previous: dict) -> tuple[Path, float, float]:
    """(bundle dir, export seconds, size bytes); with ``previous`` rows, reuse an existing bundle."""
    from export import export_bundle
    from fedhft.manifest import load_manifest

    bundle_dir = out / "bundles" / tier / backend
    if (tier, backend) in previous and (bundle_dir / "manifest.json").is_file():
        manifest = load_manifest(bundle_dir)
        return bundle_dir, previous[(tier, backend)]["export_s"], sum(e.size for e in manifest.files.values())
    print(f"[{tier}/{backend}] export ...", file=sys.stderr, flush=True)
    result = export_bundle(model, 2, tier, plan, backend, out / "bundles", progress=lambda m: None)
    return result.bundle_dir, result.seconds, result.size_bytes


def run(
    tiers: list[str],
    backends: list[str],
    steps: int,
    out: Path,
    model: str = "minilm",
    threads: int = 2,
    previous: dict | None = None,
) -> list[dict]:
    from devices import load_catalog

    catalog = load_catalog()
    rows = []
    for tier in tiers:
        spec = catalog[tier]
        eager = None
        for backend in backends:
            bundle_dir, export_s, size = _bundle(model, tier, spec.plan, backend, out, previous or {})
            print(f"[{tier}/{backend}] measure ...", file=sys.stderr, flush=True)
            if eager is None:  # the eager reference shares the plan, so measure it once per tier
                eager = _worker(bundle_dir, True, steps, threads)
            measured = _worker(bundle_dir, False, steps, threads)
            rows.append(
                {
                    "tier": tier,
                    "backend": backend,
                    "precision": spec.plan.precision,
                    "depth": spec.plan.depth,
                    "ranks": list(spec.plan.ranks),
                    "budget_mb": spec.memory_budget_mb,
                    "export_s": export_s,
                    "bundle_mb": size / 1e6,
                    "backend_run": measured,
                    "eager_run": eager,
                }
            )
    return rows


def table(rows: list[dict]) -> str:
    head = (
        "| tier | backend | prec | batch x seq | export s | bundle MB | step ms (wall) | step ms (CPU) | "
        "eager step ms (CPU) | peak RSS MB | eager RSS MB | budget MB |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        b, e = r["backend_run"], r["eager_run"]
        if "error" in b:
            lines.append(
                f"| {r['tier']} | {r['backend']} | {r['precision']} | | {r['export_s']:.1f} | "
                f"{r['bundle_mb']:.1f} | error: {b['error'][:60]} | | | | {r['budget_mb']} |"
            )
            continue
        lines.append(
            f"| {r['tier']} | {r['backend']} | {r['precision']} | {b['batch']}x{b['seq']} | "
            f"{r['export_s']:.1f} | {r['bundle_mb']:.1f} | {b['median_step_ms']:.0f} | "
            f"{b['median_step_cpu_ms']:.0f} | {e.get('median_step_cpu_ms', float('nan')):.0f} | "
            f"{b['peak_rss_mb']:.0f} | "
            f"{e.get('peak_rss_mb', float('nan')):.0f} | {r['budget_mb']} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if "error" not in r["backend_run"]]
    labels = [f"{r['tier']}\n{r['backend']}" for r in ok]
    fig, axes = plt.subplots(1, 2, figsize=(max(8, len(ok) * 0.9), 4))
    for ax, key, title in (
        (axes[0], "median_step_cpu_ms", "median step, CPU ms"),
        (axes[1], "peak_rss_mb", "peak RSS (MB)"),
    ):
        x = range(len(ok))
        ax.bar([i - 0.2 for i in x], [r["backend_run"][key] for r in ok], 0.4, label="backend")
        ax.bar([i + 0.2 for i in x], [r["eager_run"].get(key, 0) for r in ok], 0.4, label="eager torch")
        ax.set_xticks(list(x), labels, rotation=60, fontsize=7)
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiers", default="all")
    p.add_argument("--backends", default="all")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="1 makes CPU time a load-robust step time")
    p.add_argument("--model", default="minilm")
    p.add_argument("--quick", action="store_true", help="one tier, 3 steps (CI)")
    p.add_argument("--quality", action="store_true", help="also measure int8 vs fp32 accuracy on SST-2")
    p.add_argument("--out", default="results/device_step")
    p.add_argument("--reuse", action="store_true", help="re-measure bundles already exported under --out")
    args = p.parse_args(argv)
    from devices import load_catalog

    tiers = list(load_catalog()) if args.tiers == "all" else args.tiers.split(",")
    backends = list(BACKENDS) if args.backends == "all" else args.backends.split(",")
    if args.quick:
        tiers, args.steps = tiers[:1], 3
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    previous = {}
    if args.reuse and (out / "device_step.json").is_file():
        previous = {(r["tier"], r["backend"]): r for r in json.loads((out / "device_step.json").read_text())["rows"]}
    rows = run(tiers, backends, args.steps, out, args.model, args.threads, previous)
    result = {
        "model": args.model,
        "steps": args.steps,
        "threads": args.threads,
        "rows": rows,
        "wall_s": time.time() - started,
    }
    if args.quality:
        from export import quantization_accuracy

        result["int8_quality"] = quantization_accuracy(args.model)
    (out / "device_step.json").write_text(json.dumps(result, indent=2))
    (out / "device_step.md").write_text(table(rows) + "\n")
    plot(rows, out / "device_step.png")
    print(table(rows))
    if "int8_quality" in result:
        print(json.dumps(result["int8_quality"], indent=1))
    return 0 if all("error" not in r["backend_run"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

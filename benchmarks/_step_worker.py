"""Child process of device_step: train one bundle (or its eager reference) and report JSON.

Run in its own process so that the peak RSS is that of a training process alone. The ORT path
imports no torch, as on a device.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

import numpy as np


def peak_rss_mb() -> float:
    """This process's RSS high-water mark. Not ru_maxrss: Linux carries that across fork+exec, so a
    child would report its (large) parent's peak. VmHWM belongs to the new address space."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _batch(batch: int, seq: int, num_labels: int):
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 2000, size=(batch, seq), dtype=np.int64)
    return ids, np.ones((batch, seq), dtype=np.int64), (np.arange(batch) % num_labels).astype(np.int64)


def _session(bundle: str, eager: bool, threads: int):
    from fedhft.manifest import load_manifest

    manifest = load_manifest(bundle)
    if eager:
        import torch

        from bundle_runtime import EagerSession
        from export import reference_model

        torch.set_num_threads(threads)
        return EagerSession(reference_model(manifest), manifest), manifest
    from bundle_runtime import open_session

    return open_session(bundle, threads=threads), manifest


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--bundle", required=True)
    p.add_argument("--eager", action="store_true")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    session, manifest = _session(args.bundle, args.eager, args.threads)
    load_s = time.perf_counter() - t0
    plan = manifest.plan
    batch = _batch(plan.batch_size, plan.max_seq_len, manifest.dims.num_labels)
    from fedhft.layout import full_mask, init_trainable

    session.set_state(init_trainable(plan, manifest.dims, 0))
    session.begin_round(full_mask(plan, manifest.dims), 1e-3)
    times, cpu_times, losses = [], [], []
    for step in range(args.warmup + args.steps):
        t, c = time.perf_counter(), time.process_time()
        losses.append(session.train_step(*batch))
        if step >= args.warmup:
            times.append(time.perf_counter() - t)
            cpu_times.append(time.process_time() - c)
    print(
        json.dumps(
            {
                # CPU time is robust to other load on the machine; with --threads 1 it equals wall time when idle.
                "load_s": load_s,
                "median_step_ms": 1000 * statistics.median(times),
                "median_step_cpu_ms": 1000 * statistics.median(cpu_times),
                "batch": plan.batch_size,
                "seq": plan.max_seq_len,
                "peak_rss_mb": peak_rss_mb(),
                "first_loss": losses[0],
                "last_loss": losses[-1],
                "torch_imported": "torch" in sys.modules,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

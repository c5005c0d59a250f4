"""Communication benchmark: bytes one client uploads per round, per tier and update encoding,
measured on REAL encoded payloads (``fedhft.protocol.encode(Update(...))``: envelope + JSON header
+ safetensors body), against FedAvg-LoRA's fp32 upload.

    fedhft bench comm [--quick] [--out benchmarks/results/comm] [--tiers all|a,b]

Rows: each catalog tier's plan on all-MiniLM-L6-v2 dims (6 layers, hidden 384, FFN 1536, 2 labels).
Columns: the tier's full adapter update (every B row, as FedAvg-style methods send) in fp32, its
masked-rows update (FedHFT: only the tier's mask_density share of each B's rows) in fp32, fp16
and int8, and the ratio of the smallest to FedAvg-LoRA fp32, where FedAvg-LoRA = every client
trains the cheapest tier's plan with a full mask. Updates are random normal tensors of the right
shapes (bytes do not depend on values except int8 scales, one per row). ``--quick`` uses the same
arithmetic (it is cheap); it exists so CI can run every benchmark the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ENCODINGS = ("fp32", "fp16", "int8")
MINILM = (6, 384, 1536)


def payload_bytes(plan, dims, mask, encoding: str, seed: int = 0) -> int:
    """Bytes of the Update message a device publishes for this plan, mask and encoding."""
    from fedhft.layout import gather_update, init_trainable
    from fedhft.protocol import Update, encode

    start = init_trainable(plan, dims, seed)
    rng = np.random.default_rng(seed)
    trained = {k: v + rng.standard_normal(v.shape).astype(np.float32) * 1e-3 for k, v in start.items()}
    update = gather_update(plan, dims, start, trained, mask)
    metrics = {"loss_last": 0.5, "val_acc_after": 0.8, "peak_rss_mb": 300.0, "step_time_median_s": 0.2}
    msg = Update("fleet", "dev-000", 3, "r3-dev-000-0123456789", 128, metrics, encoding, update)
    return len(encode(msg))


def _masks(plan, dims, seed: int = 0):
    from fedhft.layout import full_mask, mask_from_rows, mask_layout, rows_per_module

    rng = np.random.default_rng(seed)
    rows = {
        s.b_name: rng.choice(s.rows, size=rows_per_module(plan, s.rows), replace=False) for s in mask_layout(plan, dims)
    }
    return full_mask(plan, dims), mask_from_rows(plan, dims, rows)


def run(tiers: list[str], num_labels: int = 2) -> list[dict]:
    from devices import load_catalog
    from fedhft.layout import ModelDims

    catalog = load_catalog()
    dims = ModelDims(*MINILM, num_labels)
    cheapest = min((catalog[t].plan for t in catalog), key=lambda p: (sum(p.ranks), p.depth, p.mask_density))
    fedavg = payload_bytes(cheapest, dims, _masks(cheapest, dims)[0], "fp32")
    rows = []
    for tier in tiers:
        plan = catalog[tier].plan
        full, masked = _masks(plan, dims)
        row = {
            "tier": tier,
            "depth": plan.depth,
            "ranks": list(plan.ranks),
            "mask_density": plan.mask_density,
            "full_fp32": payload_bytes(plan, dims, full, "fp32"),
            "fedavg_lora_fp32": fedavg,
        }
        for enc in ENCODINGS:
            row[f"masked_{enc}"] = payload_bytes(plan, dims, masked, enc)
        row["best_vs_fedavg"] = round(row["masked_int8"] / fedavg, 3)
        row["best_vs_full_fp32"] = round(row["masked_int8"] / row["full_fp32"], 3)
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| tier | depth | ranks | density | full fp32 | masked fp32 | masked fp16 | masked int8 | "
        "int8 masked / full fp32 | int8 masked / FedAvg-LoRA fp32 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['tier']} | {r['depth']} | {r['ranks']} | {r['mask_density']} | {r['full_fp32']:,} | "
            f"{r['masked_fp32']:,} | {r['masked_fp16']:,} | {r['masked_int8']:,} | {r['best_vs_full_fp32']} | "
            f"{r['best_vs_fedavg']} |"
        )
    if rows:
        lines.append(
            f"\nFedAvg-LoRA fp32 (cheapest tier's plan, full mask): {rows[0]['fedavg_lora_fp32']:,} bytes "
            "per client per round."
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ["full_fp32", "masked_fp32", "masked_fp16", "masked_int8"]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for i, c in enumerate(cols):
        ax.bar(x + (i - 1.5) * 0.2, [r[c] / 1e3 for r in rows], 0.2, label=c.replace("_", " "))
    if rows:
        ax.axhline(rows[0]["fedavg_lora_fp32"] / 1e3, color="k", ls="--", label="FedAvg-LoRA fp32")
    ax.set_xticks(x, [r["tier"] for r in rows], rotation=15), ax.set_ylabel("KB uploaded / client / round")
    ax.legend(fontsize=7), fig.tight_layout(), fig.savefig(path, dpi=110), plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fedhft bench comm", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CI mode (same arithmetic; always fast)")
    p.add_argument("--out", default="benchmarks/results/comm", help="output folder (comm.json, comm.md, comm.png)")
    p.add_argument("--tiers", default="all", help="all or a comma list of catalog tiers")
    args = p.parse_args(argv)
    from devices import load_catalog

    tiers = list(load_catalog()) if args.tiers == "all" else args.tiers.split(",")
    rows = run(tiers)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"rows": rows, "quick": args.quick, "command": "fedhft bench comm " + " ".join(argv or [])}
    (out / "comm.json").write_text(json.dumps(doc, indent=2))
    md = table(rows)
    (out / "comm.md").write_text(md + "\n")
    plot(rows, out / "comm.png")
    print(md)
    print(f"wrote {out / 'comm.json'}, {out / 'comm.md'}, {out / 'comm.png'}", file=sys.stderr)
    from simulate import update_results_md

    update_results_md(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Personalization benchmark: Amazon multi-domain reviews, one domain per group of clients (a real
cluster structure), FedHFT's clustering as a REAL federated run (``run_simulation``).

    fedhft bench personalization [--quick] [--out benchmarks/results/personalization] [--seeds 0] [key=value ...]

Reported: the adjusted Rand index (ARI) between the server's clusters (argmax of each client's
soft membership, read from the server's committed strategy state) and the clients' domains; and,
per domain, the accuracy of the personalized model (the membership-weighted mixture of the cluster
states a client is given) vs the global model, on that domain's held-out reviews, next to a
FedAvg-LoRA run on the same split.

Sizing: full = MiniLM, 8 clients (2 per domain), 6 rounds, 2 warm-up rounds, 4 clusters, seq 64,
1,600 training examples, 400 global and 100-per-domain test examples, torch backend (~15 min on 2 cores); ``--quick`` =
the tiny model, 4 clients (one per domain), 3 rounds, 2 clusters.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from simulate import AMAZON_DOMAINS

COMMON = {
    "dataset": "amazon",
    "partition": "natural",
    "tiers": ["android-mid", "rpi5", "jetson-orin-nano"],
    "backend": "torch",
    "memory_budget": "off",
    "battery": None,
    "progress": False,
}
FULL = {
    "model": "minilm",
    "clients": 8,
    "rounds": 6,
    "warmup_rounds": 2,
    "local_steps": 10,
    "max_seq_len": 64,
    "train_size": 1600,
    "test_size": 400,
    "lr": 3e-3,
    "strategy_options": {"num_clusters": 4},
}
QUICK = {
    "model": "tiny",
    "clients": 4,
    "rounds": 3,
    "warmup_rounds": 1,
    "local_steps": 3,
    "max_seq_len": 16,
    "train_size": 160,
    "test_size": 60,
    "lr": 2e-2,
    "strategy_options": {"num_clusters": 2},
    "join_timeout_s": 120,
}
TEST_PER_DOMAIN = {"full": 100, "quick": 30}


def _cfg(sizing: dict, strategy: str, seed: int, out: Path, overrides: list[str]):
    from fedhft.config import load_config
    from simulate import SimConfig

    base = {**COMMON, **sizing, "strategy": strategy, "seed": seed, "out": str(out)}
    if strategy != "fedhft":
        base.pop("strategy_options")
    items = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in base.items()]
    return load_config(SimConfig, None, items + list(overrides))


def domain_tests(cfg, per_domain: int) -> dict:
    """Encoded held-out reviews of each domain (same tokenization as the devices)."""
    from export import resolve_model
    from simulate import encode_examples, load_dataset, subsample

    ds = load_dataset("amazon", cfg.data_root, cfg.seed)
    tok = resolve_model(cfg.model).tokenizer_dir / "tokenizer.json"
    return {
        d: encode_examples(
            tok, subsample([e for e in ds.test if e.key == d], per_domain, cfg.seed, 20 + i), cfg.max_seq_len
        )
        for i, d in enumerate(AMAZON_DOMAINS)
    }


def analyse(run_dir: Path, model: str, tests: dict) -> dict:
    """ARI of clusters vs domains; per-domain personalized vs global accuracy at the last round."""
    from sklearn.metrics import adjusted_rand_score

    from simulate import Evaluator, cluster_states, global_state, memberships, mix

    res = json.loads((run_dir / "results.json").read_text())
    groups = res["data"]["client_groups"]
    last = res["rounds"][-1]["round"]
    ev = Evaluator(model)
    state_dir = run_dir / "server"
    glob = global_state(state_dir, last, ev.num_layers)
    out = {"final_global_accuracy": res["final_accuracy"], "global_by_domain": {}, "personalized_by_domain": {}}
    for d, data in tests.items():
        out["global_by_domain"][d] = ev.accuracy(glob, data)[0]
    members, clusters = memberships(state_dir, last), cluster_states(state_dir, last, ev.num_layers)
    if members and clusters:
        ids = sorted(set(members) & set(groups))
        out["ari"] = float(adjusted_rand_score([groups[c] for c in ids], [int(np.argmax(members[c])) for c in ids]))
        out["clusters"] = {c: int(np.argmax(members[c])) for c in ids}
        per = {}
        for c in ids:  # each client's personalized model on its own domain
            per.setdefault(groups[c], []).append(ev.accuracy(mix(clusters, members[c]), tests[groups[c]])[0])
        out["personalized_by_domain"] = {d: float(np.mean(v)) for d, v in per.items()}
    return out


def table(rows: list[dict]) -> str:
    f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [
        "| strategy | seed | ARI (clusters vs domains) | domain | global accuracy | personalized accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        for d in AMAZON_DOMAINS:
            lines.append(
                f"| {r['strategy']} | {r['seed']} | {f(r.get('ari'))} | {d} | "
                f"{f(r['global_by_domain'].get(d))} | {f(r['personalized_by_domain'].get(d))} |"
            )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(AMAZON_DOMAINS))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    bars = [
        (f"{r['strategy']} s{r['seed']} {kind}", [r[f"{kind}_by_domain"].get(d, np.nan) for d in AMAZON_DOMAINS])
        for r in rows
        for kind in ("global", "personalized")
        if r[f"{kind}_by_domain"]
    ]
    width = 0.8 / max(1, len(bars))
    for i, (label, vals) in enumerate(bars):
        ax.bar(x + (i - (len(bars) - 1) / 2) * width, vals, width, label=label)
    ax.set_xticks(x, AMAZON_DOMAINS), ax.set_ylabel("test accuracy on the domain"), ax.legend(fontsize=7)
    fig.tight_layout(), fig.savefig(path, dpi=110), plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fedhft bench personalization", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CI mode: tiny model, 4 clients, 3 rounds")
    p.add_argument("--out", default="benchmarks/results/personalization")
    p.add_argument("--seeds", default="0")
    p.add_argument("overrides", nargs="*", help="SimConfig key=value for every run (e.g. data_root=...)")
    args = p.parse_args(argv)
    from simulate import run_simulation

    sizing, mode = (QUICK, "quick") if args.quick else (FULL, "full")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0, rows = time.time(), []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for strategy in ("fedhft", "fedavg-lora"):
            cfg = _cfg(sizing, strategy, seed, out / "runs" / f"{strategy}-s{seed}", args.overrides)
            print(f"{strategy} seed {seed} ...", file=sys.stderr, flush=True)
            shutil.rmtree(cfg.run_dir(), ignore_errors=True)  # this benchmark's own scratch run dir
            res = run_simulation(cfg, say=lambda m: None)
            row = {
                "strategy": strategy,
                "seed": seed,
                "ok": res.ok,
                "status": res.status.value,
                "error": res.error,
                "wall_s": res.wall_s,
                "accuracy_per_round": res.accuracies,
                "run_dir": str(res.run_dir),
            }
            if res.rounds:
                row.update(analyse(res.run_dir, cfg.model, domain_tests(cfg, TEST_PER_DOMAIN[mode])))
            print(f"{strategy} seed {seed}: {row}", file=sys.stderr, flush=True)
            rows.append(row)
    md = table([r for r in rows if "global_by_domain" in r])
    plot([r for r in rows if "global_by_domain" in r], out / "personalization.png")
    doc = {
        "quick": args.quick,
        "sizing": {**COMMON, **sizing},
        "rows": rows,
        "wall_s": time.time() - t0,
        "command": "fedhft bench personalization " + " ".join(argv or []),
    }
    (out / "personalization.json").write_text(json.dumps(doc, indent=2, default=str))
    (out / "personalization.md").write_text(md + "\n")
    print(md)
    from simulate import update_results_md

    update_results_md(out)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Who FedHFT put in which cluster: per round, the clusters in use, their sizes and their members' labels.

    fedhft bench clusters RUN_DIR [--json OUT.json]

RUN_DIR is a finished FedHFT run (``fedhft simulate strategy=fedhft out=RUN_DIR``, or a sweep run kept under
``benchmarks/results/sweep/runs/``). It reads the strategy state the server stored after every round
(``server/states/strategy-rNNNNN.safetensors``: each client's soft membership) and each client's training
data (``data/<client>.jsonl``), and asks whether the clusters follow the clients' label mix: a cluster's
label share is the mean over its (hard) members of their training label shares. A table per round, and JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

__all__ = [
    "ClusterRound",
    "cluster_rounds",
    "concept_cluster_table",
    "group_agreement",
    "label_shares",
    "main",
    "summarize_memberships",
]


class ClusterRound(dict):
    """One round: {"round", "clusters_used", "clusters": [{"cluster", "members", "label_share", ...}],
    "majority_agreement"} (a dict, so it is its own JSON)."""


def label_shares(labels_per_client: list[np.ndarray], num_labels: int) -> np.ndarray:
    """(clients, num_labels): each client's share of each label among its training examples."""
    out = np.zeros((len(labels_per_client), num_labels))
    for i, labels in enumerate(labels_per_client):
        counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_labels)[:num_labels]
        out[i] = counts / max(counts.sum(), 1)
    return out


def summarize_memberships(memberships: np.ndarray, shares: np.ndarray) -> dict:
    """Clusters in use (some client's largest membership), each one's hard members and their mean label
    share, and ``majority_agreement``: the share of clients whose majority label is their cluster's majority
    label (1.0 when the clusters split the clients exactly by majority label; with one cluster, the share of
    clients whose majority is the fleet's)."""
    memberships = np.asarray(memberships, dtype=np.float64)
    if memberships.shape[0] != shares.shape[0]:
        raise ValueError(f"{memberships.shape[0]} membership rows for {shares.shape[0]} clients")
    weight = memberships.sum(axis=0)
    hard = np.argmax(memberships, axis=1)  # equal memberships (warm-up) -> cluster 0: one model in use
    used = np.unique(hard)
    majority = np.argmax(shares, axis=1)
    clusters, agree = [], 0
    for c in used:
        members = np.flatnonzero(hard == c)
        mix = shares[members].mean(axis=0) if members.size else np.zeros(shares.shape[1])
        agree += int(np.sum(majority[members] == np.argmax(mix))) if members.size else 0
        clusters.append(
            {
                "cluster": int(c),
                "members": int(members.size),
                "soft_weight": round(float(weight[c]), 3),
                "label_share": [round(float(x), 3) for x in mix],
            }
        )
    return {"clusters_used": int(used.size), "clusters": clusters, "majority_agreement": agree / len(shares)}


def group_agreement(clusters, groups) -> int:
    """How many clients sit in the cluster matched to their group, under the one-to-one matching of
    clusters to groups that matches the most (a client in an unmatched cluster counts as wrong)."""
    from scipy.optimize import linear_sum_assignment

    clusters, groups = np.asarray(clusters, np.int64), np.asarray(groups, np.int64)
    if clusters.shape != groups.shape:
        raise ValueError(f"{clusters.size} clusters for {groups.size} groups: one of each per client")
    if not clusters.size:
        return 0
    counts = np.zeros((clusters.max() + 1, groups.max() + 1), np.int64)
    np.add.at(counts, (clusters, groups), 1)
    rows, cols = linear_sum_assignment(-counts)
    return int(counts[rows, cols].sum())


def concept_cluster_table(runs: list[dict]) -> str:
    """Per logged sweep run whose clients carry both a final cluster and a concept group: whether the
    clusters are the groups (markdown; empty when no run has both)."""
    lines = []
    for r in runs:
        clients = [c for c in (r.get("clients") or {}).values() if "cluster" in c and "group" in c]
        if r.get("kind") != "eval" or not clients:
            continue
        clusters, groups = [c["cluster"] for c in clients], [c["group"] for c in clients]
        matched = group_agreement(clusters, groups)
        lines.append(
            f"| {r['setting']} | {r['strategy']} | {r['seed']} | {len(set(clusters))} | {len(set(groups))} "
            f"| {matched}/{len(clients)} |"
        )
    if not lines:
        return ""
    head = [
        "FedHFT's clusters against the concept groups (each client's largest final membership; "
        "matched: clients in the cluster matched one-to-one to their group):",
        "",
        "| setting | strategy | seed | clusters used | groups | matched |",
        "|---|---|---|---|---|---|",
    ]
    return "\n".join(head + lines)


def _read_labels(run_dir: Path, clients: list[str]) -> list[np.ndarray]:
    out = []
    for client in clients:
        path = run_dir / "data" / f"{client}.jsonl"
        if not path.is_file():
            raise SystemExit(f"error: {path} is missing: RUN_DIR must be a finished run with its data/ folder")
        out.append(np.array([json.loads(x)["label"] for x in path.read_text().splitlines() if x.strip()]))
    return out


def cluster_rounds(run_dir: Path) -> list[ClusterRound]:
    """Every stored round of a FedHFT run directory, summarized (see summarize_memberships)."""
    from safetensors import safe_open

    states = sorted((run_dir / "server" / "states").glob("strategy-r*.safetensors"))
    if not states:
        raise SystemExit(f"error: no server/states/strategy-r*.safetensors under {run_dir}: not a FedHFT run dir")
    rounds, shares = [], None
    for path in states:
        with safe_open(str(path), "np") as f:
            meta = json.loads((f.metadata() or {}).get("fedhft_meta", "{}"))
            if meta.get("strategy") != "fedhft":
                raise SystemExit(f"error: {path} is a {meta.get('strategy')!r} state; this reads FedHFT runs")
            memberships = f.get_tensor("clients/membership").reshape(len(meta["clients"]), -1)
        if shares is None:
            shares = label_shares(_read_labels(run_dir, meta["clients"]), int(meta["dims"]["num_labels"]))
        rounds.append(
            ClusterRound(round=int(path.stem.rsplit("-r", 1)[1]), **summarize_memberships(memberships, shares))
        )
    return rounds


def _table(rounds: list[ClusterRound]) -> str:
    lines = ["| round | clusters | members (label share) | majority agreement |", "|---|---|---|---|"]
    for r in rounds:
        parts = [f"{c['members']} ({'/'.join(f'{x:.2f}' for x in c['label_share'])})" for c in r["clusters"]]
        lines.append(f"| {r['round']} | {r['clusters_used']} | {'; '.join(parts)} | {r['majority_agreement']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fedhft bench clusters", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="a finished FedHFT run directory")
    p.add_argument("--json", type=Path, default=None, help="also write the rounds here")
    args = p.parse_args(argv)
    rounds = cluster_rounds(args.run_dir)
    print(_table(rounds))
    if args.json:
        args.json.write_text(json.dumps(rounds, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

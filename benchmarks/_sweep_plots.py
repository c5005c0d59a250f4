"""The sweep's plots: per setting, the clients' final personalized accuracy per strategy (box plots),
and accuracy against the round and against the megabytes sent."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_clients(runs: list[dict], out: Path) -> list[str]:
    """Per setting, a box per strategy of the clients' final personalized accuracy (all seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    evals = [r for r in runs if r["kind"] == "eval"]
    for setting in dict.fromkeys(r["setting"] for r in evals):
        names = list(dict.fromkeys(r["strategy"] for r in evals if r["setting"] == setting))
        data = [
            [
                c["val_acc_after"]
                for r in evals
                if r["setting"] == setting and r["strategy"] == s
                for c in r["clients"].values()
                if "val_acc_after" in c
            ]
            for s in names
        ]
        majority = [
            c["val_majority_acc"]
            for r in evals
            if r["setting"] == setting
            for c in r["clients"].values()
            if "val_majority_acc" in c
        ]
        fig, ax = plt.subplots(figsize=(1.1 * len(names) + 2.5, 3.8))
        ax.boxplot(data + [majority], showmeans=True)
        ax.set_xticks(range(1, len(names) + 2), names + ["majority label"], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("client's final accuracy on its own shard"), ax.set_title(f"{setting}: per-client distribution")
        ax.grid(alpha=0.3, axis="y")
        name = f"clients_{setting}.png"
        fig.tight_layout(), fig.savefig(out / name, dpi=110), plt.close(fig)
        made.append(name)
    return made


def curves(runs: list[dict], setting: str) -> dict[str, dict[str, np.ndarray]]:
    """strategy -> per-round means over seeds of the reported runs: round, global and personalized
    (after) accuracy, and the cumulative MB both ways (rounds every seed reached only)."""
    out = {}
    evals = [r for r in runs if r["kind"] == "eval" and r["setting"] == setting and r.get("rounds")]
    for strategy in dict.fromkeys(r["strategy"] for r in evals):
        mine = [r["rounds"] for r in evals if r["strategy"] == strategy]
        n = min(len(x) for x in mine)

        def per_round(get, mine=mine, n=n):
            return np.array([[get(x[i]) if get(x[i]) is not None else np.nan for i in range(n)] for x in mine])

        mb = per_round(lambda ln: ((ln.get("bytes_up") or 0) + (ln.get("bytes_down") or 0)) / 1e6).cumsum(axis=1)
        out[strategy] = {
            "round": np.arange(n),
            "global": np.nanmean(per_round(lambda ln: ln.get("accuracy")), 0),
            "personalized": np.nanmean(per_round(lambda ln: (ln.get("personalized") or {}).get("acc_after")), 0),
            "mb": mb.mean(axis=0),
        }
    return out


def plot_curves(runs: list[dict], out: Path) -> list[str]:
    """Per setting: personalized and global accuracy against the round and against the MB sent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    for setting in dict.fromkeys(r["setting"] for r in runs if r["kind"] == "eval"):
        data = curves(runs, setting)
        fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharey="row")
        for strategy, c in data.items():
            for row, metric in enumerate(("personalized", "global")):
                axes[row][0].plot(c["round"], c[metric], marker=".", label=strategy)
                axes[row][1].plot(c["mb"], c[metric], marker=".", label=strategy)
        for row, metric in enumerate(("personalized (after local training)", "global (balanced test set)")):
            axes[row][0].set_ylabel(f"{metric} accuracy")
            for col, xlabel in enumerate(("round", "cumulative MB, both ways")):
                axes[row][col].set_xlabel(xlabel), axes[row][col].grid(alpha=0.3)
        axes[0][0].legend(fontsize=7), fig.suptitle(f"{setting}: mean over seeds")
        name = f"curves_{setting}.png"
        fig.tight_layout(), fig.savefig(out / name, dpi=100), plt.close(fig)
        made.append(name)
    return made

"""Outputs of a run: results.json, rounds.jsonl, clients.jsonl, report.md and PNG plots."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np

from fedhft.config import to_dict


#: The budget a device reports under memory_budget=off (SimConfig.memory_budget_mb): no budget.
OFF_BUDGET_MB = 1e6


def tier_stats(records: list[dict]) -> dict[str, dict]:
    """Per tier: clients, outcomes, peak RSS (max) vs budget, median step time, upload bytes."""
    out: dict[str, dict] = {}
    for r in records:
        t = out.setdefault(
            r["tier"],
            {
                "backend": r["backend"],
                "tasks": 0,
                "stored": 0,
                "outcomes": {},
                "peak_rss_mb": [],
                "budget_mb": None,
                "step_s": [],
                "bytes_up": [],
            },
        )
        t["tasks"] += 1
        m = r.get("metrics") or {}
        if r["status"] == "stored":
            t["stored"] += 1
            t["bytes_up"].append(r["bytes"] or 0)
        elif r["status"] == "outcome":
            t["outcomes"][r["outcome"]] = t["outcomes"].get(r["outcome"], 0) + 1
        else:
            t["outcomes"][r["status"]] = t["outcomes"].get(r["status"], 0) + 1
        for key, dst in (("peak_rss_mb", "peak_rss_mb"), ("step_time_median_s", "step_s")):
            if key in m:
                t[dst].append(float(m[key]))
        t["budget_mb"] = m.get("memory_budget_mb", m.get("budget_mb", t["budget_mb"]))
    for t in out.values():
        if t["budget_mb"] is not None and float(t["budget_mb"]) >= OFF_BUDGET_MB:
            t["budget_mb"] = None  # off: no line at a million MB in the plot, "-" in the table
        t["peak_rss_mb"] = max(t["peak_rss_mb"]) if t["peak_rss_mb"] else None
        t["step_s"] = statistics.median(t["step_s"]) if t["step_s"] else None
        t["bytes_up"] = int(statistics.mean(t["bytes_up"])) if t["bytes_up"] else None
    return dict(sorted(out.items()))


#: The report title's words for each engine (SimConfig.engine).
ENGINE_TITLE = {"mqtt": "MQTT engine: broker, server and edge processes", "inprocess": "in-process engine"}


def _fmt(v, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def _rounds_table(rounds: list[dict]) -> list[str]:
    lines = [
        "| round | accuracy | stored/selected | bytes up | bytes down | round s | aggregation s | "
        "rejections | outcomes | clusters |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rounds:
        lines.append(
            f"| {r['round']} | {_fmt(r.get('accuracy'))} | {r.get('stored')}/{r.get('selected')} | "
            f"{r.get('bytes_up', 0):,} | {r.get('bytes_down', 0):,} | {_fmt(r.get('round_s'), '.1f')} | "
            f"{_fmt(r.get('aggregation_s'), '.3f')} | {r.get('rejections') or '-'} | "
            f"{r.get('outcomes') or '-'} | {r.get('cluster_sizes') or '-'} |"
        )
    return lines


#: The personalized scores (server metrics line ``personalized``) shown per round.
PERSONALIZED_COLUMNS = (
    ("acc_before", "acc before"),
    ("acc_after", "acc after"),
    ("bal_acc_after", "balanced after"),
    ("worst10_acc_after", "worst 10% after"),
    ("majority_acc", "majority label"),
)


def headline(rounds: list[dict]) -> dict[str, dict[str, float | None]]:
    """Final and best-over-rounds of the global accuracy and of each personalized score."""
    series = {"global_accuracy": [r.get("accuracy") for r in rounds]}
    for key, _ in PERSONALIZED_COLUMNS:
        series[f"personalized_{key}"] = [(r.get("personalized") or {}).get(key) for r in rounds]
    out = {}
    for name, values in series.items():
        have = [v for v in values if v is not None]
        out[name] = {"final": values[-1] if values else None, "best": max(have) if have else None}
    return out


def _personalized_table(rounds: list[dict]) -> list[str]:
    """Each client's own model on its own local shard (shard-size-weighted), per round."""
    if not any(r.get("personalized") for r in rounds):
        return []
    head = " | ".join(title for _, title in PERSONALIZED_COLUMNS)
    lines = [
        "## Personalized accuracy (each client's model on its own local shard)",
        "",
        "Means weighted by shard size; before/after the round's local training; worst 10% = mean of the "
        "worst tenth of clients; majority label = always predicting the client's most frequent training "
        "label. A personalization gain counts only above the majority label (and a local-only run).",
        "",
        f"| round | clients | {head} |",
        "|---" * (len(PERSONALIZED_COLUMNS) + 2) + "|",
    ]
    for r in rounds:
        p = r.get("personalized") or {}
        lines.append(
            f"| {r['round']} | {p.get('clients', '-')} | "
            + " | ".join(_fmt(p.get(key)) for key, _ in PERSONALIZED_COLUMNS)
            + " |"
        )
    return lines + [""]


def _tiers_table(stats: dict[str, dict]) -> list[str]:
    lines = [
        "| tier | backend | tasks | stored | other outcomes | peak RSS MB | enforced budget MB | "
        "catalog budget MB | median step s | mean update bytes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for tier, t in stats.items():
        lines.append(
            f"| {tier} | {t['backend']} | {t['tasks']} | {t['stored']} | {t['outcomes'] or '-'} | "
            f"{_fmt(t['peak_rss_mb'], '.0f')} | {_fmt(t['budget_mb'], '.0f')} | "
            f"{_fmt(t.get('catalog_budget_mb'), '.0f')} | {_fmt(t['step_s'], '.3f')} | "
            f"{_fmt(t['bytes_up'], ',')} |"
        )
    return lines


def _status_text(result) -> str:
    verdict = result.verdict
    if verdict is None:  # a result built by hand (tests, old callers)
        return result.status.value if result.ok else f"{result.status.value}: {result.error}"
    text = verdict.headline()
    if result.error and result.error not in text:
        text += f" ({' '.join(result.error.split())[:500]})"
    return text


def _failures_section(verdict, engine: str = "mqtt") -> list[str]:
    """Which clients did not store an update, in which rounds, and why (empty when none failed)."""
    if verdict is None or not verdict.failures:
        return []
    lines = [
        "## Failures",
        "",
        f"{len(verdict.failures)} of {verdict.client_rounds} selected client-rounds stored no update.",
        "",
        "| client | tier | backend | rounds failed | reasons |",
        "|---|---|---|---|---|",
    ]
    for row in verdict.failed_clients():
        reasons = ", ".join(f"{r} x{n}" for r, n in row["reasons"].items())
        lines.append(
            f"| {row['client']} | {row['tier'] or '?'} | {row['backend'] or '?'} | "
            f"{len(row['rounds'])} ({', '.join(map(str, row['rounds']))}) | {reasons} |"
        )
    lines += ["", "First message of each reason:", ""]
    for reason, f in verdict.examples().items():
        msg = " ".join(f.detail.split())[:500] or "(no message)"
        lines.append(f"- `{reason}` ({f.client}, round {f.round}): {msg}")
    if engine == "inprocess":  # no processes, no logs: the messages above are the devices' own
        return lines + ["", "Each client's records: `clients.jsonl` in this folder.", ""]
    return lines + ["", "Logs: `logs/server.log` and `logs/<client>.log` in this folder.", ""]


def write_report(path: Path, cfg, result, summary: dict, stats: dict, plots: list[str], notes: list[str]) -> None:
    lines = [f"# fedhft simulation: {cfg.strategy} on {summary['dataset']} ({ENGINE_TITLE[cfg.engine]})", ""]
    lines += [
        f"- status: **{_status_text(result)}**",
        f"- engine: {cfg.engine}",
        f"- wall time: {result.wall_s:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in result.phases.items())})",
        f"- final global accuracy: {_fmt(result.final_accuracy)} on {summary['test_examples']} held-out examples",
        f"- data: {summary['train_examples']} training examples over {cfg.clients} clients "
        f"({summary['partition']}{f', alpha {cfg.alpha}' if summary['partition'] == 'dirichlet' else ''})",
        "",
    ]
    lines += _failures_section(result.verdict, cfg.engine)
    best = headline(result.rounds)
    lines += [
        f"- global accuracy final {_fmt(best['global_accuracy']['final'])}, best over rounds "
        f"{_fmt(best['global_accuracy']['best'])}; personalized accuracy after local training final "
        f"{_fmt(best['personalized_acc_after']['final'])}, best {_fmt(best['personalized_acc_after']['best'])}",
        "",
    ]
    lines += ["## Rounds", ""] + _rounds_table(result.rounds) + [""]
    lines += _personalized_table(result.rounds)
    rss = (
        "Peak RSS is the whole edge process (Python, its imports, the runtime); the enforced budget is "
        f"`memory_budget={cfg.memory_budget}` applied to the catalog's."
        if cfg.engine != "inprocess"
        else "engine=inprocess: every client shares this one process, so peak RSS is that process's, not a "
        "device's, and no memory budget is enforced."
    )
    lines += ["## Tiers (peak RSS vs budget, step time)", "", rss, ""] + _tiers_table(stats) + [""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    lines += ["## Config", "", "```yaml"]
    import yaml

    lines += [yaml.safe_dump(to_dict(cfg), sort_keys=False).rstrip(), "```", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def _integer_ticks(axis) -> None:
    """Rounds and client counts are whole numbers: no 0.5 ticks on a 2-round run."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _plot_rounds(run_dir: Path, rounds: list[dict], plt) -> list[str]:
    made = []
    xs = [r["round"] for r in rounds if r.get("accuracy") is not None]
    ys = [r["accuracy"] for r in rounds if r.get("accuracy") is not None]
    if not xs:
        return made
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(xs, ys, marker="o")
    for r in rounds:  # a round in which some selected client stored nothing says so at its point
        if r.get("accuracy") is not None and r.get("stored") is not None and r["stored"] < r.get("selected", 0):
            ax.annotate(
                f"stored {r['stored']}/{r['selected']}",
                (r["round"], r["accuracy"]),
                fontsize=7,
                color="tab:red",
                textcoords="offset points",
                xytext=(0, -12),
                ha="center",
            )
    ax.set_xlabel("round"), ax.set_ylabel("global test accuracy"), ax.grid(alpha=0.3), ax.margins(x=0.08, y=0.15)
    _integer_ticks(ax.xaxis)
    fig.tight_layout(), fig.savefig(run_dir / "accuracy_vs_round.png", dpi=110), plt.close(fig)
    made.append("accuracy_vs_round.png")
    cum = np.cumsum([(r.get("bytes_up") or 0) + (r.get("bytes_down") or 0) for r in rounds]) / 1e6
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([cum[i] for i, r in enumerate(rounds) if r.get("accuracy") is not None], ys, marker="o")
    ax.set_xlabel("cumulative MB (updates up + tasks down)"), ax.set_ylabel("global test accuracy"), ax.grid(alpha=0.3)
    fig.tight_layout(), fig.savefig(run_dir / "accuracy_vs_bytes.png", dpi=110), plt.close(fig)
    made.append("accuracy_vs_bytes.png")
    return made


def _mark_missing(ax, names: list[str], values: list, stats: dict[str, dict]) -> None:
    """A tier with no measurement gets a hatched bar across the axis and why, not an empty slot."""
    top = max([v for v in values if v] or [1.0])
    for i, (n, v) in enumerate(zip(names, values)):
        if v:
            continue
        ax.bar(i, top, color="none", edgecolor="tab:red", hatch="//", linewidth=0)
        failed = stats[n]["tasks"] - stats[n]["stored"]
        text = f"failed: {failed}/{stats[n]['tasks']}" if failed else "no data"
        ax.text(
            i,
            top / 2,
            text,
            ha="center",
            va="center",
            rotation=90,
            fontsize=8,
            color="tab:red",
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 1},
        )


FAILURE_COLORS = ("tab:red", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:gray")


def _plot_outcomes(ax, names: list[str], stats: dict[str, dict]) -> None:
    """Client-rounds per tier: stored, then each reason they did not store, stacked."""
    reasons = sorted({k for n in names for k in stats[n]["outcomes"]})
    bottom = np.zeros(len(names))
    stored = np.asarray([stats[n]["stored"] for n in names], float)
    ax.bar(names, stored, color="tab:green", label="stored")
    bottom += stored
    for j, reason in enumerate(reasons):
        vals = np.asarray([stats[n]["outcomes"].get(reason, 0) for n in names], float)
        ax.bar(
            names,
            vals,
            bottom=bottom,
            color=FAILURE_COLORS[j % len(FAILURE_COLORS)],
            hatch="//",
            edgecolor="white",
            label=reason,
        )
        bottom += vals
    for i, n in enumerate(names):
        failed = stats[n]["tasks"] - stats[n]["stored"]
        if failed:
            ax.text(
                i,
                bottom[i],
                f"failed: {failed}/{stats[n]['tasks']}",
                ha="center",
                va="bottom",
                fontsize=8,
                color="tab:red",
                fontweight="bold",
            )
    ax.set_ylim(0, max(bottom.max(), 1) * 1.2)
    ax.set_ylabel("client-rounds"), ax.set_title("updates stored per tier", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0)), ax.tick_params(axis="x", rotation=20)
    _integer_ticks(ax.yaxis)


def _plot_tiers(run_dir: Path, stats: dict[str, dict], plt) -> list[str]:
    if not stats:
        return []
    names = list(stats)
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(14, 3.8))
    steps = [stats[n]["step_s"] for n in names]
    a1.bar(names, [v or 0 for v in steps])
    _mark_missing(a1, names, steps, stats)
    a1.set_ylabel("median step time (s)"), a1.tick_params(axis="x", rotation=20)
    rss = [stats[n]["peak_rss_mb"] for n in names]
    a2.bar(names, [v or 0 for v in rss], label="peak RSS")
    _mark_missing(a2, names, rss, stats)
    budgets = [(i, stats[n]["budget_mb"]) for i, n in enumerate(names) if stats[n]["budget_mb"]]
    for j, (i, mb) in enumerate(budgets):
        a2.hlines(mb, i - 0.4, i + 0.4, colors="red", label="budget" if j == 0 else None)
    a2.set_ylim(0, 1.25 * max([v for v in rss if v] + [mb for _, mb in budgets] + [1.0]))  # room for the legend
    a2.set_ylabel("MB"), a2.legend(fontsize=7), a2.tick_params(axis="x", rotation=20)
    _plot_outcomes(a3, names, stats)
    fig.tight_layout(), fig.savefig(run_dir / "tiers.png", dpi=110), plt.close(fig)
    return ["tiers.png"]


def device_label(cid: str, tiers: dict[str, str] | None, groups: dict[str, str] | None) -> str:
    """``dev-003 (rpi5)``; with a natural data split also the client's data group (``rpi5, books``)."""
    parts = [p for p in ((tiers or {}).get(cid), (groups or {}).get(cid)) if p and p != "mixed"]
    return f"{cid} ({', '.join(parts)})" if parts else cid


def _plot_clusters(
    run_dir: Path,
    members: dict[str, list[float]],
    tiers: dict[str, str] | None,
    groups: dict | None,
    plt,
    last_round: int | None = None,
) -> list[str]:
    if not members:
        return []
    cids = sorted(members)
    mat = np.asarray([members[c] for c in cids])
    fig, ax = plt.subplots(figsize=(3.5 + 0.6 * mat.shape[1], 1.6 + 0.28 * len(cids)))
    im = ax.imshow(mat, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_yticks(range(len(cids)), [device_label(c, tiers, groups) for c in cids], fontsize=7)
    ax.set_xticks(range(mat.shape[1]), [str(k) for k in range(mat.shape[1])])
    ax.set_xlabel("cluster (one global model each)"), ax.set_ylabel("device (tier)")
    after = f" after round {last_round}" if last_round is not None else ""
    ax.set_title(f"cluster membership of each device{after}", fontsize=9)
    fig.colorbar(im, ax=ax, label="membership weight (0..1)")
    fig.tight_layout(), fig.savefig(run_dir / "clusters.png", dpi=110), plt.close(fig)
    return ["clusters.png"]


def make_plots(run_dir: Path, rounds, stats, members, groups, tiers: dict[str, str] | None = None) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    last = rounds[-1]["round"] if rounds else None
    return (
        _plot_rounds(run_dir, rounds, plt)
        + _plot_tiers(run_dir, stats, plt)
        + _plot_clusters(run_dir, members, tiers, groups, plt, last)
    )


def _add_catalog_budgets(stats: dict[str, dict]) -> None:
    """Each tier's ``catalog_budget_mb`` (None for a tier the catalog lacks); nothing without a catalog."""
    try:
        from devices import load_catalog

        catalog = load_catalog()
        for tier, t in stats.items():
            t["catalog_budget_mb"] = catalog[tier].memory_budget_mb if tier in catalog else None
    except (ImportError, ValueError, OSError):
        pass


def _run_notes(cfg, broker_kind: str, eval_error: str | None, mqtt_protocol: str | None) -> list[str]:
    """The report's notes: what the in-process engine or the embedded broker leave out, and a failed evaluation."""
    notes = []
    if cfg.engine == "inprocess":
        notes.append(
            "engine=inprocess: no broker and no device processes; every client trained in this one "
            "process, one after another, with memory budgets off; a round closed when every selected "
            "client had answered (no deadline drops, no redeliveries)"
        )
    if broker_kind == "embedded":
        notes.append(
            f"embedded amqtt broker (server and devices spoke MQTT {mqtt_protocol or '3.1.1'}): no MQTT 5, so "
            "an ACL-refused publish is dropped silently; unacked QoS 1 messages are not redelivered after a "
            "crash; keepalive is not enforced (a stalled device's Last Will never fires). Fine for a "
            "demo; use Mosquitto for reliability runs"
        )
    if eval_error:
        notes.append(f"evaluation failed to start: {eval_error.strip().splitlines()[-1]}")
    return notes


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, default=str) + "\n")


def write_outputs(
    cfg,
    result,
    data,
    tiers: dict,
    backends: dict,
    broker_kind: str,
    eval_error: str | None,
    pids: list[int],
    mqtt_protocol: str | None = None,
    records: list[dict] | None = None,
) -> dict:
    """``records``: the client-round records (``client_rounds`` rows); None = read them from the
    server's SQLite in the run's state dir (the MQTT engine; the in-process engine has none)."""
    from simulate._evaluate import memberships
    from simulate._monitor import client_rounds

    run_dir, state = result.run_dir, result.run_dir / "server"
    if records is None:
        records = client_rounds(state)
    stats = tier_stats(records)
    _add_catalog_budgets(stats)
    last = result.rounds[-1]["round"] if result.rounds else None
    members = memberships(state, last) if last is not None else {}
    plots = make_plots(run_dir, result.rounds, stats, members, data.client_groups, tiers)
    notes = _run_notes(cfg, broker_kind, eval_error, mqtt_protocol)
    summary = data.summary()
    out = {
        "status": result.status.value,
        "ok": result.ok,
        "engine": cfg.engine,
        "error": result.error,
        "failures": result.verdict.to_json() if result.verdict else None,
        "wall_s": result.wall_s,
        "phases": result.phases,
        "final_accuracy": result.final_accuracy,
        "accuracy": result.accuracies,
        "headline": headline(result.rounds),
        "rounds": result.rounds,
        "tiers": stats,
        "tier_of_client": tiers,
        "backend_of_tier": backends,
        "broker": broker_kind,
        "mqtt_protocol": mqtt_protocol,
        "memberships": members,
        "data": summary,
        "config": to_dict(cfg),
        "pids": pids,
        "plots": plots,
    }
    (run_dir / "results.json").write_text(json.dumps(out, indent=2, default=str), encoding="utf-8")
    _write_jsonl(run_dir / "rounds.jsonl", result.rounds)
    _write_jsonl(run_dir / "clients.jsonl", records)
    write_report(run_dir / "report.md", cfg, result, summary, stats, plots, notes)
    return out

"""The run's plots: integer round ticks, failed tiers shown (not empty bars), clusters labelled by tier."""

from __future__ import annotations

import pytest

from simulate import _report

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


class KeepFigures:
    """``plt`` for the plot functions, keeping every figure open so the test can look at it."""

    def __init__(self):
        self.figs = []

    def subplots(self, *args, **kwargs):
        fig, axes = plt.subplots(*args, **kwargs)
        self.figs.append(fig)
        return fig, axes

    def close(self, fig):
        pass


@pytest.fixture
def keep():
    k = KeepFigures()
    yield k
    for fig in k.figs:
        plt.close(fig)


def _texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_round_axis_has_integer_ticks_only(tmp_path, keep):
    rounds = [
        {"round": i, "accuracy": 0.5 + 0.1 * i, "selected": 3, "stored": 3 - i, "bytes_up": 10, "bytes_down": 10}
        for i in range(2)
    ]
    assert _report._plot_rounds(tmp_path, rounds, keep) == ["accuracy_vs_round.png", "accuracy_vs_bytes.png"]
    fig = keep.figs[0]
    fig.canvas.draw()
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    assert "stored 2/3" in _texts(fig)  # round 1 lost a client: the point says so


def test_a_tier_that_never_stored_is_marked_failed(tmp_path, keep):
    stats = {
        "android-mid": {
            "backend": "executorch",
            "tasks": 4,
            "stored": 0,
            "outcomes": {"error": 4},
            "peak_rss_mb": None,
            "budget_mb": None,
            "step_s": None,
            "bytes_up": None,
        },
        "rpi5": {
            "backend": "ort",
            "tasks": 4,
            "stored": 3,
            "outcomes": {"over_budget": 1},
            "peak_rss_mb": 500.0,
            "budget_mb": 640.0,
            "step_s": 0.2,
            "bytes_up": 1000,
        },
    }
    assert _report._plot_tiers(tmp_path, stats, keep) == ["tiers.png"]
    assert (tmp_path / "tiers.png").is_file()
    texts = _texts(keep.figs[0])
    assert texts.count("failed: 4/4") >= 3  # step time, RSS (hatched bars) and the outcomes panel
    assert "failed: 1/4" in texts
    outcomes = keep.figs[0].axes[2]
    assert {t.get_text() for t in outcomes.get_legend().get_texts()} == {"stored", "error", "over_budget"}


def test_no_tier_stats_means_no_tiers_plot(tmp_path, keep):
    assert _report._plot_tiers(tmp_path, {}, keep) == []


def test_clusters_plot_says_what_rows_columns_and_colours_are(tmp_path, keep):
    members = {"dev-000": [0.9, 0.1], "dev-001": [0.2, 0.8], "dev-002": [1.0, 0.0]}
    tiers = {"dev-000": "rpi5", "dev-001": "jetson-orin-nano", "dev-002": "android-mid"}
    groups = {"dev-000": "mixed", "dev-001": "books", "dev-002": "mixed"}
    assert _report._plot_clusters(tmp_path, members, tiers, groups, keep, last_round=4) == ["clusters.png"]
    heat, bar = keep.figs[0].axes
    labels = [t.get_text() for t in heat.get_yticklabels()]
    assert labels == ["dev-000 (rpi5)", "dev-001 (jetson-orin-nano, books)", "dev-002 (android-mid)"]
    assert "cluster" in heat.get_xlabel() and "device" in heat.get_ylabel() and "round 4" in heat.get_title()
    assert "membership" in bar.get_ylabel()

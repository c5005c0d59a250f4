"""Golden values for the cluster-membership summary of `fedhft bench clusters` (pure arrays, no run)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.clusters import concept_cluster_table, group_agreement, label_shares, summarize_memberships


def test_label_shares_are_each_clients_label_fractions():
    shares = label_shares([np.array([0, 0, 1]), np.array([1, 1, 1, 1]), np.array([], dtype=int)], num_labels=2)
    np.testing.assert_allclose(shares, [[2 / 3, 1 / 3], [0.0, 1.0], [0.0, 0.0]])


def test_clusters_that_split_the_clients_by_majority_label_agree_fully():
    shares = np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8], [0.0, 1.0]])
    memberships = np.array([[0.95, 0.05, 0, 0], [0.8, 0.2, 0, 0], [0.1, 0.9, 0, 0], [0.0, 1.0, 0, 0]])
    out = summarize_memberships(memberships, shares)
    assert out["clusters_used"] == 2
    assert [c["members"] for c in out["clusters"]] == [2, 2]
    assert out["clusters"][0]["label_share"] == [0.8, 0.2]
    assert out["clusters"][1]["label_share"] == [0.1, 0.9]
    assert out["majority_agreement"] == 1.0


def test_clusters_across_the_labels_agree_only_where_a_member_shares_its_clusters_majority():
    shares = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    memberships = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    out = summarize_memberships(memberships, shares)
    # cluster 0: mix (0.55, 0.45) -> label 0, one of two members agrees; cluster 1: (0.45, 0.55) -> label 1, one.
    assert out["majority_agreement"] == 0.5


def test_equal_memberships_of_the_warm_up_are_one_cluster():
    out = summarize_memberships(np.full((3, 4), 0.25), np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    assert out["clusters_used"] == 1
    assert out["clusters"][0]["members"] == 3
    assert out["majority_agreement"] == pytest.approx(2 / 3)


def test_membership_rows_must_match_the_clients():
    with pytest.raises(ValueError, match="2 membership rows for 3 clients"):
        summarize_memberships(np.ones((2, 2)), np.ones((3, 2)))


def test_group_agreement_matches_clusters_to_groups_one_to_one_whatever_their_numbers():
    # cluster 1 is group 0 and cluster 0 is group 1; one client of group 1 sits in cluster 1.
    assert group_agreement([1, 1, 0, 0, 1], [0, 0, 1, 1, 1]) == 4
    # one cluster for two groups: only the larger group can be matched.
    assert group_agreement([0, 0, 0, 0, 0], [0, 1, 1, 0, 1]) == 3
    # three clusters for two groups: the third cluster's clients are matched to no group.
    assert group_agreement([0, 1, 2, 2], [0, 1, 1, 1]) == 3
    assert group_agreement([], []) == 0


def test_group_agreement_needs_one_cluster_and_one_group_per_client():
    with pytest.raises(ValueError, match="3 clusters for 2 groups"):
        group_agreement([0, 1, 0], [0, 1])


def test_the_concept_table_has_a_line_per_run_with_clusters_and_groups_and_nothing_else():
    def run(strategy, clients, kind="eval"):
        return {"kind": kind, "setting": "s-flip2", "strategy": strategy, "seed": 0, "clients": clients}

    grouped = {f"c{i}": {"val_acc_after": 0.5, "cluster": i % 2, "group": (i + 1) % 2} for i in range(4)}
    one = {f"c{i}": {"val_acc_after": 0.5, "cluster": 0, "group": i % 2} for i in range(4)}
    runs = [
        run("fedhft", grouped),
        run("fedhft-k1", one),
        run("fedavg-lora", {f"c{i}": {"val_acc_after": 0.5, "group": i % 2} for i in range(4)}),  # no clusters
        run("fedhft", grouped, kind="tune"),
    ]
    lines = concept_cluster_table(runs).splitlines()
    assert lines[-2:] == ["| s-flip2 | fedhft | 0 | 2 | 2 | 4/4 |", "| s-flip2 | fedhft-k1 | 0 | 1 | 2 | 2/4 |"]
    assert concept_cluster_table(runs[2:]) == ""

"""Concept shift (``concept_groups``): clients in seeded groups whose labels for the same text differ, the
setting where one shared model cannot fit every client and clustering should pay."""

from __future__ import annotations

import json

import numpy as np
import pytest

from simulate import load_sim_config
from simulate._partition import PartitionError, concept_groups, shifted_labels
from simulate._preflight import dataset_problems
from simulate._prepare import prepare_data


def test_labels_shift_by_the_group_modulo_the_number_of_labels():
    assert shifted_labels([0, 1, 2, 3], 0, 4).tolist() == [0, 1, 2, 3]
    assert shifted_labels([0, 1, 2, 3], 1, 4).tolist() == [1, 2, 3, 0]
    assert shifted_labels([0, 1, 2, 3], 3, 4).tolist() == [3, 0, 1, 2]
    assert shifted_labels([0, 1, 1, 0], 1, 2).tolist() == [1, 0, 0, 1]  # two labels: a flip


def test_groups_are_equal_shares_in_a_seeded_order_that_does_not_follow_the_client_index():
    groups = concept_groups(30, 2, seed=0)
    assert np.bincount(groups).tolist() == [15, 15]
    assert groups.tolist() == concept_groups(30, 2, seed=0).tolist()
    assert groups.tolist() != concept_groups(30, 2, seed=1).tolist()
    assert groups.tolist() != [i % 2 for i in range(30)] and groups[::3].tolist() != [0] * 10  # not the tiers'
    assert np.bincount(concept_groups(10, 3, seed=0)).tolist() == [4, 3, 3]
    assert concept_groups(5, 1, seed=0).tolist() == [0] * 5
    with pytest.raises(PartitionError, match="up to the number of clients"):
        concept_groups(3, 4, seed=0)


def _toy(path, n=120):
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"text": f"text number {i}", "label": i % 2}) + "\n")
    return path


def test_each_clients_file_carries_its_groups_labels_and_the_test_set_the_datasets(tmp_path):
    source = _toy(tmp_path / "toy.jsonl")
    truth = {f"text number {i}": i % 2 for i in range(120)}
    cfg = load_sim_config(None, [f"dataset={source}", "partition=iid", "clients=6", "concept_groups=2", "test_size=20"])
    ids = [f"dev-{i:03d}" for i in range(6)]
    data = prepare_data(cfg, ids, tmp_path / "run", say=lambda m: None)
    assert sorted(data.concept_groups.values()) == [0, 0, 0, 1, 1, 1]
    for cid in ids:
        rows = [json.loads(x) for x in data.client_files[cid].read_text().splitlines()]
        flipped = data.concept_groups[cid] == 1
        assert rows and all(r["label"] == (1 - truth[r["text"]] if flipped else truth[r["text"]]) for r in rows)
        assert sum(data.label_hist[cid]) == len(rows)
        assert data.label_hist[cid][1] == sum(r["label"] for r in rows)  # the histogram counts the client's labels
    assert all(e.label == truth[e.text] for e in data.test)
    assert data.summary()["concept_groups"] == data.concept_groups
    plain = prepare_data(
        load_sim_config(None, [f"dataset={source}", "partition=iid", "clients=6"]), ids, tmp_path / "p"
    )
    assert plain.concept_groups is None


def test_more_groups_than_labels_or_clients_is_named_before_the_run(tmp_path):
    source = _toy(tmp_path / "toy.jsonl")
    cfg = load_sim_config(None, [f"dataset={source}", "partition=iid", "clients=6", "concept_groups=3"])
    [problem] = dataset_problems(cfg)
    assert "concept_groups=3" in problem and "2 labels" in problem
    with pytest.raises(Exception, match="concept_groups=7: use 1"):
        load_sim_config(None, ["clients=6", "concept_groups=7"])

"""The personalization scores a device reports on its local shard: balanced accuracy, the
majority-label reference and the shard size (golden values), and that train_round reports them."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, strategies as st

from edge_runtime import (
    DataSource,
    PreparedData,
    balanced_accuracy,
    load_examples,
    majority_accuracy,
    round_shape,
    train_round,
)

from .test_trainer import make_task


def test_balanced_accuracy_golden():
    labels = np.array([0, 0, 0, 0, 1, 1])
    assert balanced_accuracy(labels, np.zeros(6, int)) == 0.5  # one-class predictor: chance, not 4/6
    assert balanced_accuracy(labels, np.array([0, 0, 1, 1, 1, 0])) == (0.5 + 0.5) / 2
    assert balanced_accuracy(labels, labels) == 1.0
    assert math.isnan(balanced_accuracy(np.array([], int), np.array([], int)))


def test_majority_accuracy_golden():
    assert majority_accuracy(np.array([1, 1, 0]), np.array([1, 0, 1, 1])) == 0.75
    assert majority_accuracy(np.array([0, 1]), np.array([0, 1, 1, 1])) == 0.25  # tie: the smaller label
    assert math.isnan(majority_accuracy(np.array([], int), np.array([0])))


@given(st.lists(st.integers(0, 3), min_size=1, max_size=40), st.integers(0, 3))
def test_a_constant_predictor_scores_one_over_the_classes_present(labels, constant):
    labels = np.array(labels)
    present = np.unique(labels)
    expected = (1.0 if constant in present else 0.0) / len(present)
    assert math.isclose(balanced_accuracy(labels, np.full(len(labels), constant)), expected)


def test_train_round_reports_the_shard_scores(tiny_session, toy_csv):
    source = DataSource(load_examples(toy_csv, num_labels=2))
    task = make_task(tiny_session, steps=3)
    local = source.at(tiny_session.bundle_dir, round_shape(tiny_session, task).seq_len)
    result = train_round(tiny_session, task, PreparedData(local.train, local.val))
    m = result.metrics
    assert m["val_examples"] == len(local.val)
    assert m["val_majority_acc"] == round(majority_accuracy(local.train.labels, local.val.labels), 6)
    assert 0.0 <= m["val_bal_acc_before"] <= 1.0 and 0.0 <= m["val_bal_acc_after"] <= 1.0

"""train_round on caller-made token ids (PreparedData) with an explicit evaluation set, and one
session serving several clients in turn (what an in-process engine does)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime import (
    DataSource,
    Encoded,
    PreparedData,
    RoundResult,
    evaluate,
    load_examples,
    round_shape,
    train_round,
)

from .test_trainer import make_task


@pytest.fixture
def source(toy_csv):
    return DataSource(load_examples(toy_csv, num_labels=2))


def _same_result(a: RoundResult, b: RoundResult) -> None:
    assert sorted(a.update) == sorted(b.update) and a.num_examples == b.num_examples
    for k in a.update:
        np.testing.assert_array_equal(a.update[k], b.update[k])
    timing = {"step_time_median_s", "train_time_s", "peak_rss_mb"}
    assert {k: v for k, v in a.metrics.items() if k not in timing} == {
        k: v for k, v in b.metrics.items() if k not in timing
    }


def test_prepared_data_trains_exactly_like_the_devices_own_split(tiny_session, source):
    task = make_task(tiny_session, steps=6)
    seq = round_shape(tiny_session, task).seq_len
    local = source.at(tiny_session.bundle_dir, seq)
    from_file = train_round(tiny_session, task, source)
    prepared = train_round(tiny_session, task, PreparedData(local.train, local.val))
    _same_result(from_file, prepared)


def test_the_explicit_evaluation_set_is_what_val_accuracy_measures(tiny_session, source):
    task = make_task(tiny_session, steps=3)
    local = source.at(tiny_session.bundle_dir, round_shape(tiny_session, task).seq_len)
    shard = local.train.take(np.arange(5))  # any set the caller chooses, here 5 training rows
    result = train_round(tiny_session, task, PreparedData(local.train, shard))
    tiny_session.set_state(task.start_state)
    tiny_session.begin_round(task.mask, task.hyper.lr)
    acc, loss = evaluate(tiny_session, shard, 8, False)
    assert result.metrics["val_acc_before"] == round(acc, 6) and result.metrics["val_loss_before"] == round(loss, 6)
    empty = Encoded(*(a[:0] for a in (shard.input_ids, shard.attention_mask, shard.labels)))
    no_eval = train_round(tiny_session, task, PreparedData(local.train, empty))
    assert "val_acc_after" not in no_eval.metrics and no_eval.metrics["steps"] == 3


def test_data_at_another_length_is_refused_with_the_length_to_use(tiny_session, source):
    task = make_task(tiny_session, steps=2)
    seq = round_shape(tiny_session, task).seq_len
    local = source.at(tiny_session.bundle_dir, seq // 2)
    with pytest.raises(ValueError, match=f"tokenized at {seq // 2} tokens.*trains at {seq}"):
        train_round(tiny_session, task, PreparedData(local.train, local.val))


def test_malformed_token_arrays_are_named():
    ids = np.zeros((4, 8), np.int64)
    with pytest.raises(ValueError, match="val: input_ids is int32, use int64"):
        PreparedData(
            Encoded(ids, ids, np.zeros(4, np.int64)), Encoded(ids.astype(np.int32), ids, np.zeros(4, np.int64))
        )
    with pytest.raises(ValueError, match="train: .*must be"):
        PreparedData(Encoded(ids, ids[:, :4], np.zeros(4, np.int64)), Encoded(ids, ids, np.zeros(4, np.int64)))
    with pytest.raises(ValueError, match="train has no examples"):
        PreparedData(Encoded(ids[:0], ids[:0], np.zeros(0, np.int64)), Encoded(ids, ids, np.zeros(4, np.int64)))


def test_one_session_serves_clients_in_turn_without_carrying_state(tiny_session, source):
    """Client B's round after client A's on the same session equals B's round on its own: the
    trainable state comes from B's task and the optimizer starts fresh."""
    task_a, task_b = make_task(tiny_session, steps=5, seed=3), make_task(tiny_session, steps=5, seed=4)
    local = source.at(tiny_session.bundle_dir, round_shape(tiny_session, task_b).seq_len)
    data = PreparedData(local.train, local.val)
    alone = train_round(tiny_session, task_b, data)
    train_round(tiny_session, task_a, data)
    after_a = train_round(tiny_session, task_b, data)
    _same_result(alone, after_a)

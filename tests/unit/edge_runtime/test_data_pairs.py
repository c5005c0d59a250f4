"""The client files `fedhft simulate` writes reach the device as they were meant: sentence pairs stay
pairs (and tokenize exactly as the simulation's evaluator encodes its test set), and a file that is
not UTF-8 is a DataError at the bad byte, not a traceback."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime import DataError, DataOptions, load_examples, load_tokenizer, tokenize
from simulate import Example
from simulate._prepare import write_jsonl

PAIRS = [Example("The cat sat .", 1, "A cat was sitting ."), Example("Stocks fell .", 0, "It rained all day .")]


def test_a_simulation_client_file_trains_on_pairs(tmp_path):
    ex = load_examples(write_jsonl(tmp_path / "dev-000.jsonl", PAIRS), num_labels=2)
    assert ex.columns == ("text", "text_pair", "label")
    assert ex.texts == [e.text for e in PAIRS] and ex.pairs == [e.text_pair for e in PAIRS]
    assert ex.labels.tolist() == [1, 0]


def test_single_texts_stay_single(tmp_path):
    ex = load_examples(write_jsonl(tmp_path / "dev-001.jsonl", [Example("good", 1), Example("bad", 0)]))
    assert ex.pairs is None and ex.columns == ("text", "label")


def test_the_device_and_the_evaluator_encode_a_pair_alike(tmp_path, tiny_bundle):
    from simulate import encode_examples

    ex = load_examples(write_jsonl(tmp_path / "dev-000.jsonl", PAIRS), num_labels=2)
    device = tokenize(load_tokenizer(tiny_bundle), ex, 24)
    evaluator = encode_examples(tiny_bundle / "tokenizer.json", PAIRS, 24)
    assert np.array_equal(device.input_ids, evaluator.input_ids)
    assert np.array_equal(device.attention_mask, evaluator.attention_mask)
    assert (device.input_ids[0] == 102).sum() == 2  # [SEP] after each text: a real pair, not one text


def test_named_columns_and_a_pair_column(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("s1,s2,gold\na,b,yes\nc,d,no\n")
    ex = load_examples(
        path, DataOptions(text_column="s1", text_pair_column="s2", label_column="gold", label_map={"no": 0, "yes": 1})
    )
    assert ex.texts == ["a", "c"] and ex.pairs == ["b", "d"] and ex.labels.tolist() == [1, 0]


def test_a_latin1_file_is_a_data_error_at_the_bad_byte(tmp_path):
    path = tmp_path / "mine.txt"
    body = "text\tlabel\n" + "fine words\t1\n" * 300
    path.write_bytes((body + "na\u00efve\t0\n").encode("latin-1"))
    with pytest.raises(DataError) as err:
        load_examples(path)
    assert f"byte offset {len(body) + 2}" in str(err.value) and "line 302" in str(err.value)

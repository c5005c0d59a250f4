"""Local data: formats, column auto-detection, labels, row-numbered errors, tokenizing, splitting."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_runtime import DataError, DataOptions, DataSource, load_examples, load_tokenizer, tokenize
from edge_runtime._data import Examples, iter_batches, split_indices


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "name, text",
    [
        ("d.tsv", "sentence\tlabel\ngood film\t1\nbad film\t0\n"),
        ("d.csv", 'review,class\n"good, really\nfine film",1\nbad film,0\n'),  # quoted comma + newline
        ("d.jsonl", '{"text": "good, really\\nfine film", "y": 1}\n\n{"text": "bad film", "y": 0}\n'),
        ("d.txt", "content\tcategory\ngood, really\t1\nbad film\t0\n"),  # sniffed tab delimiter
    ],
)
def test_formats_and_auto_detected_columns(tmp_path, name, text):
    ex = load_examples(_write(tmp_path, name, text))
    assert len(ex) == 2 and ex.pairs is None
    assert ex.labels.tolist() == [1, 0] and ex.labels.dtype == np.int64
    assert ex.texts[1] == "bad film" and ex.texts[0].startswith("good")


@pytest.mark.parametrize(
    "header, cols",
    [
        ("sentence1,sentence2,label", ("sentence1", "sentence2", "label")),
        ("text_a,text_b,labels", ("text_a", "text_b", "labels")),
        ("question,passage,label", ("question", "passage", "label")),
    ],
)
def test_pair_columns_are_detected(tmp_path, header, cols):
    ex = load_examples(_write(tmp_path, "p.csv", f"{header}\na,b,1\nc,d,0\n"))
    assert ex.columns == cols and ex.texts == ["a", "c"] and ex.pairs == ["b", "d"]


def test_string_labels_map_through_the_sorted_label_list_or_an_explicit_map(tmp_path):
    path = _write(tmp_path, "s.csv", "text,label\na,pos\nb,neg\nc,pos\n")
    ex = load_examples(path)
    assert ex.label_names == ["neg", "pos"] and ex.labels.tolist() == [1, 0, 1]
    ex = load_examples(path, DataOptions(label_map={"pos": 0, "neg": 1}))
    assert ex.labels.tolist() == [0, 1, 0]


def test_named_columns_override_detection(tmp_path):
    path = _write(tmp_path, "n.csv", "body,stars,text\nx,1,ignored\ny,0,ignored\n")
    ex = load_examples(path, DataOptions(text_column="body", label_column="stars"))
    assert ex.texts == ["x", "y"] and ex.labels.tolist() == [1, 0]


@pytest.mark.parametrize(
    "name, text, row, words",
    [
        ("bad.csv", "text,label\ngood,1\ntoo,many,fields\n", 3, "3 fields but the header has 2"),
        ("bad.csv", 'text,label\ngood,1\n"never closed,0\n', 3, "cannot parse"),
        ("bad.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": \n', 2, "invalid JSON"),
        ("bad.jsonl", '{"text": "a", "label": 1}\n[1, 2]\n', 2, "not an object"),
        ("bad.tsv", "text\tlabel\na\t1\n\t0\n", 3, "'text' field is missing or empty"),
        ("bad.jsonl", '{"text": "a", "label": 1}\n{"text": "b"}\n', 2, "'label' field is missing"),
    ],
)
def test_malformed_rows_name_the_file_the_row_and_the_fix(tmp_path, name, text, row, words):
    path = _write(tmp_path, name, text)
    with pytest.raises(DataError) as err:
        load_examples(path)
    msg = str(err.value)
    assert str(path) in msg and f"row {row}" in msg and words in msg and "Fix:" in msg


@pytest.mark.parametrize(
    "text, words",
    [
        ("a,b\n1,2\n", "cannot tell which column holds the text"),
        ("text,label\n", "no examples"),
        ("", "empty"),
    ],
)
def test_unusable_files_say_why(tmp_path, text, words):
    with pytest.raises(DataError, match=words):
        load_examples(_write(tmp_path, "u.csv", text))


def test_labels_outside_the_model_are_refused_with_the_row(tmp_path):
    path = _write(tmp_path, "l.csv", "text,label\na,0\nb,1\nc,2\n")
    with pytest.raises(DataError, match=r"row 4: label '2' outside the model's 2 classes"):
        load_examples(path, num_labels=2)


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_examples(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="unknown file type"):
        load_examples(_write(tmp_path, "d.parquet", "x"))


def test_tokenize_pads_and_truncates_to_the_sequence_length_with_pairs(tiny_bundle):
    ex = Examples(tiny_bundle, ["good film", "word " * 100], ["a second text", "b"], np.array([1, 0]))
    enc = tokenize(load_tokenizer(tiny_bundle), ex, 16)
    assert enc.input_ids.shape == (2, 16) and enc.input_ids.dtype == np.int64
    assert enc.attention_mask[1].all() and not enc.attention_mask[0].all()  # long pair truncated, short padded
    assert enc.input_ids[0, 0] == 101 and 102 in enc.input_ids[0]  # [CLS] ... [SEP] of the MiniLM vocabulary


def test_split_is_deterministic_and_keeps_one_validation_example():
    tr, va = split_indices(10, 0.15, seed=3)
    assert len(va) == 2 and len(tr) == 8 and not set(tr) & set(va)
    assert np.array_equal(va, split_indices(10, 0.15, seed=3)[1])
    tr, va = split_indices(2, 0.01, seed=0)
    assert len(tr) == 1 and len(va) == 1


def test_data_source_caches_per_sequence_length(tiny_bundle, toy_csv):
    source = DataSource(load_examples(toy_csv, num_labels=2))
    a = source.at(tiny_bundle, 16)
    assert source.at(tiny_bundle, 16) is a and a.train.input_ids.shape[1] == 16
    assert len(a.train) + len(a.val) == 80 and len(a.val) == 12


def test_iter_batches_counts_steps_or_epochs():
    from edge_runtime import Encoded

    data = Encoded(np.zeros((10, 4), np.int64), np.ones((10, 4), np.int64), np.arange(10))
    assert len(list(iter_batches(data, 4, 0, steps=7))) == 7
    batches = list(iter_batches(data, 4, 0, epochs=2))
    assert [len(b[2]) for b in batches] == [4, 4, 2, 4, 4, 2]
    assert sorted(np.concatenate([b[2] for b in batches[:3]]).tolist()) == list(range(10))
    static = list(iter_batches(data, 4, 0, epochs=1, drop_last=True))
    assert [len(b[2]) for b in static] == [4, 4]
    tiny = Encoded(data.input_ids[:3], data.attention_mask[:3], data.labels[:3])
    assert [len(b[2]) for b in iter_batches(tiny, 4, 0, steps=2, drop_last=True)] == [4, 4]


def test_jsonl_with_numeric_float_labels(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in [("a", 1.0), ("b", 0.0)]))
    assert load_examples(path).labels.tolist() == [1, 0]

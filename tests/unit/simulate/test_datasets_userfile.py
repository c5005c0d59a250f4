"""A user's own files in `fedhft simulate`: a separate test file, the column settings of `fedhft edge`,
sentence pairs, encodings, unknown formats and the name the report gives the data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedhft.config import ConfigError
from simulate import DatasetError, SimConfig, dataset_of, load_dataset, load_sim_config
from simulate._prepare import prepare_data


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def _cfg(**kw) -> SimConfig:
    return load_sim_config(None, [f"{k}={v}" for k, v in kw.items()])


TRAIN = "text\tlabel\n" + "".join(f"review {i}\t{'pos' if i % 2 else 'neg'}\n" for i in range(40))


@pytest.fixture
def files(tmp_path):
    return {
        "train": _write(tmp_path / "mydata" / "train.tsv", TRAIN),
        "test": _write(tmp_path / "mydata" / "test.tsv", "text\tlabel\nheld out a\tneg\nheld out b\tpos\n"),
    }


# ----------------------------------------------------------------------------- test_dataset


def test_a_separate_test_file_is_the_test_set_and_the_whole_training_file_trains(files):
    ds = dataset_of(_cfg(dataset=files["train"], test_dataset=files["test"]))
    assert [(e.text, e.label) for e in ds.test] == [("held out a", 0), ("held out b", 1)]
    assert len(ds.train) == 40 and ds.label_names == ["neg", "pos"]
    assert ds.sources == [str(files["train"]), str(files["test"])]


def test_without_a_test_file_15_percent_is_held_out_and_the_help_says_so(files):
    ds = dataset_of(_cfg(dataset=files["train"]))
    assert (len(ds.train), len(ds.test)) == (34, 6)
    help_text = next(f.metadata["help"] for f in SimConfig.__dataclass_fields__.values() if f.name == "test_dataset")
    assert "15%" in help_text and "default none" in help_text.lower()


@pytest.mark.parametrize("test_rows, label", [("x\tmaybe\n", "'maybe'"), ("x\t1\n", "'1'")])
def test_a_test_label_the_training_file_lacks_names_the_label_the_file_and_the_fix(files, test_rows, label):
    test = _write(files["test"], "text\tlabel\nfine\tpos\n" + test_rows)
    with pytest.raises(DatasetError) as err:
        dataset_of(_cfg(dataset=files["train"], test_dataset=test))
    msg = str(err.value)
    assert f"{test}, row 3: label {label} is not one of the training labels ['neg', 'pos']" in msg
    assert "Fix:" in msg and "label_map=" in msg


def test_integer_labels_must_be_training_classes(tmp_path):
    train = _write(tmp_path / "t.csv", "text,label\n" + "".join(f"r{i},{i % 3}\n" for i in range(12)))
    test = _write(tmp_path / "e.csv", "text,label\nok,2\nbad,3\n")
    with pytest.raises(DatasetError, match=r"row 3: label '3' is not one of the training labels \['0', '1', '2'\]"):
        load_dataset(str(train), test_file=test)


def test_a_builtin_dataset_takes_a_test_file_by_label_name_or_class_id(tmp_path):
    root = tmp_path / "data"
    _write(root / "sst2" / "train_full.tsv", "sentence\tlabel\ngood\t1\nbad\t0\n")
    _write(root / "sst2" / "dev.tsv", "sentence\tlabel\nfine\t1\n")
    test = _write(tmp_path / "mine.csv", "text,label\nsuper,positive\nawful,0\n")
    ds = dataset_of(_cfg(dataset="sst2", data_root=root, test_dataset=test))
    assert ds.name == "sst2" and [e.label for e in ds.test] == [1, 0]


def test_a_missing_test_file_says_how_to_do_without(files, tmp_path):
    with pytest.raises(DatasetError, match="test_dataset file .* does not exist.*drop test_dataset"):
        dataset_of(_cfg(dataset=files["train"], test_dataset=tmp_path / "nope.tsv"))


# ----------------------------------------------------------------------------- columns, as on fedhft edge


def test_the_column_settings_of_fedhft_edge(tmp_path):
    path = _write(
        tmp_path / "reviews.csv",
        "id,body,stars\n" + "".join(f"{i},text {i},{'hi' if i % 2 else 'lo'}\n" for i in range(10)),
    )
    ds = dataset_of(_cfg(dataset=path, text_column="body", label_column="stars", label_map="{lo: 0, hi: 1}"))
    every = {e.text: e.label for e in ds.train + ds.test}
    assert every["text 1"] == 1 and every["text 2"] == 0 and ds.label_names == ["lo", "hi"]


def test_a_named_column_that_is_not_there_names_the_setting(tmp_path):
    path = _write(tmp_path / "r.csv", "text,label\na,1\nb,0\nc,1\nd,0\n")
    with pytest.raises(DatasetError, match=r"no text column 'body' .*Fix: pass the right name with text_column=NAME"):
        dataset_of(_cfg(dataset=path, text_column="body"))


def test_a_label_outside_the_label_map_names_the_setting(tmp_path):
    path = _write(tmp_path / "r.csv", "text,label\na,pos\nb,neg\nc,pos\nd,meh\n")
    with pytest.raises(DatasetError, match=r"row 5: label 'meh' is not in the label map .*label_map="):
        dataset_of(_cfg(dataset=path, label_map="{neg: 0, pos: 1}"))


PAIRS = "sentence1,sentence2,label\n" + "".join(f"first {i},second {i},{i % 2}\n" for i in range(20))


@pytest.mark.parametrize("settings", [{}, {"text_column": "sentence1", "text_pair_column": "sentence2"}])
def test_sentence_pairs_reach_the_client_files_as_pairs(tmp_path, settings):
    path = _write(tmp_path / "pairs.csv", PAIRS)
    cfg = _cfg(dataset=path, partition="iid", clients=2, test_size=0, **settings)
    data = prepare_data(cfg, ["dev-000", "dev-001"], tmp_path / "run", say=lambda m: None)
    row = json.loads(data.client_files["dev-000"].read_text().splitlines()[0])
    assert set(row) == {"text", "text_pair", "label"} and row["text_pair"] == row["text"].replace("first", "second")
    assert all(e.text_pair == e.text.replace("first", "second") for e in data.test) and data.dataset.pairs


def test_pairs_in_one_file_only_are_refused(tmp_path):
    train = _write(tmp_path / "pairs.csv", PAIRS)
    test = _write(tmp_path / "single.csv", "text,label\na,0\n")
    with pytest.raises(DatasetError, match="holds sentence pairs but the test file does not"):
        load_dataset(str(train), test_file=test)


# ----------------------------------------------------------------------------- encodings and formats


def test_a_latin1_file_names_the_byte_and_the_data_encoding_setting(tmp_path):
    body = "text\tlabel\n" + "".join(f"review number {i}\t{i % 2}\n" for i in range(300))
    path = _write(tmp_path / "latin.tsv", body + "d\u00e9j\u00e0 vu\t1\n", "latin-1")
    with pytest.raises(DatasetError) as err:
        dataset_of(_cfg(dataset=path))
    msg = str(err.value)
    assert f"byte offset {len(body) + 1}" in msg and "line 302" in msg and "row 1" not in msg
    assert "data_encoding=latin-1" in msg
    ds = dataset_of(_cfg(dataset=path, data_encoding="latin-1"))
    assert "d\u00e9j\u00e0 vu" in {e.text for e in ds.train + ds.test}


def test_a_latin1_txt_file_is_a_dataset_error(tmp_path):
    path = _write(tmp_path / "notes.txt", "text\tlabel\nna\u00efve\t1\nb\t0\nc\t1\nd\t0\n", "latin-1")
    with pytest.raises(DatasetError, match=r"byte 0xef at byte offset 13 \(line 2"):
        load_dataset(str(path))


def test_an_unknown_extension_names_the_formats(tmp_path):
    path = _write(tmp_path / "data.xlsx", "whatever")
    with pytest.raises(DatasetError, match=r"unknown file type '.xlsx'.*\.tsv.*\.csv.*\.txt.*\.jsonl"):
        load_dataset(str(path))


def test_a_missing_file_with_any_extension_is_named(tmp_path):
    with pytest.raises(DatasetError, match="dataset file .*notes.txt does not exist"):
        load_dataset(str(tmp_path / "notes.txt"))


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"data_encoding": "klingon"}, "data_encoding='klingon' is not a known text encoding"),
        ({"encoding": "latin-1"}, "a data file's text encoding is data_encoding=latin-1"),
        ({"dataset": "sst2", "text_column": "body"}, "text_column apply to dataset=<your file>"),
        ({"label_map": "{a: -1}"}, "map every label to a class id >= 0"),
    ],
)
def test_data_settings_are_checked_with_the_config(overrides, words):
    with pytest.raises(ConfigError, match=words):
        _cfg(**overrides)


# ----------------------------------------------------------------------------- the name in the report


def test_a_user_file_is_named_by_its_folder_and_file_name(files):
    assert dataset_of(_cfg(dataset=files["train"])).name == "mydata/train.tsv"


def test_a_builtin_file_that_is_not_utf8_is_reported_at_its_real_byte_offset(tmp_path):
    root = tmp_path / "data"
    body = "sentence\tlabel\n" + "fine\t1\n" * 3000
    _write(root / "sst2" / "train_full.tsv", body + "ol\u00e9\t1\n", "latin-1")
    _write(root / "sst2" / "dev.tsv", "sentence\tlabel\nok\t1\n")
    with pytest.raises(DatasetError, match=rf"byte offset {len(body) + 2} \(line 3002"):
        load_dataset("sst2", root)

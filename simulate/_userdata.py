"""A user's own labelled file (.tsv, .csv, .txt or .jsonl) as a simulation Dataset.

The file is read exactly as ``fedhft edge data=FILE`` reads it (``fedhft.datafile``): the same formats,
the same column options and auto-detection (text, optional second text of a pair, label), the same
label rule (integers as they are, strings numbered in sorted order, or ``label_map``). A seeded 15%
of the rows is the held-out global test set, unless ``test_dataset`` names a separate file, whose
labels must be among the training file's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from fedhft.datafile import DataError, detect_columns, int_label, label_ids, read_columns, read_records, setting_option
from simulate._examples import Dataset, DatasetError, Example, data_error, split_test

#: How a user names another encoding in a `fedhft simulate` setting (shown in the fix of a decode error).
ENCODING_OPTION = "data_encoding="


@dataclass(frozen=True)
class UserFileOptions:
    """How to read a user's file: ``None`` columns are auto-detected, as on ``fedhft edge``."""

    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    label_map: Mapping[str, int] | None = None
    encoding: str = "utf-8"

    @classmethod
    def of(cls, cfg) -> "UserFileOptions":
        """The options of a SimConfig."""
        return cls(cfg.text_column, cfg.text_pair_column, cfg.label_column, cfg.label_map, cfg.data_encoding)


@dataclass
class _Table:
    path: Path
    texts: list[str]
    pairs: list[str] | None
    raw: list
    rows: list[int]
    keys: list[str | None]


def display_name(path: Path) -> str:
    """What a report calls a user's file: its folder and name (``sst2/train.tsv``), since a bare stem
    such as ``train`` says nothing."""
    parent = path.expanduser().resolve().parent.name
    return f"{parent}/{path.name}" if parent else path.name


def _read(path: Path, options: UserFileOptions, key_column: str | None = None) -> _Table:
    try:
        records, columns = read_records(path, options.encoding, ENCODING_OPTION)
        if not records:
            raise DatasetError(f"{path}: the file has no examples; add labelled rows")
        text, pair, label = detect_columns(
            columns, path, options.text_column, options.text_pair_column, options.label_column, option=setting_option
        )
        if key_column is not None and key_column not in columns:
            raise data_error(
                path, None, f"no key column {key_column!r} (columns: {list(columns)})", "set natural_key to one of them"
            )
        texts, pairs, raw, rows = read_columns(records, path, text, pair, label)
    except DataError as exc:
        raise DatasetError(str(exc)) from None
    keys = [str(rec.get(key_column)) if key_column else None for _, rec in records]
    return _Table(path, texts, pairs, raw, rows, keys)


def _examples(t: _Table, labels: list[int]) -> list[Example]:
    pairs = t.pairs if t.pairs is not None else [None] * len(t.texts)
    return [
        Example(text.strip(), y, pair.strip() if pair is not None else None, key)
        for text, pair, y, key in zip(t.texts, pairs, labels, t.keys)
    ]


def _train_labels(t: _Table, label_map: Mapping[str, int] | None) -> tuple[list[int], list[str]]:
    """Class ids and the name of every class 0..K-1."""
    try:
        ids, names = label_ids(t.raw, t.rows, t.path, label_map, option=setting_option)
    except DataError as exc:
        raise DatasetError(str(exc)) from None
    if names is not None:
        return ids, names
    bad = next((i for i, v in enumerate(ids) if v < 0), None)
    if bad is not None:
        raise data_error(
            t.path, t.rows[bad], f"label {ids[bad]} is negative", "use labels 0..K-1, or map them with label_map={...}"
        )
    if label_map is not None:  # the map declares the classes, even ones absent from this file
        first = {}
        for name, i in label_map.items():
            first.setdefault(int(i), str(name))
        return ids, [first.get(i, str(i)) for i in range(max(first) + 1)]
    return ids, [str(i) for i in range(max(ids) + 1)]


def load_user_file(
    path: Path,
    seed: int = 0,
    key_column: str | None = None,
    options: UserFileOptions = UserFileOptions(),
    split: bool = True,
) -> Dataset:
    """The file as a Dataset; ``split``: a seeded 15% is its test set (else the test set is empty,
    for ``load_test_file`` to fill)."""
    if not path.is_file():
        raise DatasetError(f"dataset file {path} does not exist: give the path of a .tsv, .csv, .txt or .jsonl file")
    t = _read(path, options, key_column)
    if len(t.texts) < 4:
        raise data_error(
            path, None, f"only {len(t.texts)} rows", "a simulation needs at least a few labelled rows per client"
        )
    labels, names = _train_labels(t, options.label_map)
    examples = _examples(t, labels)
    train, test = split_test(examples, 0.15, seed) if split else (examples, [])
    return Dataset(display_name(path), train, test, names, key_column, [str(path)])


def _test_label(value, names: dict[str, int], builtin_ids: int) -> int | None:
    key = str(value).strip()
    if key in names:
        return names[key]
    number = int_label(value)
    if number is not None and str(number) in names:  # "01", 1.0
        return names[str(number)]
    return number if number is not None and 0 <= number < builtin_ids else None


def load_test_file(
    ds: Dataset, path: Path, options: UserFileOptions = UserFileOptions(), builtin: bool = False
) -> Dataset:
    """``ds`` with its test set read from ``path``; each label must map onto ``ds``'s classes."""
    if not path.is_file():
        raise DatasetError(
            f"test_dataset file {path} does not exist: give the path of a .tsv, .csv, .txt or .jsonl "
            "file, or drop test_dataset to hold out 15% of the training file"
        )
    t = _read(path, options)
    if (t.pairs is not None) != ds.pairs:
        has, lacks = (
            ("the test file", f"the training data ({ds.name})")
            if t.pairs is not None
            else (f"the training data ({ds.name})", "the test file")
        )
        raise DatasetError(
            f"{path}: {has} holds sentence pairs but {lacks} does not; give both files the same "
            "text columns (text_column= and text_pair_column=)"
        )
    if options.label_map is not None and not builtin:
        labels, _ = _train_labels(t, options.label_map)
    else:
        names = {n: i for i, n in enumerate(ds.label_names)}
        labels = []
        for value, row in zip(t.raw, t.rows):
            y = _test_label(value, names, ds.num_labels if builtin else 0)
            if y is None:
                raise DatasetError(
                    f"{path}, row {row}: label {str(value).strip()!r} is not one of the training labels "
                    f"{ds.label_names} (of {ds.name if builtin else ds.sources[0]}). Fix: correct or delete the row, "
                    "add examples of that label to the training file, or map both files' labels to class ids with "
                    "label_map={...}"
                )
            labels.append(y)
    return Dataset(ds.name, ds.train, _examples(t, labels), ds.label_names, ds.natural_key, [*ds.sources, str(path)])

"""A user's own labelled file (.tsv, .csv or .jsonl) as a simulation Dataset.

Columns are found by common names (text/sentence/review/content, optional text_pair/sentence2,
label/class/...); labels may be integers 0..K-1 or strings (mapped in sorted order). A seeded 15%
of the rows is the held-out global test set.
"""
from __future__ import annotations

from pathlib import Path

from fedhft.datafile import LABEL_COLUMNS, TEXT_COLUMNS, DataError, read_records
from fedhft.simulate._datasets import PAIR_COLUMNS, Dataset, DatasetError, Example, _fail, _split


def _records(path: Path) -> list[tuple[int, dict]]:
    try:
        return read_records(path)[0]
    except DataError as exc:
        raise DatasetError(str(exc)) from None


def _column(columns: list[str], candidates, what: str, path: Path, required: bool = True) -> str | None:
    lower = {c.lower(): c for c in columns}
    found = next((lower[c] for c in candidates if c in lower), None)
    if found is None and required:
        raise _fail(path, None, f"no {what} column (columns: {columns})", f"name it one of {list(candidates)}")
    return found


def load_user_file(path: Path, seed: int = 0, key_column: str | None = None) -> Dataset:
    if not path.is_file():
        raise DatasetError(f"dataset file {path} does not exist: give the path of a .tsv, .csv or .jsonl file")
    records = _records(path)
    if len(records) < 4:
        raise _fail(path, None, f"only {len(records)} rows", "a simulation needs at least a few labelled rows per client")
    columns = list(dict.fromkeys(k for _, r in records for k in r))
    text = _column(columns, TEXT_COLUMNS, "text", path)
    pair = _column(columns, PAIR_COLUMNS, "text pair", path, required=False)
    label = _column(columns, LABEL_COLUMNS, "label", path)
    if key_column is not None and key_column not in columns:
        raise _fail(path, None, f"no key column {key_column!r} (columns: {columns})", "set natural_key to one of them")
    raw = []
    for row, rec in records:
        for col in (text, label):
            if rec.get(col) is None or str(rec[col]).strip() == "":
                raise _fail(path, row, f"the {col!r} field is missing or empty", "fill it in or delete the row")
        raw.append(str(rec[label]).strip())
    if all(v.lstrip("-").isdigit() for v in raw):
        ints = [int(v) for v in raw]
        k = max(ints) + 1
        bad = next((i for i, v in enumerate(ints) if v < 0), None)
        if bad is not None:
            raise _fail(path, records[bad][0], f"label {ints[bad]} is negative", "use labels 0..K-1")
        names = [str(i) for i in range(k)]
    else:
        names = sorted(set(raw))
        ints = [names.index(v) for v in raw]
    examples = [Example(str(rec[text]).strip(), y, str(rec[pair]).strip() if pair and rec.get(pair) is not None else None,
                        str(rec.get(key_column)) if key_column else None) for (_, rec), y in zip(records, ints)]
    train, test = _split(examples, 0.15, seed)
    return Dataset(path.stem, train, test, names, key_column, [str(path)])

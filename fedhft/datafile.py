"""A user's labelled data file (.tsv, .csv or .jsonl), read the same way on a device and in a simulation.

``read_records`` returns numbered records and the column names; what the columns mean (text, pair,
label) is the caller's business. Standard library only (``csv`` handles quoted multi-line fields):
an ORT or ExecuTorch device may have neither torch nor transformers installed.

Every problem is a ``DataError`` naming the file, the row number (1-based, as an editor shows it; the
header is row 1 for TSV/CSV) and the fix.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

#: Column names detected as the text and the label, most common first.
TEXT_COLUMNS = ("text", "sentence", "review", "content", "document", "utterance")
LABEL_COLUMNS = ("label", "labels", "class", "category", "y", "target")
#: csv's default field limit (128 KB) is smaller than some reviews; a row is still bounded.
_FIELD_LIMIT = 16 * 1024 * 1024


class DataError(ValueError):
    """The data file cannot be used; the message names the file, the row and the fix."""


def data_error(path: Path, row: int | None, problem: str, fix: str) -> DataError:
    """A DataError that names the file, the row (1-based, as an editor shows it) and the fix."""
    where = f"{path}" + (f", row {row}" if row is not None else "")
    return DataError(f"{where}: {problem}. Fix: {fix}")


def read_records(path: str | Path) -> tuple[list[tuple[int, dict]], tuple[str, ...]]:
    """(row number, record) pairs and the column names of a .tsv/.csv/.jsonl file."""
    path = Path(path)
    if not path.is_file():
        raise data_error(path, None, "no such file", "give the path of a .tsv, .csv or .jsonl file")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _read_jsonl(path)
    if suffix in (".tsv", ".tab", ".csv", ".txt"):
        return _read_delimited(path, "\t" if suffix in (".tsv", ".tab") else None)
    raise data_error(path, None, f"unknown file type {suffix!r}", "use a .tsv, .csv or .jsonl file")


def _read_delimited(path: Path, delimiter: str | None) -> tuple[list[tuple[int, dict]], tuple[str, ...]]:
    csv.field_size_limit(_FIELD_LIMIT)
    with open(path, newline="", encoding="utf-8-sig") as fh:
        if delimiter is None:
            sample = fh.read(64 * 1024)
            fh.seek(0)
            delimiter = "\t" if sample.count("\t") > sample.count(",") else ","
        reader = csv.reader(fh, delimiter=delimiter, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise data_error(path, None, "the file is empty", "write a header row and one row per example") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise data_error(path, 1, f"unreadable header ({exc})", "save the file as UTF-8 with a header row") from None
        header = [h.strip() for h in header]
        if len(set(header)) != len(header) or not all(header):
            raise data_error(path, 1, f"the header {header} has empty or repeated column names", "name every column once")
        rows = []
        while True:
            start = reader.line_num + 1
            try:
                values = next(reader)
            except StopIteration:
                break
            except (csv.Error, UnicodeDecodeError) as exc:
                raise data_error(path, start, f"cannot parse the row ({exc})",
                            "close every quoted field and escape inner quotes by doubling them (\"\")") from None
            if not values or values == [""]:
                continue  # blank line
            if len(values) != len(header):
                raise data_error(path, start, f"{len(values)} fields but the header has {len(header)}",
                            f"quote fields that contain the delimiter {delimiter!r}, or add the missing fields")
            rows.append((start, dict(zip(header, values))))
    return rows, tuple(header)


def _read_jsonl(path: Path) -> tuple[list[tuple[int, dict]], tuple[str, ...]]:
    rows, columns = [], {}
    with open(path, encoding="utf-8-sig") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise data_error(path, number, f"invalid JSON ({exc.msg} at column {exc.colno})",
                            "write one JSON object per line") from None
            if not isinstance(record, dict):
                raise data_error(path, number, f"a JSON {type(record).__name__}, not an object",
                            'write one object per line, e.g. {"text": "...", "label": 1}')
            rows.append((number, record))
            columns.update(dict.fromkeys(record))
    return rows, tuple(columns)


__all__ = ["DataError", "LABEL_COLUMNS", "TEXT_COLUMNS", "data_error", "read_records"]

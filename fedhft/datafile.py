"""A user's labelled data file (.tsv, .csv, .txt or .jsonl), read the same way on a device and in a simulation.

``read_records`` returns numbered records and the column names; ``detect_columns`` finds the text,
optional second text (sentence pairs) and label columns, from names given by the user or common
names; ``read_columns`` and ``label_ids`` turn the records into texts and integer labels. The edge
(``edge_runtime._data``) and ``fedhft simulate`` (``simulate._userdata``) both use them, so a
file means the same thing to both. Standard library only (``csv`` handles quoted multi-line fields):
an ORT or ExecuTorch device may have neither torch nor transformers installed.

Every problem is a ``DataError`` naming the file, the row number (1-based, as an editor shows it; the
header is row 1 for TSV/CSV) or, for a byte that is not valid in the encoding, its byte offset and
line, and the fix.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from pathlib import Path
from typing import Callable, Mapping, Sequence

#: Column names detected as the text and the label, most common first.
TEXT_COLUMNS = ("text", "sentence", "review", "content", "document", "utterance")
LABEL_COLUMNS = ("label", "labels", "class", "category", "y", "target")
#: Column pairs detected as (text, second text) of a pair task. ("text", "text_pair") is what
#: ``fedhft simulate`` writes into each client's JSONL file, so a device trains on real pairs.
PAIR_COLUMNS = (
    ("text", "text_pair"),
    ("sentence1", "sentence2"),
    ("text_a", "text_b"),
    ("question", "passage"),
    ("question", "sentence"),
    ("premise", "hypothesis"),
    ("question1", "question2"),
)
#: File suffix -> what it holds; a file of any other suffix is refused with this list.
FORMATS = {
    ".tsv": "tab-separated with a header row",
    ".tab": "tab-separated with a header row",
    ".csv": "comma-separated with a header row",
    ".txt": "tab- or comma-separated, detected, with a header row",
    ".jsonl": "one JSON object per line",
    ".ndjson": "one JSON object per line",
    ".json": "one JSON object per line",
}
#: csv's default field limit (128 KB) is smaller than some reviews; a row is still bounded.
_FIELD_LIMIT = 16 * 1024 * 1024


class DataError(ValueError):
    """The data file cannot be used; the message names the file, the row and the fix."""


def data_error(path: Path, row: int | None, problem: str, fix: str) -> DataError:
    """A DataError that names the file, the row (1-based, as an editor shows it) and the fix."""
    where = f"{path}" + (f", row {row}" if row is not None else "")
    return DataError(f"{where}: {problem}. Fix: {fix}")


def cli_option(name: str) -> str:
    """How the edge's command line spells a setting, before its value: ``text_column=`` (every
    command takes its settings as key=value: fedhft/cli_settings.py)."""
    return name + "="


def setting_option(name: str) -> str:
    """How ``fedhft simulate`` spells a setting, before its value: ``text_column=``."""
    return name + "="


def supported_formats() -> str:
    kinds: dict[str, list[str]] = {}
    for suffix, what in FORMATS.items():
        kinds.setdefault(what, []).append(suffix)
    return "; ".join(f"{'/'.join(s)} ({what})" for what, s in kinds.items())


# ----------------------------------------------------------------------------- reading


def read_records(
    path: str | Path,
    encoding: str = "utf-8",
    encoding_option: str | None = None,
) -> tuple[list[tuple[int, dict]], tuple[str, ...]]:
    """(row number, record) pairs and the column names of a .tsv/.csv/.txt/.jsonl file.

    ``encoding_option`` is how the caller's user names another encoding (``encoding=``), for the
    fix of a file that is not valid ``encoding`` text; None when the caller has no such option.
    """
    path = Path(path)
    if not path.is_file():
        raise data_error(
            path, None, "no such file", f"give the path of a file in one of these formats: {supported_formats()}"
        )
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise data_error(
            path,
            None,
            f"unknown file type {suffix or '(no extension)'!r}",
            f"use one of the supported formats: {supported_formats()}",
        )
    text = decode(path, encoding, encoding_option)
    if FORMATS[suffix] == "one JSON object per line":
        return _read_jsonl(path, text)
    return _read_delimited(path, text, "\t" if suffix in (".tsv", ".tab") else None)


def decode(path: Path, encoding: str = "utf-8", encoding_option: str | None = None) -> str:
    """The whole file as text. Decoding it at once (not through a buffered text reader) is what lets
    an invalid byte be reported at its real offset and line, not at the row being parsed."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise data_error(
            path, None, f"unknown encoding {encoding!r}", "name a Python codec, e.g. utf-8, latin-1, cp1252 or utf-16"
        ) from None
    raw = path.read_bytes()
    skip = len(codecs.BOM_UTF8) if name == "utf-8" and raw.startswith(codecs.BOM_UTF8) else 0
    try:
        return raw[skip:].decode(name)
    except UnicodeDecodeError as exc:
        raise _decode_error(path, raw, skip + exc.start, encoding, encoding_option) from None


def _decode_error(path: Path, raw: bytes, offset: int, encoding: str, option: str | None) -> DataError:
    line = raw.count(b"\n", 0, offset) + 1
    column = offset - (raw.rfind(b"\n", 0, offset) + 1) + 1
    utf16 = raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    guess = "utf-16" if utf16 else "latin-1"
    problem = (
        f"byte 0x{raw[offset]:02x} at byte offset {offset} (line {line}, byte {column} of the line) is not "
        f"valid {encoding} text" + (" (the file starts with a UTF-16 byte-order mark)" if utf16 else "")
    )
    fix = f"save the file as UTF-8 (e.g. iconv -f {guess.upper()} -t UTF-8 {path.name} > utf8-{path.name})" + (
        f", or name its encoding with {option}{guess}" + ("" if utf16 else " (or cp1252)") if option else ""
    )
    return data_error(path, None, problem, fix)


def _read_delimited(path: Path, text: str, delimiter: str | None) -> tuple[list[tuple[int, dict]], tuple[str, ...]]:
    csv.field_size_limit(_FIELD_LIMIT)
    if delimiter is None:
        sample = text[: 64 * 1024]
        delimiter = "\t" if sample.count("\t") > sample.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise data_error(path, None, "the file is empty", "write a header row and one row per example") from None
    except csv.Error as exc:
        raise data_error(path, 1, f"unreadable header ({exc})", "write a header row of column names") from None
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
        except csv.Error as exc:
            raise data_error(
                path,
                start,
                f"cannot parse the row ({exc})",
                'close every quoted field and escape inner quotes by doubling them ("")',
            ) from None
        if not values or values == [""]:
            continue  # blank line
        if len(values) != len(header):
            raise data_error(
                path,
                start,
                f"{len(values)} fields but the header has {len(header)}",
                f"quote fields that contain the delimiter {delimiter!r}, or add the missing fields",
            )
        rows.append((start, dict(zip(header, values))))
    return rows, tuple(header)


def _read_jsonl(path: Path, text: str) -> tuple[list[tuple[int, dict]], tuple[str, ...]]:
    rows, columns = [], {}
    # StringIO splits on newlines only; str.splitlines would also split at U+2028 inside a JSON string.
    for number, line in enumerate(io.StringIO(text), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise data_error(
                path, number, f"invalid JSON ({exc.msg} at column {exc.colno})", "write one JSON object per line"
            ) from None
        if not isinstance(record, dict):
            raise data_error(
                path,
                number,
                f"a JSON {type(record).__name__}, not an object",
                'write one object per line, e.g. {"text": "...", "label": 1}',
            )
        rows.append((number, record))
        columns.update(dict.fromkeys(record))
    return rows, tuple(columns)


# ----------------------------------------------------------------------------- columns and labels


def _pick(
    columns: Sequence[str],
    wanted: str | None,
    candidates: Sequence[str],
    setting: str,
    path: Path,
    option: Callable[[str], str],
) -> str | None:
    lower = {c.lower(): c for c in columns}
    if wanted is not None:
        if wanted in columns:
            return wanted
        if wanted.lower() in lower:
            return lower[wanted.lower()]
        what = setting.removesuffix("_column").replace("_", " ")
        raise data_error(
            path,
            None,
            f"no {what} column {wanted!r} (columns: {list(columns)})",
            f"pass the right name with {option(setting)}NAME",
        )
    return next((lower[c] for c in candidates if c in lower), None)


def detect_columns(
    columns: Sequence[str],
    path: Path,
    text: str | None = None,
    pair: str | None = None,
    label: str | None = None,
    option: Callable[[str], str] = cli_option,
) -> tuple[str, str | None, str]:
    """(text column, pair column or None, label column): the named ones, else found by common names
    (a pair such as sentence1 + sentence2 only when no text column is named)."""
    label_col = _pick(columns, label, LABEL_COLUMNS, "label_column", path, option)
    text_col = _pick(columns, text, (), "text_column", path, option)
    pair_col = _pick(columns, pair, (), "text_pair_column", path, option)
    if text_col is None:
        lower = {c.lower(): c for c in columns}
        for a, b in PAIR_COLUMNS:
            if a in lower and b in lower and pair_col is None:
                text_col, pair_col = lower[a], lower[b]
                break
        else:
            text_col = _pick(columns, None, TEXT_COLUMNS, "text_column", path, option)
    if text_col is None or label_col is None:
        missing = "text" if text_col is None else "label"
        raise data_error(
            path,
            None,
            f"cannot tell which column holds the {missing} (columns: {list(columns)})",
            f"name it with {option(missing + '_column')}NAME, or call it one of "
            f"{list(TEXT_COLUMNS if missing == 'text' else LABEL_COLUMNS)}",
        )
    return text_col, pair_col, label_col


def read_columns(
    records: list[tuple[int, dict]],
    path: Path,
    text: str,
    pair: str | None,
    label: str,
) -> tuple[list[str], list[str] | None, list, list[int]]:
    """(texts, second texts or None, raw labels, row numbers); a missing or empty field is an error."""
    texts, pairs, raw, rownums = [], [] if pair else None, [], []
    for number, record in records:
        for col in (text, pair, label):
            if col is not None and (record.get(col) is None or str(record[col]).strip() == ""):
                raise data_error(path, number, f"the {col!r} field is missing or empty", "fill it in or delete the row")
        texts.append(str(record[text]))
        if pairs is not None:
            pairs.append(str(record[pair]))
        raw.append(record[label])
        rownums.append(number)
    return texts, pairs, raw, rownums


def int_label(value) -> int | None:
    """``value`` as an integer label (1, 1.0, " 1"), or None when it is not one (True is not)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def label_ids(
    raw: list,
    rownums: list[int],
    path: Path,
    label_map: Mapping[str, int] | None = None,
    option: Callable[[str], str] = cli_option,
) -> tuple[list[int], list[str] | None]:
    """Integer labels, and the index -> name list when the labels were strings: through ``label_map``
    when given, else integers as they are, else strings numbered in sorted order."""
    ints = [int_label(v) for v in raw]
    if label_map is not None:
        mapping = {str(k): int(v) for k, v in label_map.items()}
        out = []
        for value, row in zip(raw, rownums):
            key = str(value).strip()
            if key not in mapping:
                raise data_error(
                    path,
                    row,
                    f"label {key!r} is not in the label map {sorted(mapping)}",
                    f"add it to the label map ({option('label_map')}...) or fix the row",
                )
            out.append(mapping[key])
        return out, None
    if all(i is not None for i in ints):
        return ints, None  # type: ignore[return-value]
    names = sorted({str(v).strip() for v in raw})
    index = {n: i for i, n in enumerate(names)}
    return [index[str(v).strip()] for v in raw], names


__all__ = [
    "DataError",
    "FORMATS",
    "LABEL_COLUMNS",
    "PAIR_COLUMNS",
    "TEXT_COLUMNS",
    "cli_option",
    "data_error",
    "decode",
    "detect_columns",
    "int_label",
    "label_ids",
    "read_columns",
    "read_records",
    "setting_option",
    "supported_formats",
]

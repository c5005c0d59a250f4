"""fedhft.datafile: the user-file reader shared by the edge runtime and the simulation."""

from __future__ import annotations

import csv
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedhft.datafile import DataError, read_records

# Any text a user may have, quotes, delimiters and newlines included (csv quotes them).
TEXTS = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"), min_size=1, max_size=40)
ROWS = st.lists(st.tuples(TEXTS.filter(lambda t: t.strip()), st.integers(0, 9)), min_size=1, max_size=12)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(rows=ROWS, suffix=st.sampled_from([".csv", ".tsv", ".jsonl"]))
def test_written_rows_read_back_exactly(tmp_path, rows, suffix):
    path = tmp_path / f"d{suffix}"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        if suffix == ".jsonl":
            fh.writelines(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows)
        else:
            writer = csv.writer(fh, delimiter="\t" if suffix == ".tsv" else ",")
            writer.writerow(["text", "label"])
            writer.writerows(rows)
    records, columns = read_records(path)
    assert columns == ("text", "label")
    assert [(r["text"], int(r["label"])) for _, r in records] == rows
    numbers = [n for n, _ in records]
    assert numbers == sorted(numbers) and numbers[0] == (1 if suffix == ".jsonl" else 2)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("a.csv", 'text,label\n"open quote,1\n', "row 2: cannot parse the row"),
        ("b.csv", "text,label\nfine,1,extra\n", "row 2: 3 fields but the header has 2"),
        ("c.csv", "text,text\nx,y\n", "row 1: the header ['text', 'text'] has empty or repeated column names"),
        ("d.jsonl", '{"text": "a", "label": 1}\n[1, 2]\n', "row 2: a JSON list, not an object"),
        ("e.jsonl", '{"text": "a"\n', "row 1: invalid JSON"),
        ("f.parquet", "x", "unknown file type '.parquet'"),
        ("g.csv", "", "the file is empty"),
    ],
)
def test_bad_files_name_the_row_and_the_fix(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match="Fix: ") as err:
        read_records(tmp_path / name)
    assert message in str(err.value) and name in str(err.value)


def test_a_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_records(tmp_path / "nope.tsv")

"""fedhft.datafile: files that are not UTF-8, and files of an unknown type, give a DataError that
names the file, where the bad byte is (byte offset and line, not the row being parsed) and the fix."""

from __future__ import annotations

import pytest

from fedhft.datafile import DataError, read_records

# 200 plain rows (several KB), then one latin-1 "é": the bad byte is far past the first read buffer.
PLAIN = "text\tlabel\n" + "".join(f"a plain review number {i}\t{i % 2}\n" for i in range(200))
LATIN = PLAIN + "caf\u00e9 au lait\t1\n"


def _latin1(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(LATIN.encode("latin-1"))
    return path


@pytest.mark.parametrize("name", ["far.tsv", "far.txt", "far.csv"])
def test_a_latin1_byte_is_reported_at_its_byte_offset_and_line(tmp_path, name):
    path = _latin1(tmp_path, name)
    offset = len(PLAIN.encode()) + len("caf")
    with pytest.raises(DataError) as err:
        read_records(path)
    msg = str(err.value)
    assert str(path) in msg and f"byte offset {offset}" in msg and "line 202" in msg and "0xe9" in msg
    assert "row 1" not in msg and "Fix: save the file as UTF-8" in msg


def test_the_fix_names_the_encoding_setting_when_the_caller_has_one(tmp_path):
    with pytest.raises(DataError, match=r"or name its encoding with data_encoding=latin-1"):
        read_records(_latin1(tmp_path, "x.tsv"), encoding_option="data_encoding=")


def test_an_encoding_reads_the_file(tmp_path):
    records, columns = read_records(_latin1(tmp_path, "x.tsv"), encoding="latin-1")
    assert columns == ("text", "label") and records[-1] == (202, {"text": "caf\u00e9 au lait", "label": "1"})


def test_a_utf8_bom_is_skipped_and_counted_in_the_offset(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbftext,label\nok,1\nbad \xff,0\n")
    with pytest.raises(DataError, match=r"byte offset 23 \(line 3, byte 5 of the line\)"):
        read_records(path)


def test_a_utf16_file_is_named_as_such(tmp_path):
    path = tmp_path / "excel.txt"
    path.write_bytes("text\tlabel\nok\t1\n".encode("utf-16"))
    with pytest.raises(DataError, match="UTF-16 byte-order mark.*encoding=utf-16"):
        read_records(path, encoding_option="encoding=")
    assert read_records(path, encoding="utf-16")[0] == [(2, {"text": "ok", "label": "1"})]


def test_an_unknown_encoding_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="unknown encoding 'klingon'"):
        read_records(_latin1(tmp_path, "x.tsv"), encoding="klingon")


@pytest.mark.parametrize("name", ["data.parquet", "data.xlsx", "data"])
def test_an_unknown_extension_names_the_supported_formats(tmp_path, name):
    (tmp_path / name).write_text("text,label\nx,1\n")
    with pytest.raises(DataError) as err:
        read_records(tmp_path / name)
    msg = str(err.value)
    assert "unknown file type" in msg and name in msg
    assert all(s in msg for s in (".tsv", ".csv", ".txt", ".jsonl", "tab-separated", "one JSON object per line"))

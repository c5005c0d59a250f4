from fedhft.jsonlines import read_jsonl


def test_missing_file_is_empty(tmp_path):
    assert read_jsonl(tmp_path / "metrics.jsonl") == []


def test_a_torn_line_is_skipped_and_complete_ones_kept(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"round": 0, "stored": 3}\n{"round": 1, "sto\n{"round": 2, "stored": 1}\n', encoding="utf-8")
    assert read_jsonl(path) == [{"round": 0, "stored": 3}, {"round": 2, "stored": 1}]

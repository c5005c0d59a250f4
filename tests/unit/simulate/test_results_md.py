"""benchmarks/RESULTS.md is rebuilt from the result folders; each section keeps its own stamp."""

from __future__ import annotations

import json
import os

from simulate import _results_md, host_label


def _fake_results(tmp_path, monkeypatch):
    results = tmp_path / "results"
    monkeypatch.setattr(_results_md, "RESULTS_DIR", results)
    monkeypatch.setattr(_results_md, "RESULTS_MD", tmp_path / "RESULTS.md")
    for name in ("comm", "accuracy"):
        (results / name).mkdir(parents=True)
        (results / name / f"{name}.md").write_text(f"| {name} table |\n")
    return results


def test_a_finished_benchmark_is_stamped_and_others_keep_their_stamp(tmp_path, monkeypatch):
    results = _fake_results(tmp_path, monkeypatch)
    (results / "comm" / "comm.json").write_text(
        json.dumps({"command": "fedhft bench comm", "written": "2020-01-02 03:04 UTC"})
    )
    (results / "accuracy" / "accuracy.json").write_text(json.dumps({"command": "fedhft bench accuracy", "wall_s": 12}))
    os.utime(results / "comm" / "comm.json", (0, 0))  # a clone resets file times: the stamp must not come from them

    assert _results_md.update_results_md(results / "accuracy") == tmp_path / "RESULTS.md"
    text = (tmp_path / "RESULTS.md").read_text()
    doc = json.loads((results / "accuracy" / "accuracy.json").read_text())
    assert doc["host"]["versions"]["torch"].startswith("2.")  # the machine that wrote it
    assert f"written {doc['written']} on {host_label(doc['host'])}" in text
    assert "written 2020-01-02 03:04 UTC\n" in text  # a document from before the host record names none
    assert "| accuracy table |" in text and "| comm table |" in text
    assert "Not run yet: `fedhft bench personalization`" in text


def test_a_scratch_folder_leaves_results_md_alone(tmp_path, monkeypatch):
    _fake_results(tmp_path, monkeypatch)
    assert _results_md.update_results_md(tmp_path / "elsewhere") is None
    assert not (tmp_path / "RESULTS.md").exists()


def test_a_sections_hand_written_notes_follow_its_generated_table_and_survive_a_rewrite(tmp_path, monkeypatch):
    results = _fake_results(tmp_path, monkeypatch)
    for name in ("comm", "accuracy"):
        (results / name / f"{name}.json").write_text(json.dumps({"command": f"fedhft bench {name}"}))
    (results / "comm" / "notes.md").write_text("Why the sizing changed.\n")
    for _ in range(2):
        _results_md.update_results_md(results / "comm")
        text = (tmp_path / "RESULTS.md").read_text()
        assert text.count("Why the sizing changed.") == 1
        assert text.index("| comm table |") < text.index("Why the sizing changed.")

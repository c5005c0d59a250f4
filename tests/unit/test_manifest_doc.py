"""docs/MANIFEST.md names every key a manifest holds: the top-level fields, the keys of each section
(in that section of the document), and each backend's ``backend_extras``. A key the code writes that
the document does not mention fails here.

The keys come from the code that writes them: ``Manifest.to_dict`` of a manifest made in code, the
torch compiler run on a stand-in model, ``method_spec`` for the ExecuTorch optimizer method. The ORT
and ExecuTorch extras exist only after a real export, so their checks sit beside the export
fixtures (tests/unit/export/test_ort_backend.py and test_et_backend.py) and call
``undocumented_extras`` from here.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

from devices import AdapterPlan
from fedhft.layout import ModelDims
from fedhft.manifest import FileEntry, InputSpec, Manifest, OptimizerSpec, TokenizerSpec

ROOT = Path(__file__).resolve().parents[2]
TEXT = (ROOT / "docs" / "MANIFEST.md").read_text(encoding="utf-8")
TOP = "Top-level fields"
#: Manifest sections with a section of their own in the document (named by the key).
SECTIONS = ("mask", "task", "tokenizer", "optimizer", "initial_weights", "update")
#: Top-level keys whose object (or list entry) the top-level table's row describes.
ROWS = ("base_model", "plan", "dims", "quantization")
#: backend_extras entries that are records (fixed keys, documented in the named section), not maps
#: keyed by tensor names or dtypes (onnx_names, param_to_canonical, torch_names, ...).
EXTRA_RECORDS = {
    "ort": {"training_graph": "ort", "eval_graph": "ort", "inference_graph": "ort", "optimizer": "ort"},
    "executorch": {"training_methods": "executorch", "optimizer_method": "optimizer_method"},
    "torch": {"weights_format": "torch"},
}


def section(doc: str, title: str) -> str:
    """The text under the one heading that is ``title`` or starts with `title`, up to the next heading."""
    parts = re.split(r"^(#+ .*)$", doc, flags=re.M)
    found = [
        body
        for heading, body in zip(parts[1::2], parts[2::2])
        if heading.lstrip("#").strip() == title or heading.lstrip("#").strip().startswith(f"`{title}`")
    ]
    assert len(found) == 1, f"docs/MANIFEST.md has {len(found)} headings for {title!r}"
    return found[0]


def row(doc: str, key: str) -> str:
    """The top-level table's row of ``key``."""
    found = [line for line in section(doc, TOP).splitlines() if line.startswith(f"| `{key}` |")]
    assert len(found) == 1, f"the top-level table has {len(found)} rows for {key!r}"
    return found[0]


def mentioned(text: str, key: str) -> bool:
    """``key`` is written as code in ``text``: `key`, or a word of a code span (`key: value`, `a.key`)."""
    word = re.compile(r"(?<!\w)" + re.escape(key) + r"(?!\w)")
    return any(word.search(span) for span in re.findall(r"`([^`\n]+)`", text))


def undocumented(text: str, keys) -> list[str]:
    return sorted({str(k) for k in keys if not mentioned(text, str(k))})


def undocumented_extras(backend: str, extras: dict, doc: str = TEXT) -> list[str]:
    """The backend_extras keys (and the keys of its records) that the backend's section lacks."""
    missing = undocumented(section(doc, backend), extras)
    for key, where in EXTRA_RECORDS[backend].items():
        missing += [f"{key}.{k}" for k in undocumented(section(doc, where), extras.get(key) or {})]
    return missing


def _manifest_dict() -> dict:
    """A manifest as export writes it: every section filled (tokenizer, a shipped checkpoint, quantization)."""
    from export._api import quantization_report

    plan = AdapterPlan(depth=1, ranks=(2,), mask_density=0.5, max_seq_len=16, batch_size=4)
    dims = ModelDims(num_layers=2, hidden=8, intermediate=16, num_labels=3)
    bounds = {"batch": [1, 4], "seq": [8, 16]}
    stand_in = SimpleNamespace(plan=plan, encoder=SimpleNamespace(state_dict=dict))
    manifest = Manifest(
        "ort",
        "small",
        plan,
        dims,
        "tiny:hidden=8",
        "0" * 64,
        (InputSpec("input_ids", "int64", ("batch", "seq"), bounds), InputSpec("mask", "float32", (16,), {})),
        {"checkpoint": FileEntry("0" * 64, 7, "checkpoint"), "tokenizer.json": FileEntry("1" * 64, 9, "tokenizer")},
        quantization=quantization_report(stand_in, 0),
        tokenizer=TokenizerSpec("tokenizer.json", 16, 8, 0, "[PAD]"),
        optimizer=OptimizerSpec(runs_in="optimizer_model.onnx"),
        init_seed=7,
    )
    return manifest.to_dict()


def test_every_top_level_key_is_in_the_top_level_table():
    d = _manifest_dict()
    assert undocumented(section(TEXT, TOP), d) == []
    assert all(row(TEXT, key) for key in d)


def test_every_key_of_each_section_is_in_its_section():
    d = _manifest_dict()
    for key in SECTIONS:
        assert undocumented(section(TEXT, key), d[key]) == [], key
    assert undocumented(section(TEXT, "mask"), d["mask"]["layout"][0]) == []
    assert undocumented(section(TEXT, "task"), d["task"]["labels"]) == []
    assert undocumented(section(TEXT, "inputs"), d["inputs"][0]) == []


def test_the_objects_the_top_level_table_describes():
    d = _manifest_dict()
    for key in ROWS:
        assert undocumented(row(TEXT, key), d[key]) == [], key
    assert undocumented(row(TEXT, "trainable"), d["trainable"][0]) == []
    assert undocumented(row(TEXT, "files"), d["files"]["checkpoint"]) == []


def test_the_torch_extras_as_the_torch_compiler_writes_them(tmp_path):
    from export import _torch_backend

    model = SimpleNamespace(
        torch_names=lambda: {"head.weight": "head.weight"},
        encoder=SimpleNamespace(state_dict=dict, config=SimpleNamespace(to_dict=dict)),
    )
    ctx = SimpleNamespace(model=model, progress=lambda message: None, input_specs=lambda dynamic: ())
    extras = _torch_backend.compile_bundle(ctx, tmp_path).extras
    assert "weights_format" in extras  # the compiler ran: its real extras, not an empty stand-in
    assert undocumented_extras("torch", extras) == []


def test_the_executorch_optimizer_method():
    from export._et_adamw import method_spec

    spec = method_spec(3)
    text = section(TEXT, "optimizer_method")
    assert undocumented(text, spec) == []
    assert undocumented(text, {k for entry in spec["inputs"] + spec["outputs"] for k in entry}) == []
    assert undocumented(text, spec["hyperparameters"]) == [] and undocumented(text, spec["state"]) == []


def test_a_key_the_document_lost_is_named():
    d = _manifest_dict()
    lost_tier = TEXT.replace("| `tier` |", "| tier |")
    assert undocumented(section(lost_tier, TOP), d) == ["tier"]
    lost_draw = TEXT.replace("| `draw_order` |", "| draw_order |")
    assert undocumented(section(lost_draw, "initial_weights"), d["initial_weights"]) == ["draw_order"]
    extras = {"training_graph": {"file": "t", "loss_output": "l"}, "onnx_names": {}, "opset": 16}
    assert undocumented_extras("ort", extras) == []
    lost_extra = TEXT.replace("`onnx_names`", "onnx names")
    assert undocumented_extras("ort", extras, lost_extra) == ["onnx_names"]
    lost_record_key = TEXT.replace("`loss_output`", "loss output")
    assert undocumented_extras("ort", extras, lost_record_key) == ["training_graph.loss_output"]
    # a key mentioned only in another backend's section is still missing from this one
    assert undocumented_extras("torch", {"param_order": []}) == ["param_order"]


def test_the_update_spec_link_resolves_to_an_anchor_in_protocol_md():
    """Every manifest points an app at ``update.spec`` for the update format: the file and its anchor exist."""
    from fedhft.manifest import UPDATE_SPEC

    path, _, anchor = UPDATE_SPEC.partition("#")
    assert anchor, f"{UPDATE_SPEC} names no section"
    assert f'<a id="{anchor}"></a>' in (ROOT / path).read_text(), f"{path} has no anchor '{anchor}' (update.spec)"

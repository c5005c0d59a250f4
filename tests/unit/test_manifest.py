"""Manifest schema 2: round trip, the refusal of schema-1 bundles (naming the export command that
replaces them), the tokenizer bound, and the fixed semantics a manifest must state."""

import json

import pytest

from devices import AdapterPlan
from fedhft.layout import ModelDims
from fedhft.manifest import (
    ADAM_BETAS,
    ADAM_EPS,
    MANIFEST_NAME,
    SCHEMA_VERSION,
    WEIGHT_DECAY,
    BundleError,
    InputSpec,
    Manifest,
    OptimizerSpec,
    TokenizerSpec,
    file_entry,
    load_manifest,
    write_manifest,
)

PLAN = AdapterPlan(depth=1, ranks=(2,), mask_density=0.5, max_seq_len=16, batch_size=4)
DIMS = ModelDims(num_layers=2, hidden=8, intermediate=16, num_labels=3)
BOUNDS = {"batch": [1, 4], "seq": [8, 16]}
INPUTS = (
    InputSpec("input_ids", "int64", ("batch", "seq"), BOUNDS),
    InputSpec("attention_mask", "int64", ("batch", "seq"), BOUNDS),
    InputSpec("labels", "int64", ("batch",), {"batch": [1, 4]}),
    InputSpec("mask", "float32", (16,), {}),
)


def _tokenizer_file(path, length: int) -> None:
    """A tiny word-level tokenizer that truncates and pads to ``length`` (what export writes)."""
    import tokenizers
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    tok = tokenizers.Tokenizer(WordLevel({"[PAD]": 0, "[UNK]": 1, "good": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    tok.enable_truncation(max_length=length)
    tok.enable_padding(length=length, pad_id=0, pad_token="[PAD]")
    tok.save(str(path))


def _bundle(tmp_path, tokenizer_length: int = 16, backend: str = "ort"):
    bundle = tmp_path / "bundles" / "small" / backend
    bundle.mkdir(parents=True)
    _tokenizer_file(bundle / "tokenizer.json", tokenizer_length)
    (bundle / "checkpoint").write_bytes(b"weights")
    manifest = Manifest(
        backend,
        "small",
        PLAN,
        DIMS,
        "tiny:hidden=8",
        "0" * 64,
        INPUTS,
        {
            "tokenizer.json": file_entry(bundle, "tokenizer.json", "tokenizer"),
            "checkpoint": file_entry(bundle, "checkpoint", "checkpoint"),
        },
        backend_extras={"training_graph": {"inputs": ["input_ids", "attention_mask", "mask"]}},
        tokenizer=TokenizerSpec("tokenizer.json", 16, 8, 0, "[PAD]"),
        optimizer=OptimizerSpec(runs_in="optimizer_model.onnx"),
        init_seed=7,
    )
    write_manifest(bundle, manifest)
    return bundle, manifest


def _rewrite(bundle, edit) -> None:
    raw = json.loads((bundle / MANIFEST_NAME).read_text())
    edit(raw)
    (bundle / MANIFEST_NAME).write_text(json.dumps(raw))


def test_schema_2_round_trips_every_field(tmp_path):
    bundle, manifest = _bundle(tmp_path)
    loaded = load_manifest(bundle)
    assert loaded == manifest and loaded.to_dict() == manifest.to_dict()
    raw = json.loads((bundle / MANIFEST_NAME).read_text())
    assert raw["schema_version"] == SCHEMA_VERSION == 2
    assert raw["mask"]["values"] == [0.0, 1.0] and raw["mask"]["selects"] == "lora_B_rows"
    assert raw["task"]["loss"] == "mean_cross_entropy" and raw["task"]["labels"]["range"] == [0, 2]
    assert raw["tokenizer"]["max_length"] == 16 and raw["tokenizer"]["file"] == "tokenizer.json"
    opt = raw["optimizer"]
    assert (tuple(opt["betas"]), opt["eps"], opt["weight_decay"]) == (ADAM_BETAS, ADAM_EPS, WEIGHT_DECAY)
    assert opt["state"] == "fresh_each_round" and opt["runs_in"] == "optimizer_model.onnx"
    assert raw["initial_weights"]["seed"] == 7 and raw["initial_weights"]["shipped_in"] == "checkpoint"
    assert raw["update"]["spec"].startswith("docs/PROTOCOL.md")


def test_a_manifest_made_in_code_without_files_round_trips(tmp_path):
    bare = Manifest("torch", "small", PLAN, DIMS, "t", "0" * 64, (), {})
    write_manifest(tmp_path, bare)
    assert load_manifest(tmp_path) == bare and bare.tokenizer is None


def test_schema_1_is_refused_with_the_export_command(tmp_path):
    bundle, _ = _bundle(tmp_path)

    def to_v1(raw):
        raw["schema_version"] = 1
        for key in ("task", "tokenizer", "optimizer", "initial_weights", "update"):
            raw.pop(key)

    _rewrite(bundle, to_v1)
    with pytest.raises(BundleError) as err:
        load_manifest(bundle)
    message = str(err.value)
    assert "schema_version 1 is no longer supported" in message and "128" in message
    assert (
        f"`fedhft export --model tiny:hidden=8 --num-labels 3 --tier small --backend ort --out {tmp_path / 'bundles'}`"
    ) in message


def test_a_tokenizer_longer_than_the_bound_is_refused(tmp_path):
    bundle, _ = _bundle(tmp_path, tokenizer_length=128)  # the schema-1 trap: 128 tokens for a 16-token bundle
    with pytest.raises(BundleError, match="truncates to 128 and pads to 128 tokens, the bundle accepts at most 16"):
        load_manifest(bundle)
    assert load_manifest(bundle, verify_files=False).tokenizer.max_length == 16


def test_the_tokenizer_bound_must_equal_the_input_bound(tmp_path):
    bundle, _ = _bundle(tmp_path)
    _rewrite(bundle, lambda raw: raw["tokenizer"].update(max_length=32))
    with pytest.raises(BundleError, match=r"tokenizer lengths \[8, 32\] differ from the bundle's sequence bounds"):
        load_manifest(bundle, verify_files=False)


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("task", "loss", "sum_cross_entropy"),
        ("mask", "values", [0, 0.5, 1]),
        ("optimizer", "state", "carried_over"),
        ("optimizer", "name", "SGD"),
    ],
)
def test_other_training_semantics_are_refused(tmp_path, section, key, value):
    bundle, _ = _bundle(tmp_path)
    _rewrite(bundle, lambda raw: raw[section].update({key: value}))
    with pytest.raises(BundleError, match="manifest is malformed.*re-export the bundle"):
        load_manifest(bundle, verify_files=False)


def test_backends_is_the_devices_list():
    import devices
    from fedhft import manifest

    assert manifest.BACKENDS is devices.BACKENDS

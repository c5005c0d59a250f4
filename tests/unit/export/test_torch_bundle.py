"""Torch backend bundles, the manifest contract and the bad-input errors of `fedhft export`."""

import json
import shutil

import pytest
import torch

from devices import AdapterPlan
from bundle_runtime import build_adapter_model, expected_layout
from export import export_bundle, load_encoder, resolve_model, verify_bundle
from fedhft.layout import full_mask, init_trainable
from fedhft.manifest import BundleError, load_manifest

PLAN = AdapterPlan(depth=2, ranks=(2, 4), mask_density=0.5, max_seq_len=32, batch_size=4)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles")
    return {
        p: export_bundle(
            "tiny",
            3,
            f"t-{p}",
            AdapterPlan(**{**PLAN.to_dict(), "precision": p}),
            "torch",
            out,
            progress=lambda m: None,
        )
        for p in ("fp32", "int8")
    }


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_torch_bundle_matches_eager(bundles, precision):
    report = verify_bundle(bundles[precision].bundle_dir, steps=3)
    assert report.ok, report.problems
    assert report.losses_backend[-1] < report.losses_backend[0]  # it trains


def test_int8_bundle_is_smaller_and_reports_savings(bundles):
    fp32, int8 = bundles["fp32"], bundles["int8"]
    assert int8.size_bytes < 0.5 * fp32.size_bytes
    q = int8.manifest.quantization
    assert q["precision"] == "int8" and q["bytes_saved"] > 0.6 * q["backbone_bytes_fp32"]


def test_manifest_records_layout_files_and_inputs(bundles):
    m = load_manifest(bundles["fp32"].bundle_dir)
    raw = json.loads((bundles["fp32"].bundle_dir / "manifest.json").read_text())
    assert raw["schema_version"] == 2 and raw["base_model"]["id"].startswith("tiny:")
    assert [t["name"] for t in raw["trainable"]][:2] == ["layer0.query.lora_A", "layer0.query.lora_B"]
    assert raw["mask"]["length"] == m.mask_length == 2 * 2 * 64
    assert {i.name for i in m.inputs} == {"input_ids", "attention_mask", "labels", "mask"}
    assert m.files_with_role("tokenizer") == ["tokenizer.json"] and all(len(e.sha256) == 64 for e in m.files.values())
    assert m.optimizer.runs_in == "app" and raw["initial_weights"]["shipped_in"] is None


def test_the_bundle_ships_no_trainable_weights_as_its_manifest_states(bundles):
    """initial_weights.shipped_in is null for torch: backbone.safetensors holds none of the trainable
    tensors (the device takes them all from the task's start state), only the frozen layers they adapt."""
    from safetensors import safe_open

    for result in bundles.values():
        bundle, m = result.bundle_dir, result.manifest
        assert json.loads((bundle / "manifest.json").read_text())["initial_weights"]["shipped_in"] is None
        with safe_open(str(bundle / "backbone.safetensors"), "np") as f:
            stored = set(f.keys())
        # AdapterModel names the encoder's tensors "encoder.<the encoder's state_dict name>"
        trainable = {name.removeprefix("encoder.") for name in m.backend_extras["torch_names"].values()}
        assert len(trainable) == len(m.trainable) and not stored & trainable
        for name in trainable - {"head.weight", "head.bias"}:
            module = name.rsplit(".", 1)[0]  # the adapted layer, whose frozen weight is stored
            assert {f"{module}.base.weight", f"{module}.base.weight_int8"} & stored, module


def test_the_one_tokenizer_file_pads_and_truncates_to_the_bundle_bound(bundles):
    from tokenizers import Tokenizer

    m = bundles["fp32"].manifest
    tok = Tokenizer.from_file(str(bundles["fp32"].bundle_dir / m.tokenizer.file))
    long, short = tok.encode("good " * 200), tok.encode("good")
    assert len(long.ids) == len(short.ids) == m.tokenizer.max_length == PLAN.max_seq_len
    assert short.attention_mask[:3] == [1, 1, 1] and short.attention_mask[3:] == [0] * (PLAN.max_seq_len - 3)
    assert short.ids[3] == m.tokenizer.pad_id


def test_weights_file_is_world_readable_like_the_others(bundles):
    bundle = bundles["int8"].bundle_dir
    assert (bundle / "backbone.safetensors").stat().st_mode & 0o777 == (bundle / "config.json").stat().st_mode & 0o777


def test_int8_weight_keys_follow_the_manifest_format(bundles):
    from safetensors import safe_open

    m = bundles["int8"].manifest
    fmt = m.backend_extras["weights_format"]
    with safe_open(str(bundles["int8"].bundle_dir / "backbone.safetensors"), "np") as f:
        keys = {k: f.get_slice(k).get_dtype() for k in f.keys()}
    query = f"encoder.layer.{m.dims.num_layers - 1}.attention.self.query.base"  # an adapted (LoRA-wrapped) layer
    assert keys[fmt["int8_linear"]["weight"].replace("<module>", query)] == "I8"
    assert keys[fmt["int8_linear"]["scale"].replace("<module>", query)] == "F32"
    assert keys["embeddings.word_embeddings.weight_int8"] == "I8"  # 30522 rows >= min_rows
    assert keys["embeddings.position_embeddings.weight"] == "F32"  # 512 rows: stays fp32
    assert not any(".lora_" in k for k in keys)


def test_masked_rows_do_not_move_and_mask_is_an_input():
    model = build_adapter_model(load_encoder(resolve_model("tiny")), PLAN, 2)
    expected_layout(model)
    state = init_trainable(PLAN, model.dims, 1)
    state = {k: (v + 0.05 if k.endswith("lora_B") else v) for k, v in state.items()}
    model.set_trainable(state)
    # Fixed token ids (not the global RNG's, which earlier tests leave in any state), and the logits, not the
    # mean loss: for some pairs of examples the adapters' effects on the two losses cancel to the last bit.
    ids = torch.randint(1000, 2000, (2, 8), generator=torch.Generator().manual_seed(0))
    attn, labels = torch.ones(2, 8, dtype=torch.long), torch.tensor([0, 1])
    ones, zeros = torch.tensor(full_mask(PLAN, model.dims)), torch.zeros(len(full_mask(PLAN, model.dims)))
    with torch.no_grad():
        moved = (model.logits(ids, attn, ones) - model.logits(ids, attn, zeros)).abs().max()
    assert float(moved) > 1e-5  # the mask is an input: zeroing it removes every adapter's effect
    loss, _ = model(ids, attn, labels, zeros)
    loss.backward()
    grads = dict((n, p.grad) for n, p in model.trainable())
    assert all(float(grads[n].abs().max()) == 0.0 for n in grads if n.endswith("lora_B"))
    assert float(grads["head.weight"].abs().max()) > 0


def test_only_adapters_and_head_are_trainable():
    model = build_adapter_model(load_encoder(resolve_model("tiny")), PLAN, 2)
    trainable = {id(p) for _, p in model.trainable()}
    assert all(not p.requires_grad for p in model.parameters() if id(p) not in trainable)


def test_unknown_tier_lists_known_tiers():
    from export._commands import export_command

    with pytest.raises(ValueError, match="android-low"):
        export_command("tiny", 2, "android-ultra", "torch", "/tmp/unused")


def test_model_dir_missing_files_names_them(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(FileNotFoundError, match="model.safetensors or pytorch_model.bin.*save_pretrained"):
        resolve_model(str(tmp_path))


def test_unsupported_architecture_is_named(tmp_path):
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (tmp_path / name).write_text(json.dumps({"model_type": "gpt2"}) if name == "config.json" else "x")
    with pytest.raises(ValueError, match="unsupported architecture model_type='gpt2'"):
        resolve_model(str(tmp_path))


def test_plan_deeper_than_model_fails_before_compiling(tmp_path):
    deep = AdapterPlan(depth=3, ranks=(1, 1, 1), mask_density=1.0, max_seq_len=16, batch_size=2)
    with pytest.raises(ValueError, match="deeper than the model's 2 layers"):
        export_bundle("tiny", 2, "deep", deep, "torch", tmp_path, progress=lambda m: None)


def test_corrupted_bundle_file_is_named(bundles, tmp_path):
    from bundle_runtime import open_session

    bad = tmp_path / "bad"
    shutil.copytree(bundles["int8"].bundle_dir, bad)
    with open(bad / "backbone.safetensors", "r+b") as f:
        f.seek(200)
        f.write(b"\x00\x01\x02")
    with pytest.raises(BundleError, match="backbone.safetensors sha256 does not match"):
        open_session(bad)
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_manifest(bad)


def test_future_manifest_schema_is_refused(bundles, tmp_path):
    bad = tmp_path / "future"
    shutil.copytree(bundles["fp32"].bundle_dir, bad)
    raw = json.loads((bad / "manifest.json").read_text())
    raw["schema_version"] = 99
    (bad / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="schema_version 99 is not supported"):
        load_manifest(bad)


@pytest.mark.parametrize(
    "backend, blocked, extra", [("ort", "onnxruntime", "ort"), ("executorch", "executorch", "executorch")]
)
def test_missing_backend_names_the_extra(backend, blocked, extra):
    import subprocess
    import sys

    code = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        f"from export._api import backend_compiler\n"
        f"try:\n    backend_compiler({backend!r})\nexcept ImportError as e:\n    print(e)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert f"pip install 'fedhft[{extra}]'" in out

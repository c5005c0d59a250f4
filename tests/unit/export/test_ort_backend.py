"""ORT training bundles: parity with eager, int8 storage, and the graph properties parity relies on."""

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime.training", reason="the ort extra is missing: pip install 'fedhft[ort]'")
onnx = pytest.importorskip("onnx")

from devices import AdapterPlan  # noqa: E402
from export import export_bundle, verify_bundle  # noqa: E402
from fedhft.manifest import load_manifest  # noqa: E402

PLAN = AdapterPlan(depth=2, ranks=(4, 8), mask_density=0.5, max_seq_len=32, batch_size=4)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    out = tmp_path_factory.mktemp("ort-bundles")
    return {
        p: export_bundle(
            "tiny", 2, f"t-{p}", AdapterPlan(**{**PLAN.to_dict(), "precision": p}), "ort", out, progress=lambda m: None
        )
        for p in ("fp32", "int8")
    }


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_ort_bundle_matches_eager(bundles, precision):
    report = verify_bundle(bundles[precision].bundle_dir, steps=3)
    assert report.ok, report.problems
    assert report.max_loss_diff < 1e-5 and report.max_param_diff < 1e-5  # rounding only
    assert report.max_frozen_move == 0.0
    assert report.losses_backend[-1] < report.losses_backend[0]  # it trains


def test_int8_weights_stay_int8_in_the_checkpoint(bundles):
    size = {p: (b.bundle_dir / "checkpoint").stat().st_size for p, b in bundles.items()}
    assert size["int8"] < 0.4 * size["fp32"], size
    assert bundles["int8"].size_bytes < 0.5 * bundles["fp32"].size_bytes
    inference = onnx.load(str(bundles["int8"].bundle_dir / "inference_model.onnx"))
    int8 = [i for i in inference.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert any(i.name.endswith("word_embeddings.weight_int8") for i in int8)
    # rows are looked up in int8 and then cast, instead of dequantizing the whole table every step
    training = onnx.load(str(bundles["int8"].bundle_dir / "training_model.onnx")).graph
    table = [n for n in training.node if any(i.endswith("word_embeddings.weight_int8") for i in n.input)]
    assert [n.op_type for n in table] == ["Gather"]


@pytest.mark.parametrize("name", ["training_model.onnx", "eval_model.onnx", "inference_model.onnx"])
def test_mask_is_a_live_graph_input(bundles, name):
    graph = onnx.load(str(bundles["fp32"].bundle_dir / name)).graph
    assert "mask" in [i.name for i in graph.input]
    assert "mask" not in {i.name for i in graph.initializer}
    assert any("mask" in node.input for node in graph.node)


def test_optimizer_is_torch_adamw_and_ir_version_is_loadable(bundles):
    bundle = bundles["fp32"].bundle_dir
    model = onnx.load(str(bundle / "optimizer_model.onnx"))
    (node,) = [n for n in model.graph.node if n.op_type == "AdamWOptimizer"]
    from fedhft.manifest import ADAM_BETAS, ADAM_EPS, WEIGHT_DECAY

    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["adam_mode"] == 0 and attrs["correct_bias"] == 1  # torch semantics, bias-corrected
    assert (attrs["alpha"], attrs["beta"]) == pytest.approx(ADAM_BETAS)
    assert attrs["epsilon"] == pytest.approx(ADAM_EPS) and attrs["weight_decay"] == WEIGHT_DECAY
    for name in ("training_model.onnx", "eval_model.onnx", "optimizer_model.onnx", "inference_model.onnx"):
        assert onnx.load(str(bundle / name), load_external_data=False).ir_version <= 10


def test_manifest_records_parameter_order_and_roles(bundles):
    m = load_manifest(bundles["int8"].bundle_dir)
    extras = m.backend_extras
    assert sorted(extras["param_order"]) == sorted(s.name for s in m.trainable)
    assert extras["optimizer"]["adam_mode"] == 0 and m.optimizer.runs_in == "optimizer_model.onnx"
    assert extras["inference_graph"]["inputs"] == ["input_ids", "attention_mask", "mask"]
    # the feed order and the loss name are the graphs' own (labels after mask; the loss name is made by ORT)
    for key, name in (("training_graph", "training_model.onnx"), ("eval_graph", "eval_model.onnx")):
        graph = onnx.load(str(bundles["int8"].bundle_dir / name), load_external_data=False).graph
        params = set(extras["onnx_names"].values()) | {i.name for i in graph.initializer}
        feeds = [i.name for i in graph.input if not i.name.startswith("inner.") and i.name not in params]
        feeds = [f for f in feeds if f != "lazy_reset_grad"]  # fed by ORT's Module itself
        assert extras[key]["inputs"] == feeds == ["input_ids", "attention_mask", "mask", "labels"]
        assert extras[key]["outputs"] == [o.name for o in graph.output][:2]
        assert extras[key]["loss_output"].startswith("onnx::loss::") and extras[key]["logits_output"] == "logits"
    for role in ("training_model", "eval_model", "optimizer_model", "checkpoint", "inference_model", "tokenizer"):
        assert m.files_with_role(role), role


def test_inference_model_runs_in_a_plain_session_and_matches_the_eval_graph(bundles):
    import onnxruntime

    from bundle_runtime import open_session

    bundle = bundles["fp32"].bundle_dir
    session = open_session(bundle)
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 2000, size=(3, 12), dtype=np.int64)
    attn = np.ones_like(ids)
    mask = np.ones(session.manifest.mask_length, dtype=np.float32)
    plain = onnxruntime.InferenceSession(str(bundle / "inference_model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = plain.run(["logits"], {"input_ids": ids, "attention_mask": attn, "mask": mask})
    np.testing.assert_allclose(logits, session.logits(ids, attn), atol=1e-6)


def test_manifest_md_documents_every_ort_extra(bundles):
    from tests.unit.test_manifest_doc import undocumented_extras

    for bundle in bundles.values():
        assert undocumented_extras("ort", load_manifest(bundle.bundle_dir).backend_extras) == []


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_checkpoint_ships_the_initial_weights_the_manifest_states(bundles, precision):
    """The trainable tensors in the checkpoint are ``init_trainable(plan, dims, seed)`` with the seed
    the manifest records, bit for bit (what someone who runs the bundle without a server trains from)."""
    from onnxruntime.training.api import CheckpointState

    from fedhft.layout import init_trainable

    bundle = bundles[precision].bundle_dir
    m = load_manifest(bundle)
    initial = json.loads((bundle / "manifest.json").read_text())["initial_weights"]
    assert initial["scheme"] == "fedhft.layout.init_trainable" and initial["shipped_in"] == "checkpoint"
    expected = init_trainable(m.plan, m.dims, initial["seed"])
    shipped = CheckpointState.load_checkpoint(str(bundle / initial["shipped_in"])).parameters
    onnx_names = m.backend_extras["onnx_names"]
    for spec in m.trainable:
        np.testing.assert_array_equal(shipped[onnx_names[spec.name]].data, expected[spec.name], err_msg=spec.name)

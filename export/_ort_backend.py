"""The ONNX Runtime training bundle: the lean device backend (no torch on the device).

Pipeline (each step pinned by a measured trap, listed in docs/DESIGN-NOTES.md, ONNX Runtime):

1. TorchScript ONNX export of ``logits = f(input_ids, attention_mask, mask)`` with opset 16 and
   ``TrainingMode.TRAINING``: opset >= 17 or the dynamo exporter drop the LayerNormalization /
   Dropout outputs that ORT's gradient builder needs, and eval-mode export would deduplicate the
   (all-zero, equal-valued) LoRA B initializers into one tensor.
2. ``generate_artifacts`` with the LoRA factors + head as ``requires_grad`` and every stored
   backbone tensor as ``frozen_params``: the frozen weights move into the checkpoint (int8 stays
   int8 there), so training/eval graphs carry no weights and are not duplicated.
3. The optimizer graph is patched to torch's AdamW (``adam_mode=0``, eps 1e-8): ORT's block
   hard-codes the HF variant (``adam_mode=1``) and offers no Python knob for it.
4. An inference model (logits only, round-0 adapters baked in) for plain ``InferenceSession``.
"""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedhft.manifest import ADAM_BETAS, ADAM_EPS, WEIGHT_DECAY
from export._api import CompiledBundle, ExportContext

TRAINING, EVAL, OPTIMIZER, CHECKPOINT, INFERENCE = (
    "training_model.onnx",
    "eval_model.onnx",
    "optimizer_model.onnx",
    "checkpoint",
    "inference_model.onnx",
)
FILE_ROLES = {
    TRAINING: "training_model",
    EVAL: "eval_model",
    OPTIMIZER: "optimizer_model",
    CHECKPOINT: "checkpoint",
    INFERENCE: "inference_model",
}
GRAPH_INPUTS = ("input_ids", "attention_mask", "mask")
LABELS = "labels"  # the input generate_artifacts adds for its cross-entropy loss
LOGITS = "logits"
OPSET = 16
MAX_IR_VERSION = 10  # ORT 1.19 rejects IR >= 11 (written by onnx >= 1.18)
_WRAP = "inner"  # attribute name of the AdapterModel inside the export wrapper (prefixes every tensor name)
# torch.optim.AdamW as the contract defines it (docs/CONTRACTS.md); adam_mode 0 = torch semantics.
ADAMW_ATTRS = {
    "alpha": ADAM_BETAS[0],
    "beta": ADAM_BETAS[1],
    "epsilon": ADAM_EPS,
    "weight_decay": WEIGHT_DECAY,
    "correct_bias": 1,
    "adam_mode": 0,
}


class _LogitsGraph(nn.Module):
    """What ORT differentiates: logits only. generate_artifacts appends its own cross-entropy loss
    (mean reduction, identical to ``F.cross_entropy``) with a ``labels`` input."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = model

    def forward(self, input_ids, attention_mask, mask):
        return self.inner.logits(input_ids, attention_mask, mask)


@contextlib.contextmanager
def _quiet():
    """Silence the TorchScript exporter (tracer/deprecation warnings) and ORT's C++ graph-transformer
    and unused-initializer log lines, which write straight to fd 1/2 and bypass Python's logging.
    The captured text is replayed on stderr if the block fails, so errors keep their context."""
    import os
    import sys

    import onnxruntime

    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    with tempfile.TemporaryFile(mode="w+b") as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnxruntime.set_default_logger_severity(3)
        for fd in saved:
            os.dup2(sink.fileno(), fd)
        try:
            yield
        except BaseException:
            _restore(saved)
            sink.seek(0)
            sys.stderr.write(sink.read()[-20000:].decode(errors="replace"))
            raise
        finally:
            _restore(saved)
            onnxruntime.set_default_logger_severity(2)


def _restore(saved: dict[int, int]) -> None:
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    for fd, copy in list(saved.items()):
        os.dup2(copy, fd)
        os.close(copy)
        del saved[fd]


def onnx_names(ctx: ExportContext) -> dict[str, str]:
    """canonical trainable name -> ONNX initializer name."""
    return {c: f"{_WRAP}.{n}" for c, n in ctx.model.torch_names().items()}


def export_forward(ctx: ExportContext, path: Path) -> None:
    from torch.onnx import TrainingMode

    ids, attn, _, mask = ctx.example_inputs()
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}, LOGITS: {0: "batch"}}
    wrapper = _LogitsGraph(ctx.model)
    with _quiet():
        torch.onnx.export(
            wrapper,
            (ids, attn, mask),
            str(path),
            input_names=list(GRAPH_INPUTS),
            output_names=[LOGITS],
            dynamic_axes=axes,
            opset_version=OPSET,
            training=TrainingMode.TRAINING,
            do_constant_folding=False,
            dynamo=False,
            export_params=True,
        )
    ctx.model.eval()  # the exporter flips train(); dropout is 0 anyway, but leave the model as found


def check_forward_graph(model, trainable: dict[str, str]) -> None:
    """The mask must be a live graph input and every trainable tensor its own initializer;
    otherwise training would silently ignore the mask or freeze a parameter."""
    inputs = [i.name for i in model.graph.input]
    if inputs != list(GRAPH_INPUTS):
        raise RuntimeError(
            f"the exported ONNX graph has inputs {inputs}, expected {list(GRAPH_INPUTS)}: an input "
            f"was folded or dropped by the exporter; check that AdapterModel.logits uses all of them"
        )
    if not any("mask" in node.input for node in model.graph.node):
        raise RuntimeError(
            "the exported ONNX graph never reads the 'mask' input: the mask was folded into a "
            "constant; it must stay a forward input of AdapterModel.logits"
        )
    initializers = {i.name for i in model.graph.initializer}
    missing = [c for c, n in trainable.items() if n not in initializers]
    if missing:
        raise RuntimeError(
            f"trainable tensors {missing[:4]} are not separate ONNX initializers (deduplicated or "
            f"folded by the exporter): export with training=TrainingMode.TRAINING and "
            f"do_constant_folding=False"
        )


def gather_before_cast(model) -> int:
    """Rewrite ``Gather(Cast(int8 table), ids)`` as ``Cast(Gather(int8 table, ids))``.

    Int8Embedding dequantizes the whole table and then looks rows up; for MiniLM that is a 47 MB
    fp32 temporary and 11.7 M casts per step. Looking up the int8 rows first is exact (the cast is
    lossless) and touches only batch x seq rows. Returns the number of rewritten lookups."""
    from onnx import TensorProto, helper

    int8 = {i.name for i in model.graph.initializer if i.data_type == TensorProto.INT8}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    rewritten = 0
    for cast in list(model.graph.node):
        if cast.op_type != "Cast" or cast.input[0] not in int8 or len(consumers.get(cast.output[0], [])) != 1:
            continue
        gather = consumers[cast.output[0]][0]
        if gather.op_type != "Gather" or gather.input[0] != cast.output[0]:
            continue
        rows = cast.output[0] + "_int8_rows"
        gather.input[0] = cast.input[0]
        final, gather.output[0] = gather.output[0], rows
        to = next(a.i for a in cast.attribute if a.name == "to")
        model.graph.node.remove(cast)
        position = list(model.graph.node).index(gather) + 1
        model.graph.node.insert(position, helper.make_node("Cast", [rows], [final], name=cast.name, to=to))
        rewritten += 1
    return rewritten


def frozen_names(ctx: ExportContext, model, trainable: set[str]) -> list[str]:
    """Stored backbone tensors (fp32 weights, int8 weights + scales) to move into the checkpoint.
    Non-persistent buffers and exporter constants (int64 ids/shapes) stay inside the graphs."""
    from onnx import TensorProto

    stored = {f"{_WRAP}.{k}" for k in ctx.model.state_dict()}
    kinds = (TensorProto.FLOAT, TensorProto.INT8)
    return [
        i.name for i in model.graph.initializer if i.name in stored and i.name not in trainable and i.data_type in kinds
    ]


def generate(ctx: ExportContext, forward_path: Path, bundle_dir: Path) -> dict[str, str]:
    import onnx
    from onnxruntime.training import artifacts

    model = onnx.load(str(forward_path))
    trainable = onnx_names(ctx)
    check_forward_graph(model, trainable)
    gather_before_cast(model)
    frozen = frozen_names(ctx, model, set(trainable.values()))
    bundle_dir.mkdir(parents=True, exist_ok=True)  # generate_artifacts does not create it
    with _quiet():
        artifacts.generate_artifacts(
            model,
            requires_grad=list(trainable.values()),
            frozen_params=frozen,
            loss=artifacts.LossType.CrossEntropyLoss,
            optimizer=artifacts.OptimType.AdamW,
            artifact_directory=str(bundle_dir),
            additional_output_names=[LOGITS],
        )
    return trainable


def patch_optimizer(path: Path) -> None:
    """Turn ORT's HF-style AdamW node into torch's AdamW (the contract) and cap the IR version."""
    import onnx

    model = onnx.load(str(path))
    nodes = [n for n in model.graph.node if n.op_type == "AdamWOptimizer"]
    if len(nodes) != 1:
        raise RuntimeError(
            f"{path.name} has {len(nodes)} AdamWOptimizer nodes, expected 1: the onnxruntime-training "
            f"version changed; pin onnxruntime-training-cpu==1.19.2"
        )
    node = nodes[0]
    kept = [a for a in node.attribute if a.name not in ADAMW_ATTRS]
    del node.attribute[:]
    node.attribute.extend(kept)
    node.attribute.extend(onnx.helper.make_attribute(k, v) for k, v in ADAMW_ATTRS.items())
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    onnx.save(model, str(path))


def cap_ir_version(path: Path) -> None:
    import onnx

    model = onnx.load(str(path))
    if model.ir_version > MAX_IR_VERSION:
        model.ir_version = MAX_IR_VERSION
        onnx.save(model, str(path))


def _open(bundle_dir: Path):
    from onnxruntime.training.api import CheckpointState, Module

    state = CheckpointState.load_checkpoint(str(bundle_dir / CHECKPOINT))
    return state, Module(str(bundle_dir / TRAINING), state, str(bundle_dir / EVAL))


def graph_io(bundle_dir: Path) -> dict:
    """The feed order and output names of the training and eval graphs, as ORT's Module reports them
    (``input_names()``/``output_names()``, parameters excluded). The loss output's name is made by
    generate_artifacts and differs per model (``onnx::loss::2``, ``onnx::loss::26``), so it is read,
    not assumed; the feed order differs from the manifest's ``inputs`` (labels come after mask)."""
    _, module = _open(bundle_dir)
    facts = {}
    for key, name, mode in (("training_graph", TRAINING, module.train), ("eval_graph", EVAL, module.eval)):
        mode()
        inputs, outputs = list(module.input_names()), list(module.output_names())
        if LOGITS not in outputs or len(outputs) != 2 or sorted(inputs) != sorted([*GRAPH_INPUTS, LABELS]):
            raise RuntimeError(
                f"{name} has inputs {inputs} and outputs {outputs}, expected {[*GRAPH_INPUTS, LABELS]} "
                f"and (loss, {LOGITS}): this onnxruntime-training version is unsupported; pin 1.19.2"
            )
        loss = next(o for o in outputs if o != LOGITS)
        facts[key] = {"file": name, "inputs": inputs, "outputs": outputs, "loss_output": loss, "logits_output": LOGITS}
    return facts


def parameter_order(bundle_dir: Path, trainable: dict[str, str]) -> list[str]:
    """Canonical names in the order of ``get_contiguous_parameters(trainable_only=True)``.

    ORT documents that order as the training graph's parameter-input order; rather than trust that,
    fill the contiguous buffer with each tensor's index and read every parameter back by name."""
    import onnx
    from onnxruntime.capi.onnxruntime_inference_collection import OrtValue

    by_onnx = {v: k for k, v in trainable.items()}
    state, module = _open(bundle_dir)
    graph_inputs = [i.name for i in onnx.load(str(bundle_dir / TRAINING), load_external_data=False).graph.input]
    order = [by_onnx[n] for n in graph_inputs if n in by_onnx]
    sizes = [int(np.prod(state.parameters[trainable[c]].data.shape)) for c in order]
    probe = np.repeat(np.arange(len(order), dtype=np.float32), sizes)
    value = OrtValue.ortvalue_from_numpy(probe)  # held until the copy returns (ORT only borrows it)
    module.copy_buffer_to_parameters(value._ortvalue, True)
    for index, canonical in enumerate(order):
        data = state.parameters[trainable[canonical]].data
        if not np.all(data == index):
            raise RuntimeError(
                f"ORT's contiguous parameter order disagrees with the training graph's inputs at "
                f"{canonical}: this onnxruntime-training version is unsupported; pin 1.19.2"
            )
    return order


def write_inference_model(bundle_dir: Path) -> None:
    """A plain-InferenceSession model (inputs input_ids, attention_mask, mask; output logits) with the
    round-0 adapters baked in; OrtSession.export_inference_model writes one with trained adapters."""
    _, module = _open(bundle_dir)
    module.export_model_for_inferencing(str(bundle_dir / INFERENCE), [LOGITS])
    cap_ir_version(bundle_dir / INFERENCE)


def compile_bundle(ctx: ExportContext, bundle_dir: Path) -> CompiledBundle:
    import onnxruntime

    bundle_dir = Path(bundle_dir)
    with tempfile.TemporaryDirectory(prefix="fedhft-onnx-") as tmp:
        forward = Path(tmp) / "forward.onnx"
        ctx.progress(f"  ort: exporting the forward graph to ONNX (opset {OPSET})")
        export_forward(ctx, forward)
        ctx.progress("  ort: building the training, eval and optimizer graphs and the checkpoint")
        trainable = generate(ctx, forward, bundle_dir)
    patch_optimizer(bundle_dir / OPTIMIZER)
    for name in (TRAINING, EVAL):
        cap_ir_version(bundle_dir / name)
    ctx.progress("  ort: recording the parameter order and writing the inference model")
    with _quiet():
        order = parameter_order(bundle_dir, trainable)
        graphs = graph_io(bundle_dir)
        write_inference_model(bundle_dir)
    extras = {
        **graphs,
        "inference_graph": {"file": INFERENCE, "inputs": list(GRAPH_INPUTS), "outputs": [LOGITS]},
        "param_order": order,
        "onnx_names": trainable,
        "label_input": LABELS,
        "logits_output": LOGITS,
        "optimizer": {"type": "AdamW", **ADAMW_ATTRS},  # the AdamWOptimizer node's attributes in OPTIMIZER
        "opset": OPSET,
        "onnxruntime_version": onnxruntime.__version__,
    }
    return CompiledBundle(
        files=dict(FILE_ROLES), inputs=ctx.input_specs(dynamic=True), extras=extras, optimizer_runs_in=OPTIMIZER
    )

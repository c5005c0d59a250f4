"""The ExecuTorch bundle: one .pte holding a joint forward+backward training program.

Pipeline (executorch 1.5.1 + torch 2.13; the traps: docs/DESIGN-NOTES.md, ExecuTorch): ``torch.export``
the AdapterModel (loss is output 0, logits are detached, the mask is an input, the backbone is frozen)
-> ``_export_forward_backward`` -> split ``aten.addmm`` into mm + add -> ``to_edge`` -> ``to_executorch``.
The program's outputs are ``[loss, logits, *grads, *params]``; ``TrainingModule`` slices them. The same
.pte holds a second method, ``adamw_step`` (export/_et_adamw.py): the optimizer travels with the bundle,
so a device needs nothing but the runtime (Android's TrainingModule ships only SGD).

Shapes are DYNAMIC (batch in [1, plan.batch_size], seq in [MIN_SEQ, plan.max_seq_len]): memory is
planned once for the largest shape, and a dynamic program needs no batch padding, which would change
the mean loss. The int8 tiers keep our Int8Linear/Int8Embedding buffers as int8 constants in the
.pte (dequantized each step), so the file shrinks ~3.8x; export checks that they really stayed int8.

XNNPACK: every mm goes to XNNPACK one op at a time with both operands as runtime inputs (no weight
is folded into a delegate, so no trainable tensor can be frozen by it). Set FEDHFT_ET_XNNPACK=0 for
a portable-kernels-only program (a runtime built without XNNPACK).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from export import _et_adamw
from export._api import MIN_SEQ, CompiledBundle, ExportContext
from fedhft.layout import trainable_layout

PROGRAM = "model.pte"
METHOD = "forward"
INPUT_ORDER = ("input_ids", "attention_mask", "labels", "mask")
OUTPUTS = ("loss", "logits")
# GEMM-only XNNPACK delegation (on unless this is "0"): see _delegate_gemms.
XNNPACK_ENV = "FEDHFT_ET_XNNPACK"


def _dynamic_shapes(ctx: ExportContext):
    from torch.export import Dim

    batch = Dim("batch", min=1, max=ctx.plan.batch_size)
    seq = Dim("seq", min=MIN_SEQ, max=ctx.plan.max_seq_len)
    return ({0: batch, 1: seq}, {0: batch, 1: seq}, {0: batch}, {})


def _joint_program(ctx: ExportContext):
    """torch.export + the joint forward/backward graph (ATen level)."""
    from torch.export.experimental import _export_forward_backward
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = ctx.model.eval()
    frozen = [n for n, p in model.encoder.named_parameters() if p.requires_grad and ".lora_" not in n]
    if frozen:
        raise RuntimeError(f"backbone parameters {frozen[:3]} require grad: the AdapterModel must freeze its encoder")
    # MATH sdpa: the CPU flash-attention backward has no out-variant kernel in ExecuTorch.
    with sdpa_kernel(SDPBackend.MATH):
        ep = torch.export.export(model, ctx.example_inputs(), dynamic_shapes=_dynamic_shapes(ctx), strict=False)
    return _export_forward_backward(ep)


def split_addmm(ep) -> int:
    """Rewrite ``addmm(bias, x, w)`` as ``add(mm(x, w), bias)`` in place; returns how many were split.

    Why: ExecuTorch's portable addmm kernel is a naive loop while mm goes to an optimized GEMM
    (~280 ms vs ~43 ms per step at 8x64: docs/DESIGN-NOTES.md)."""
    gm, count = ep.graph_module, 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target != torch.ops.aten.addmm.default:
            continue
        if node.kwargs.get("beta", 1) != 1 or node.kwargs.get("alpha", 1) != 1:
            continue  # the scaled form never comes out of F.linear; leave it to the slow kernel
        bias, x, w = node.args[:3]
        with gm.graph.inserting_before(node):
            mm = gm.graph.call_function(torch.ops.aten.mm.default, (x, w))
            mm.meta = dict(node.meta)
            add = gm.graph.call_function(torch.ops.aten.add.Tensor, (mm, bias))
            add.meta = dict(node.meta)
        node.replace_all_uses_with(add)
        gm.graph.erase_node(node)
        count += 1
    gm.graph.lint()
    gm.recompile()
    return count


def _constant_bytes_by_dtype(ep) -> dict[str, int]:
    """Bytes of the program's stored tensors per dtype (what ends up serialized in the .pte)."""
    out: dict[str, int] = {}
    tensors = list(ep.state_dict.items()) + list(ep.constants.items())
    for _, t in tensors:
        if isinstance(t, torch.Tensor):
            key = str(t.dtype).replace("torch.", "")
            out[key] = out.get(key, 0) + t.numel() * t.element_size()
    return out


def _check_int8_kept(ctx: ExportContext, stored: dict[str, int]) -> None:
    if ctx.plan.precision != "int8":
        return
    expected = sum(b.numel() for n, b in ctx.model.encoder.named_buffers() if b.dtype == torch.int8)
    if stored.get("int8", 0) < expected:
        raise RuntimeError(
            f"the int8 backbone lost its int8 storage in the ExecuTorch program ({stored.get('int8', 0)} of "
            f"{expected} int8 bytes left; something constant-folded the dequantization): export without that pass"
        )


def _delegate_gemms(edge):
    """Hand mm/addmm/linear to XNNPACK one op at a time (per_op_mode) with non-static weights, so that no
    tensor is folded into a delegate: folding a trainable one would silently freeze it. The full
    XnnpackPartitioner fails on training graphs (the softmax output is taken as an input), hence GEMM configs only."""
    from executorch.backends.xnnpack.partition.config.gemm_configs import AddmmConfig, LinearConfig, MMConfig
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    partitioner = XnnpackPartitioner(
        configs=[LinearConfig, AddmmConfig, MMConfig], per_op_mode=True, force_non_static_weights_for_f32_linear=True
    )
    return edge.to_backend(partitioner)


def lower(ctx: ExportContext, xnnpack: bool = True):
    """AdapterModel -> ExecuTorch program manager; returns (program, stats)."""
    from executorch.exir import EdgeCompileConfig, to_edge

    stats: dict = {}
    t0 = time.perf_counter()
    ctx.progress("  executorch: torch.export + joint forward/backward graph")
    ep = _joint_program(ctx)
    stats["addmm_split"] = split_addmm(ep)
    optimizer = _et_adamw.export_program([tuple(s.shape) for s in trainable_layout(ctx.plan, ctx.dims)])
    t1 = time.perf_counter()
    ctx.progress(f"  executorch: to_edge ({stats['addmm_split']} addmm split into mm + add; + {_et_adamw.METHOD})")
    edge = to_edge(
        {METHOD: ep, _et_adamw.METHOD: optimizer}, compile_config=EdgeCompileConfig(_check_ir_validity=False)
    )
    if xnnpack:
        ctx.progress("  executorch: XNNPACK GEMM-only delegation")
        edge = _delegate_gemms(edge)
    t2 = time.perf_counter()
    ctx.progress("  executorch: to_executorch (memory planning, serialization)")
    program = edge.to_executorch()
    stats["stored_bytes"] = _constant_bytes_by_dtype(program.exported_program(METHOD))
    _check_int8_kept(ctx, stats["stored_bytes"])
    stats["seconds"] = {
        "export": round(t1 - t0, 2),
        "to_edge": round(t2 - t1, 2),
        "to_executorch": round(time.perf_counter() - t2, 2),
    }
    return program, stats


def _param_fqns(buffer: bytes) -> list[str]:
    """The parameter names the runtime reports (``__et_training_fqn_forward``), in program order."""
    from executorch.extension.training import _load_for_executorch_for_training_from_buffer

    # The runtime does not own ``buffer`` (it keeps a raw pointer): the caller holds it while we run.
    module = _load_for_executorch_for_training_from_buffer(buffer)
    names = list(module.model.run_method(f"__et_training_fqn_{METHOD}", ()))
    if _et_adamw.METHOD not in module.model.method_names():
        raise RuntimeError(f"the ExecuTorch program lost its {_et_adamw.METHOD} method: check lower()")
    del module
    return names


def compile_bundle(ctx: ExportContext, bundle_dir: Path) -> CompiledBundle:
    xnnpack = os.environ.get(XNNPACK_ENV, "1") != "0"
    program, stats = lower(ctx, xnnpack=xnnpack)
    buffer = program.buffer
    (Path(bundle_dir) / PROGRAM).write_bytes(buffer)
    to_canonical = {fqn: canon for canon, fqn in ctx.model.torch_names().items()}
    fqns = _param_fqns(buffer)
    unknown = [f for f in fqns if f not in to_canonical]
    if unknown or len(fqns) != len(to_canonical):
        raise RuntimeError(
            f"the ExecuTorch program trains {fqns}, expected {sorted(to_canonical)}: "
            f"a trainable tensor was frozen or a frozen one trained; check AdapterModel.trainable()"
        )
    import executorch.version

    ctx.progress(f"  executorch: {PROGRAM} {len(buffer) / 1e6:.1f} MB, stored {stats['stored_bytes']}")
    extras = {
        "program": PROGRAM,
        "method": METHOD,
        "input_order": list(INPUT_ORDER),
        "outputs": list(OUTPUTS),
        # What forward_backward returns, and the methods ExecuTorch's TrainingModule (also Android's) reads.
        "method_outputs": [*OUTPUTS, "gradients (param_order)", "parameters (param_order)"],
        "training_methods": {
            kind: f"__et_training_{kind}_{METHOD}" for kind in ("gradients_index", "parameters_index", "fqn")
        },
        "param_order": fqns,
        "param_to_canonical": {f: to_canonical[f] for f in fqns},
        # The optimizer step, a second method of the same program, over tensors in trainable (canonical) order.
        "optimizer_method": _et_adamw.method_spec(len(fqns)),
        "dynamic_shapes": True,
        "xnnpack": xnnpack,
        "executorch_version": executorch.version.__version__,
        "stored_bytes_by_dtype": stats["stored_bytes"],
        "addmm_split": stats["addmm_split"],
        "export_seconds": stats["seconds"],
    }
    return CompiledBundle(
        files={PROGRAM: "program"}, inputs=ctx.input_specs(dynamic=True), extras=extras, optimizer_runs_in=PROGRAM
    )

"""The plain PyTorch bundle (Jetson with CUDA, or any device with torch): frozen backbone weights in
safetensors (int8 + per-row scales where the plan says int8) plus the HF config. The file names and
the weights format are the runtime's (``bundle_runtime``), which loads them."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save

from bundle_runtime import TORCH_CONFIG, TORCH_WEIGHTS, TORCH_WEIGHTS_FORMAT
from export._api import CompiledBundle, ExportContext


def frozen_state(model) -> dict:
    """The encoder's stored tensors without the LoRA factors (those come from the server)."""
    return {k: v.detach().contiguous() for k, v in model.encoder.state_dict().items() if ".lora_" not in k}


def compile_bundle(ctx: ExportContext, bundle_dir: Path) -> CompiledBundle:
    ctx.progress(f"  torch: writing {TORCH_WEIGHTS}")
    # save() + write_bytes, not save_file: save_file creates the file with mode 0600, which a server
    # that serves the bundle under another user (or a web server) cannot read.
    (bundle_dir / TORCH_WEIGHTS).write_bytes(save(frozen_state(ctx.model)))
    config = ctx.model.encoder.config.to_dict()
    (bundle_dir / TORCH_CONFIG).write_text(json.dumps(config, indent=2, default=str))
    return CompiledBundle(
        files={TORCH_WEIGHTS: "weights", TORCH_CONFIG: "config"},
        inputs=ctx.input_specs(dynamic=True),
        extras={"torch_names": ctx.model.torch_names(), "weights_format": TORCH_WEIGHTS_FORMAT},
    )

"""The plain PyTorch bundle (Jetson with CUDA, or any device with torch): frozen backbone weights in
safetensors (int8 + per-row scales where the plan says int8) plus the HF config."""
from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save

from export._api import CompiledBundle, ExportContext
from export._quant import EMBEDDING_INT8_MIN_ROWS

WEIGHTS = "backbone.safetensors"
CONFIG = "config.json"
#: How backbone.safetensors names its tensors (docs/MANIFEST.md, torch bundles).
WEIGHTS_FORMAT = {
    "keys": "encoder_state_dict",  # the Hugging Face encoder's state_dict names, LoRA factors left out
    "adapted_linear": "<module>.base.weight",  # a LoRA-wrapped layer keeps its frozen layer under '.base'
    "int8_linear": {"weight": "<module>.weight_int8", "scale": "<module>.weight_scale", "bias": "<module>.bias"},
    "int8_embedding": {"weight": "<table>.weight_int8", "scale": "<table>.weight_scale",
                       "min_rows": EMBEDDING_INT8_MIN_ROWS},
    "int8_dequantize": "weight_int8 * weight_scale[:, None]",  # per output row (per table row)
}


def frozen_state(model) -> dict:
    """The encoder's stored tensors without the LoRA factors (those come from the server)."""
    return {k: v.detach().contiguous() for k, v in model.encoder.state_dict().items() if ".lora_" not in k}


def compile_bundle(ctx: ExportContext, bundle_dir: Path) -> CompiledBundle:
    ctx.progress(f"  torch: writing {WEIGHTS}")
    # save() + write_bytes, not save_file: save_file creates the file with mode 0600, which a server
    # that serves the bundle under another user (or a web server) cannot read.
    (bundle_dir / WEIGHTS).write_bytes(save(frozen_state(ctx.model)))
    config = ctx.model.encoder.config.to_dict()
    (bundle_dir / CONFIG).write_text(json.dumps(config, indent=2, default=str))
    return CompiledBundle(
        files={WEIGHTS: "weights", CONFIG: "config"},
        inputs=ctx.input_specs(dynamic=True),
        extras={"torch_names": ctx.model.torch_names(), "weights_format": WEIGHTS_FORMAT},
    )


def _bundle_config(bundle_dir: Path):
    from transformers import AutoConfig

    return AutoConfig.for_model(**{k: v for k, v in json.loads((Path(bundle_dir) / CONFIG).read_text()).items()
                                   if k not in ("transformers_version",)})


def model_class(bundle_dir: Path) -> type:
    """The transformers encoder class of a torch bundle (importing its module, which is lazy)."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    return getattr(transformers, MODEL_MAPPING_NAMES[_bundle_config(bundle_dir).model_type])


def load_bundle_model(bundle_dir: Path, manifest, device: str = "cpu"):
    """Rebuild the AdapterModel of a torch bundle (used by the torch session and by verify)."""
    from transformers import AutoModel

    from export._model import build_adapter_model

    config = _bundle_config(bundle_dir)
    config._attn_implementation = "eager"
    encoder = AutoModel.from_config(config, attn_implementation="eager")
    if hasattr(encoder, "pooler"):
        encoder.pooler = None
    model = build_adapter_model(encoder, manifest.plan, manifest.dims.num_labels)
    stored = load_file(str(Path(bundle_dir) / WEIGHTS))
    missing, unexpected = model.encoder.load_state_dict(stored, strict=False)
    missing = [k for k in missing if ".lora_" not in k]
    if missing or unexpected:
        from fedhft.manifest import BundleError
        raise BundleError(f"{bundle_dir}/{WEIGHTS} does not fit the manifest's plan (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}): re-export the bundle")
    return model.to(device)

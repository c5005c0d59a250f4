"""The plain PyTorch bundle's files, and how the torch session rebuilds its AdapterModel from them:
frozen backbone weights in safetensors (int8 + per-row scales where the plan says int8) plus the
Hugging Face config. ``export`` writes these files; this module is their one definition."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file

from fedhft.manifest import BundleError
from bundle_runtime._model import build_adapter_model
from bundle_runtime._quant import EMBEDDING_INT8_MIN_ROWS

TORCH_WEIGHTS = "backbone.safetensors"
TORCH_CONFIG = "config.json"
#: How backbone.safetensors names its tensors (docs/MANIFEST.md, torch bundles).
TORCH_WEIGHTS_FORMAT = {
    "keys": "encoder_state_dict",  # the Hugging Face encoder's state_dict names, LoRA factors left out
    "adapted_linear": "<module>.base.weight",  # a LoRA-wrapped layer keeps its frozen layer under '.base'
    "int8_linear": {"weight": "<module>.weight_int8", "scale": "<module>.weight_scale", "bias": "<module>.bias"},
    "int8_embedding": {
        "weight": "<table>.weight_int8",
        "scale": "<table>.weight_scale",
        "min_rows": EMBEDDING_INT8_MIN_ROWS,
    },
    "int8_dequantize": "weight_int8 * weight_scale[:, None]",  # per output row (per table row)
}


def _bundle_config(bundle_dir: Path):
    from transformers import AutoConfig

    return AutoConfig.for_model(
        **{
            k: v
            for k, v in json.loads((Path(bundle_dir) / TORCH_CONFIG).read_text()).items()
            if k not in ("transformers_version",)
        }
    )


def model_class(bundle_dir: Path) -> type:
    """The transformers encoder class of a torch bundle (importing its module, which is lazy)."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    return getattr(transformers, MODEL_MAPPING_NAMES[_bundle_config(bundle_dir).model_type])


def load_bundle_model(bundle_dir: Path, manifest, device: str = "cpu"):
    """Rebuild the AdapterModel of a torch bundle (the torch session's model)."""
    from transformers import AutoModel

    config = _bundle_config(bundle_dir)
    config._attn_implementation = "eager"
    encoder = AutoModel.from_config(config, attn_implementation="eager")
    if hasattr(encoder, "pooler"):
        encoder.pooler = None
    model = build_adapter_model(encoder, manifest.plan, manifest.dims.num_labels)
    stored = load_file(str(Path(bundle_dir) / TORCH_WEIGHTS))
    missing, unexpected = model.encoder.load_state_dict(stored, strict=False)
    missing = [k for k in missing if ".lora_" not in k]
    if missing or unexpected:
        raise BundleError(
            f"{bundle_dir}/{TORCH_WEIGHTS} does not fit the manifest's plan (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}): re-export the bundle"
        )
    return model.to(device)


__all__ = ["TORCH_CONFIG", "TORCH_WEIGHTS", "TORCH_WEIGHTS_FORMAT", "load_bundle_model", "model_class"]

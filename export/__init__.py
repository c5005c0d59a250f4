"""Export: masked-adapter training bundles per device tier and backend.

The public names are resolved lazily so that importing ``export`` (e.g. for the CLI parser)
does not import torch.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "export_bundle": "export._api",
    "export_all": "export._api",
    "ExportResult": "export._api",
    "ExportContext": "export._api",
    "CompiledBundle": "export._api",
    "resolve_model": "export._backbone",
    "load_encoder": "export._backbone",
    "weights_sha256": "export._backbone",
    "BackboneSource": "export._backbone",
    "MINILM_ID": "export._backbone",
    "verify_bundle": "export._verify",
    "VerifyReport": "export._verify",
    "find_bundles": "export._verify",
    "reference_model": "export._verify",
    "quantization_accuracy": "export._quality",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'export' has no attribute {name!r}")

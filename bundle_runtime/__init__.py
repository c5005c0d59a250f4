"""The runtime layer under ``export`` and ``edge_runtime``: what both need to run a bundle.

* the training sessions (``open_session``, one implementation per backend, and ``EagerSession``
  over an in-memory model, the parity reference);
* the masked-adapter model (``build_adapter_model``, ``AdapterModel``) and its int8 frozen layers,
  which the export compiles and the torch session trains;
* the torch bundle's files (``TORCH_WEIGHTS``, ``TORCH_CONFIG``, ``TORCH_WEIGHTS_FORMAT``) and their
  loader (``load_bundle_model``).

``export`` imports it (verify runs the sessions, the compilers build the model), so does
``edge_runtime``; it imports only ``fedhft`` and ``devices``. Names resolve lazily: importing the
package (or ``bundle_runtime.sessions``) imports no torch.
"""

from __future__ import annotations

import importlib

_LAZY = {
    # sessions
    "TrainingSession": "bundle_runtime.sessions",
    "open_session": "bundle_runtime.sessions",
    "load_runtime": "bundle_runtime.sessions",
    "check_state": "bundle_runtime.sessions",
    "check_mask": "bundle_runtime.sessions",
    "EagerSession": "bundle_runtime.sessions",
    # the adapter model
    "build_adapter_model": "bundle_runtime._model",
    "AdapterModel": "bundle_runtime._model",
    "SUPPORTED_MODEL_TYPES": "bundle_runtime._model",
    "architecture_family": "bundle_runtime._model",
    "model_dims_from_config": "bundle_runtime._model",
    "site_paths": "bundle_runtime._model",
    "encoder_span": "bundle_runtime._model",
    "expected_layout": "bundle_runtime._model",
    # int8 frozen layers
    "quantize_frozen": "bundle_runtime._quant",
    "Int8Linear": "bundle_runtime._quant",
    "Int8Embedding": "bundle_runtime._quant",
    "EMBEDDING_INT8_MIN_ROWS": "bundle_runtime._quant",
    # the torch bundle
    "TORCH_WEIGHTS": "bundle_runtime._torch_bundle",
    "TORCH_CONFIG": "bundle_runtime._torch_bundle",
    "TORCH_WEIGHTS_FORMAT": "bundle_runtime._torch_bundle",
    "load_bundle_model": "bundle_runtime._torch_bundle",
    "model_class": "bundle_runtime._torch_bundle",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bundle_runtime' has no attribute {name!r}")


def __dir__():
    return __all__

"""Training sessions over export bundles: one interface, one implementation per backend."""

from __future__ import annotations

import importlib
from pathlib import Path

from fedhft.manifest import load_manifest
from bundle_runtime.sessions._base import TrainingSession, check_mask, check_state

_IMPLS = {
    "torch": ("bundle_runtime.sessions._torch", "TorchSession", None),
    "ort": ("bundle_runtime.sessions._ort", "OrtSession", "ort"),
    "executorch": ("bundle_runtime.sessions._executorch", "ExecuTorchSession", "executorch"),
}


def load_runtime(backend: str, bundle_dir: str | Path | None = None) -> None:
    """Import every library a backend's session imports to open ``bundle_dir``, without loading the bundle.

    This is the memory baseline of 'bundle' accounting, so it must leave nothing for the open to import:
    whatever the open imports would otherwise be charged to the bundle (transformers' lazily imported
    model code alone is ~140 MB for the torch backend).
    """
    module_name, _, extra = _IMPLS[backend]
    try:
        module = importlib.import_module(module_name)
        module._import_runtime(Path(bundle_dir) if bundle_dir is not None else None)
    except ImportError as exc:
        hint = f"pip install 'fedhft[{extra}]'" if extra else "pip install torch==2.13.0 transformers"
        raise ImportError(
            f"the {backend} runtime is not installed ({exc.name or exc}): install it with: {hint}"
        ) from exc


def open_session(bundle_dir: str | Path, verify_files: bool = True, **options) -> TrainingSession:
    """Load a bundle (checking its manifest and file digests) with its backend's own runtime."""
    manifest = load_manifest(Path(bundle_dir), verify_files=verify_files)
    module_name, cls_name, extra = _IMPLS[manifest.backend]
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except ImportError as exc:
        hint = f"pip install 'fedhft[{extra}]'" if extra else "pip install torch==2.13.0 transformers"
        raise ImportError(
            f"the {manifest.backend} runtime is not installed ({exc.name or exc}): install it with: {hint}"
        ) from exc
    return cls(Path(bundle_dir), manifest, **options)


def __getattr__(name: str):
    if name == "EagerSession":  # a torch session over an in-memory model: imports torch, so only on use
        from bundle_runtime.sessions._torch import EagerSession

        return EagerSession
    raise AttributeError(f"module 'bundle_runtime.sessions' has no attribute {name!r}")


__all__ = ["EagerSession", "TrainingSession", "open_session", "load_runtime", "check_state", "check_mask"]

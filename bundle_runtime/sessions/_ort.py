"""ONNX Runtime training session: trains an ``ort`` bundle with onnxruntime-training and numpy only.

No torch on the device: ``onnxruntime/training/__init__.py`` imports ``training.optim``, whose
FusedAdam imports torch (2+ s, hundreds of MB, and an ImportError on a torch-free device), and
``import onnxruntime`` probes ``training.ortmodule`` (torch again). The three classes used here
(``CheckpointState``, ``Module``, ``Optimizer``) need only numpy and the C extension, so they are
imported under a stand-in package object (``_torch_free_training_package``): a device that has
torch installed does not pay for it either.

Rounds: every ``begin_round`` reloads the checkpoint and re-creates Module and Optimizer. ORT
keeps the Adam moments inside the CheckpointState, so a new Optimizer over the old state inherits
them, and moments from the previous round's mask keep moving rows that are now masked off
(measured on the tiny model: 2e-2 in 3 steps at lr 1e-2). Reloading costs one checkpoint read and
two session builds per round (0.4-0.8 s for MiniLM on one busy core).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import math
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedhft.manifest import BundleError, Manifest
from bundle_runtime.sessions._base import ADAM_BETAS, ADAM_EPS, WEIGHT_DECAY, check_mask, check_state

_EXTRA_HINT = "install it with: pip install 'fedhft[ort]'"
_ROLES = ("training_model", "eval_model", "optimizer_model", "checkpoint")
_QUIET = 3  # ORT log severity ERROR: hides the per-session "Removing initializer ..." warnings


@dataclass(frozen=True)
class _TrainingApi:
    CheckpointState: type
    Module: type
    Optimizer: type
    OrtValue: type
    SessionOptions: type


@contextlib.contextmanager
def _torch_free_training_package():
    """Import onnxruntime and its ``training.api`` submodules without torch.

    Two places pull torch in: ``onnxruntime/training/__init__.py`` (through ``training.optim``) and
    ``import onnxruntime`` itself, whose build-info check probes ``training.ortmodule``. While this is
    active a stand-in module with the real ``__path__`` plays the ``training`` package (its
    ``__init__`` never runs) and the ortmodule probe gets the same ImportError it gets on a device
    without torch."""
    pkg = "onnxruntime.training"
    if pkg in sys.modules:  # the real package is already loaded (the exporter, in this process)
        yield
        return
    spec = importlib.util.find_spec("onnxruntime")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"onnxruntime-training is not installed: {_EXTRA_HINT}", name="onnxruntime")
    training_dir = Path(list(spec.submodule_search_locations)[0]) / "training"
    if not (training_dir / "api").is_dir():
        raise ImportError(
            f"the installed onnxruntime is the inference-only build; uninstall it and {_EXTRA_HINT}", name=pkg
        )
    stub = types.ModuleType(pkg)
    stub.__path__ = [str(training_dir)]
    sys.modules[pkg] = stub
    sys.modules[pkg + ".ortmodule"] = None  # type: ignore[assignment]  # makes the probe raise ImportError
    try:
        yield
    finally:
        # Forget the stand-in and everything loaded under it, so that a later real
        # `import onnxruntime.training` runs the true __init__ and binds its own submodules.
        for name in [n for n in sys.modules if n == pkg or n.startswith(pkg + ".")]:
            del sys.modules[name]


def _import_training_api() -> _TrainingApi:
    with _torch_free_training_package():
        try:
            import onnxruntime
            from onnxruntime.capi import _pybind_state as capi
            from onnxruntime.capi.onnxruntime_inference_collection import OrtValue
        except ImportError as exc:
            raise ImportError(
                f"onnxruntime-training does not import ({exc}): {_EXTRA_HINT}", name="onnxruntime"
            ) from exc
        if not hasattr(capi, "Module"):
            raise ImportError(
                f"the installed onnxruntime {onnxruntime.__version__} is the inference-only build; "
                f"uninstall it and {_EXTRA_HINT}",
                name="onnxruntime.training",
            )
        ckpt = importlib.import_module("onnxruntime.training.api.checkpoint_state")
        module = importlib.import_module("onnxruntime.training.api.module")
        optim = importlib.import_module("onnxruntime.training.api.optimizer")
    return _TrainingApi(ckpt.CheckpointState, module.Module, optim.Optimizer, OrtValue, onnxruntime.SessionOptions)


# At import, so that a missing runtime surfaces as ImportError in open_session (with the install hint).
_API = _import_training_api()


def _import_runtime(bundle_dir: Path | None = None) -> None:
    """Nothing beyond this module's import: opening a bundle imports no further library."""


@dataclass(frozen=True)
class _ParamLayout:
    """Where each trainable tensor sits in ORT's contiguous parameter buffer."""

    order: tuple[str, ...]
    shapes: dict[str, tuple[int, ...]]

    @property
    def total(self) -> int:
        return sum(math.prod(self.shapes[n]) for n in self.order)

    @classmethod
    def from_manifest(cls, manifest: Manifest, bundle_dir: Path) -> "_ParamLayout":
        shapes = {s.name: tuple(s.shape) for s in manifest.trainable}
        order = tuple(manifest.backend_extras.get("param_order") or ())
        if sorted(order) != sorted(shapes):
            raise BundleError(
                f"{bundle_dir}/manifest.json: backend_extras.param_order does not list the bundle's "
                f"trainable tensors exactly once: the manifest is damaged; re-export the bundle"
            )
        return cls(order, shapes)

    def flatten(self, tensors: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([np.asarray(tensors[n], dtype=np.float32).ravel() for n in self.order])

    def split(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        out, offset = {}, 0
        for name in self.order:
            size = math.prod(self.shapes[name])
            out[name] = flat[offset : offset + size].reshape(self.shapes[name]).copy()
            offset += size
        return {n: out[n] for n in self.shapes}  # canonical order


def _check_optimizer(bundle_dir: Path, recorded: dict) -> None:
    """The optimizer lives in the bundle's graph, not in this code: refuse one that is not the
    contract's torch AdamW (e.g. ORT's default HF variant), which would train differently."""
    want = {
        "adam_mode": 0,
        "alpha": ADAM_BETAS[0],
        "beta": ADAM_BETAS[1],
        "epsilon": ADAM_EPS,
        "weight_decay": WEIGHT_DECAY,
    }
    wrong = {
        k: recorded.get(k)
        for k, v in want.items()
        if not isinstance(recorded.get(k), (int, float)) or not math.isclose(recorded[k], v, rel_tol=1e-6)
    }
    if wrong:
        raise BundleError(
            f"{bundle_dir}: the bundle's optimizer graph has {wrong}, the contract needs torch AdamW "
            f"{want}: re-export it with this fedhft (`fedhft export --backend ort`)"
        )


def _bundle_paths(bundle_dir: Path, manifest: Manifest) -> dict[str, Path]:
    paths = {}
    for role in _ROLES:
        names = manifest.files_with_role(role)
        if len(names) != 1:
            raise BundleError(
                f"{bundle_dir}: the manifest lists {len(names)} files with role {role!r}, an ort bundle "
                f"needs exactly one: re-export it with `fedhft export --backend ort`"
            )
        paths[role] = Path(bundle_dir) / names[0]
    return paths


class OrtSession:
    """TrainingSession over ORT training artifacts (training/eval/optimizer graphs + checkpoint)."""

    def __init__(self, bundle_dir: Path, manifest: Manifest, threads: int | None = None) -> None:
        if manifest.backend != "ort":
            raise BundleError(f"{bundle_dir} is a {manifest.backend!r} bundle, not 'ort': open it with open_session")
        self.bundle_dir, self.manifest = Path(bundle_dir), manifest
        self._layout = _ParamLayout.from_manifest(manifest, self.bundle_dir)
        self._paths = _bundle_paths(self.bundle_dir, manifest)
        extras = manifest.backend_extras
        _check_optimizer(self.bundle_dir, extras.get("optimizer") or {})
        self._logits_name = extras.get("logits_output", "logits")
        self._label_name = extras.get("label_input", "labels")
        self._options = _API.SessionOptions()
        self._options.log_severity_level = _QUIET
        if threads:
            self._options.intra_op_num_threads = int(threads)
            self._options.inter_op_num_threads = 1
        self._mask = np.ones(manifest.mask_length, dtype=np.float32)
        self._optimizer = None
        self._state, self._module = self._load()

    # --- loading -------------------------------------------------------------------------------
    def _load(self):
        """A fresh CheckpointState (round-0 weights, no optimizer moments) and Module over it."""
        try:
            state = _API.CheckpointState.load_checkpoint(str(self._paths["checkpoint"]))
            module = _API.Module(
                str(self._paths["training_model"]), state, str(self._paths["eval_model"]), "cpu", self._options
            )
        except Exception as exc:  # ORT raises its own pybind exception types (Fail, InvalidProtobuf, ...)
            raise BundleError(
                f"{self.bundle_dir}: onnxruntime could not load the training artifacts "
                f"({type(exc).__name__}: {str(exc)[:300]}): the bundle is corrupted or was made by "
                f"another onnxruntime version; re-export it with `fedhft export --backend ort`"
            ) from exc
        size = module.get_parameters_size(True)
        if size != self._layout.total:
            raise BundleError(
                f"{self.bundle_dir}: the checkpoint has {size} trainable values, the manifest's plan "
                f"needs {self._layout.total}: the files do not belong together; re-export the bundle"
            )
        return state, module

    def _new_optimizer(self, lr: float):
        try:
            optimizer = _API.Optimizer(str(self._paths["optimizer_model"]), self._module)
        except Exception as exc:
            raise BundleError(
                f"{self.bundle_dir}: onnxruntime could not load the optimizer graph ({exc}): "
                f"re-export the bundle with `fedhft export --backend ort`"
            ) from exc
        optimizer.set_learning_rate(float(lr))
        return optimizer

    # --- weights -------------------------------------------------------------------------------
    def _flat(self) -> np.ndarray:
        value = self._module.get_contiguous_parameters(trainable_only=True)
        return np.array(value.numpy(), dtype=np.float32, copy=True)

    def _copy_in(self, flat: np.ndarray) -> None:
        array = np.ascontiguousarray(flat, dtype=np.float32)
        # The OrtValue only borrows `array`'s memory: both stay referenced until the copy returns,
        # otherwise ORT may read freed memory (random NaNs in the parameters).
        value = _API.OrtValue.ortvalue_from_numpy(array)
        self._module.copy_buffer_to_parameters(value._ortvalue, True)
        del value, array

    def set_state(self, tensors: dict[str, np.ndarray]) -> None:
        check_state(self.manifest, tensors)
        self._copy_in(self._layout.flatten(tensors))

    def get_state(self) -> dict[str, np.ndarray]:
        return self._layout.split(self._flat())

    # --- training ------------------------------------------------------------------------------
    def begin_round(self, mask: np.ndarray, lr: float) -> None:
        mask = check_mask(self.manifest, mask)
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"learning rate must be a positive finite number, got {lr!r}")
        weights = self._flat()
        # Drop the old objects before loading new ones so that only one copy of the weights lives.
        self._optimizer = self._module = self._state = None
        self._state, self._module = self._load()
        self._copy_in(weights)
        self._optimizer = self._new_optimizer(lr)
        self._mask = mask

    def _feeds(self, input_ids, attention_mask, labels) -> list[np.ndarray]:
        ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        attn = np.ascontiguousarray(attention_mask, dtype=np.int64)
        if ids.ndim != 2 or attn.shape != ids.shape:
            raise ValueError(f"input_ids {ids.shape} and attention_mask {attn.shape} must both be [batch, seq]")
        if labels is None:  # eval: the eval graph still computes the loss, so it needs some labels
            labels = np.zeros(ids.shape[0], dtype=np.int64)
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        if labels.shape != ids.shape[:1]:
            raise ValueError(f"labels has shape {labels.shape}, expected ({ids.shape[0]},) (one per row)")
        by_name = {"input_ids": ids, "attention_mask": attn, "mask": self._mask, self._label_name: labels}
        return [by_name[name] for name in self._module.input_names()]

    def train_step(self, input_ids, attention_mask, labels) -> float:
        if self._optimizer is None:
            raise RuntimeError("call begin_round(mask, lr) before train_step")
        self._module.train()
        feeds = self._feeds(input_ids, attention_mask, labels)
        self._module.lazy_reset_grad()  # ORT accumulates gradients in place across calls
        outputs = self._module(*feeds)
        self._optimizer.step()
        return float(np.asarray(outputs[0]).reshape(()))  # output 0 is the loss (generate_artifacts)

    def logits(self, input_ids, attention_mask) -> np.ndarray:
        self._module.eval()
        try:
            feeds = self._feeds(input_ids, attention_mask, None)
            outputs = self._module(*feeds)
            index = self._module.output_names().index(self._logits_name)
        finally:
            self._module.train()
        return np.asarray(outputs[index], dtype=np.float32)

    def export_inference_model(self, path: str | Path) -> Path:
        """A plain-InferenceSession model (input_ids, attention_mask, mask -> logits) with the
        CURRENT trained adapters baked in."""
        path = Path(path)
        self._module.export_model_for_inferencing(str(path), [self._logits_name])
        return path

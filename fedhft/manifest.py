"""The bundle manifest: one versioned JSON file that describes a compiled training bundle.

Both sides read it: the exporter writes it, the edge runtime loads a bundle through it, the
server tells clients which bundle (and its digest) to train. It never imports torch.

Schema 2 (docs/MANIFEST.md documents every field) states everything a device needs to train a
bundle with its runtime alone: each graph's feed order and output names (backend_extras), the mask
semantics, the one tokenizer file and its length bound, labels and loss, the optimizer and the
rule that its state is fresh each round, how the shipped trainable weights were initialized, and
where the update format is specified. Schema 1 bundles lack those facts and shipped a tokenizer
whose length (128) was not the bundle's bound, so they are refused with the export command that
replaces them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devices import BACKENDS, AdapterPlan
from fedhft.layout import MaskSlice, ModelDims, TensorSpec, mask_layout, trainable_layout

SCHEMA_VERSION = 2
MANIFEST_NAME = "manifest.json"
# BACKENDS (the training runtimes) is devices' one list, re-exported here for the bundle code.

#: torch.optim.AdamW as every backend runs it (ORT's optimizer graph is patched to match: adam_mode=0).
#: The one home of these values: sessions, export and the manifest read them from here.
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
WEIGHT_DECAY = 0.0
#: The update format's specification (the manifest refers to it, it does not repeat it).
UPDATE_SPEC = "docs/PROTOCOL.md#update"
#: Fixed semantics of this schema, as identifiers that docs/MANIFEST.md defines; a manifest that
#: states other ones was made by a fedhft that trains differently and is refused.
MASK_SEMANTICS = {"dtype": "float32", "values": [0.0, 1.0], "selects": "lora_B_rows", "trained_value": 1.0}
TASK_SEMANTICS = {
    "kind": "sequence_classification",
    "pooling": "attention_masked_mean",
    "head": "linear",
    "loss": "mean_cross_entropy",
    "dropout": "none",
}
OPTIMIZER_STATE = "fresh_each_round"
INIT_SCHEME = "fedhft.layout.init_trainable"


class BundleError(ValueError):
    """A bundle on disk does not match its manifest (or the manifest is unreadable)."""


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: str
    shape: tuple  # ints for static dims, strings ("batch", "seq") for dynamic ones
    bounds: dict = field(default_factory=dict)  # dynamic dim name -> [min, max]

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "bounds": self.bounds}

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        return cls(d["name"], d["dtype"], tuple(d["shape"]), {k: list(v) for k, v in d.get("bounds", {}).items()})


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int
    role: str  # e.g. "weights", "program", "training_model", "tokenizer"


@dataclass(frozen=True)
class TokenizerSpec:
    """The bundle's one tokenizer file (a Hugging Face ``tokenizers`` JSON, ``Tokenizer.from_file``).

    The file itself truncates and pads to ``max_length``, the bundle's sequence bound, so that
    encoding with its defaults always gives a valid input; shorter sequences (down to ``min_length``)
    are valid too."""

    file: str
    max_length: int
    min_length: int
    pad_id: int
    pad_token: str

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "format": "huggingface-tokenizers-json",
            "max_length": self.max_length,
            "min_length": self.min_length,
            "truncation": "longest_first",
            "padding": "right_to_max_length",
            "pad_id": self.pad_id,
            "pad_token": self.pad_token,
            "special_tokens": "added_by_post_processor",
        }

    @classmethod
    def from_dict(cls, d: dict) -> "TokenizerSpec":
        return cls(str(d["file"]), int(d["max_length"]), int(d["min_length"]), int(d["pad_id"]), str(d["pad_token"]))


@dataclass(frozen=True)
class OptimizerSpec:
    """The optimizer every round runs over every trainable tensor, with the task's ``hyper.lr``
    (constant within the round) and FRESH state each round. ``runs_in`` names the bundle file that
    implements it, or ``"app"`` when the device code must (the runtime only returns gradients)."""

    name: str = "AdamW"
    betas: tuple[float, float] = ADAM_BETAS
    eps: float = ADAM_EPS
    weight_decay: float = WEIGHT_DECAY
    runs_in: str = "app"

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "variant": "torch.optim.AdamW",
            "betas": list(self.betas),
            "eps": self.eps,
            "weight_decay": self.weight_decay,
            "bias_correction": True,
            "lr": "task.hyper.lr",
            "lr_schedule": "constant",
            "params": "trainable",
            "state": OPTIMIZER_STATE,
            "runs_in": self.runs_in,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "OptimizerSpec":
        if d.get("name") != "AdamW" or d.get("state") != OPTIMIZER_STATE:
            raise ValueError(
                f"optimizer {d.get('name')!r} with state {d.get('state')!r}: this fedhft trains AdamW "
                f"with {OPTIMIZER_STATE} state"
            )
        betas = tuple(float(b) for b in d["betas"])
        if len(betas) != 2:
            raise ValueError(f"optimizer betas must be two numbers, got {d['betas']!r}")
        return cls("AdamW", betas, float(d["eps"]), float(d["weight_decay"]), str(d["runs_in"]))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Manifest:
    backend: str
    tier: str
    plan: AdapterPlan
    dims: ModelDims
    base_model_id: str
    base_weights_sha256: str
    inputs: tuple[InputSpec, ...]
    files: dict[str, FileEntry]
    backend_extras: dict = field(default_factory=dict)
    quantization: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    fedhft_version: str = "0.1.0"
    #: None only for bundles made in code without a tokenizer (synthetic test fleets).
    tokenizer: TokenizerSpec | None = None
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    #: Seed of the shipped trainable weights (``init_trainable(plan, dims, init_seed)``).
    init_seed: int = 0

    @property
    def trainable(self) -> list[TensorSpec]:
        return trainable_layout(self.plan, self.dims)

    @property
    def mask_layout(self) -> list[MaskSlice]:
        return mask_layout(self.plan, self.dims)

    @property
    def mask_length(self) -> int:
        return sum(s.rows for s in self.mask_layout)

    def files_with_role(self, role: str) -> list[str]:
        return [name for name, entry in self.files.items() if entry.role == role]

    def seq_bounds(self) -> tuple[int, int] | None:
        """(min, max) sequence length the graphs accept, from the ``input_ids`` spec."""
        for spec in self.inputs:
            if spec.name == "input_ids" and len(spec.shape) == 2:
                seq = spec.shape[1]
                return tuple(spec.bounds[seq]) if isinstance(seq, str) else (int(seq), int(seq))  # type: ignore
        return None

    def _initial_weights(self) -> dict:
        shipped = self.files_with_role("checkpoint") + self.files_with_role("program")
        return {
            "scheme": INIT_SCHEME,
            "seed": self.init_seed,
            "rng": "numpy.random.default_rng(seed)",
            "draw_order": "trainable",
            "lora_A": "uniform(-1/sqrt(in_features), 1/sqrt(in_features))",
            "lora_B": "zeros",
            "head.weight": "normal(0, 0.02)",
            "head.bias": "zeros",
            "shipped_in": shipped[0] if shipped else None,
            "overwritten_by": "task.start_state",
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "fedhft_version": self.fedhft_version,
            "backend": self.backend,
            "tier": self.tier,
            "base_model": {"id": self.base_model_id, "weights_sha256": self.base_weights_sha256},
            "plan": self.plan.to_dict(),
            "dims": self.dims.to_dict(),
            "trainable": [s.to_dict() for s in self.trainable],
            "mask": {"length": self.mask_length, "layout": [s.to_dict() for s in self.mask_layout], **MASK_SEMANTICS},
            "inputs": [i.to_dict() for i in self.inputs],
            "task": {
                **TASK_SEMANTICS,
                "num_labels": self.dims.num_labels,
                "labels": {"dtype": "int64", "shape": ["batch"], "range": [0, self.dims.num_labels - 1]},
                "lora_scaling": "alpha / rank",
            },
            "tokenizer": self.tokenizer.to_dict() if self.tokenizer else None,
            "optimizer": self.optimizer.to_dict(),
            "initial_weights": self._initial_weights(),
            "update": {
                "spec": UPDATE_SPEC,
                "delta": "trained_minus_start",
                "lora_B": "rows_where_mask_is_1",
                "encodings": ["fp32", "fp16", "int8"],
                "encoding": "task.hyper.encoding",
            },
            "files": {n: {"sha256": e.sha256, "size": e.size, "role": e.role} for n, e in sorted(self.files.items())},
            "quantization": self.quantization,
            "backend_extras": self.backend_extras,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Manifest":
        check_schema(d)
        try:
            manifest = cls(
                backend=d["backend"],
                tier=d["tier"],
                plan=AdapterPlan.from_dict(d["plan"]),
                dims=ModelDims.from_dict(d["dims"]),
                base_model_id=d["base_model"]["id"],
                base_weights_sha256=d["base_model"]["weights_sha256"],
                inputs=tuple(InputSpec.from_dict(i) for i in d["inputs"]),
                files={n: FileEntry(e["sha256"], int(e["size"]), e["role"]) for n, e in d["files"].items()},
                backend_extras=d.get("backend_extras", {}),
                quantization=d.get("quantization", {}),
                fedhft_version=d.get("fedhft_version", "?"),
                tokenizer=TokenizerSpec.from_dict(d["tokenizer"]) if d["tokenizer"] is not None else None,
                optimizer=OptimizerSpec.from_dict(d["optimizer"]),
                init_seed=int(d["initial_weights"]["seed"]),
            )
            _check_semantics(d)
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(
                f"manifest is malformed ({type(exc).__name__}: {exc}): re-export the bundle ({export_command(d)})"
            ) from exc
        if manifest.backend not in BACKENDS:
            raise BundleError(f"manifest backend {manifest.backend!r} unknown; expected one of {BACKENDS}")
        recorded = [TensorSpec.from_dict(s) for s in d.get("trainable", [])]
        if recorded != manifest.trainable:
            raise BundleError(
                "manifest trainable tensor list disagrees with its plan and dims: the bundle was edited "
                "or made by an incompatible fedhft; re-export it"
            )
        _check_tokenizer_bound(manifest)
        return manifest


def export_command(d: dict[str, Any], out: Path | None = None) -> str:
    """The `fedhft export` command that rebuilds the bundle a (possibly old) manifest dict describes."""

    def get(*path, default="?"):
        value: Any = d
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return default if value is None else value

    where = f" --out {out}" if out is not None else ""
    return (
        f"`fedhft export --model {get('base_model', 'id')} --num-labels {get('dims', 'num_labels')} "
        f"--tier {get('tier')} --backend {get('backend')}{where}`"
    )


def check_schema(d: dict[str, Any], bundle_dir: Path | None = None) -> None:
    """Refuse any manifest that is not schema 2, naming the command that re-exports it."""
    version = d.get("schema_version")
    if version == SCHEMA_VERSION:
        return
    out = Path(bundle_dir).parent.parent if bundle_dir is not None else None
    where = f"{Path(bundle_dir) / MANIFEST_NAME}: " if bundle_dir is not None else ""
    if version == 1:
        raise BundleError(
            f"{where}manifest schema_version 1 is no longer supported: it lacks what a device needs to train the "
            f"bundle (graph feed order and output names, the optimizer, the tokenizer bound; its tokenizer.json "
            f"pads to 128 tokens whatever the bundle accepts). Re-export the bundle with {export_command(d, out)}"
        )
    raise BundleError(
        f"{where}manifest schema_version {version!r} is not supported by this fedhft (speaks "
        f"{SCHEMA_VERSION}): re-export the bundle with {export_command(d, out)} or upgrade fedhft"
    )


def _check_semantics(d: dict[str, Any]) -> None:
    """The fixed semantics a schema-2 manifest states must be the ones this fedhft trains with."""
    wrong = [f"mask.{k}" for k, v in MASK_SEMANTICS.items() if d["mask"].get(k) != v]
    wrong += [f"task.{k}" for k, v in TASK_SEMANTICS.items() if d["task"].get(k) != v]
    wrong += ["initial_weights.scheme"] if d["initial_weights"].get("scheme") != INIT_SCHEME else []
    if wrong:
        raise ValueError(f"{', '.join(wrong)} differ from what this fedhft trains with")


def _check_tokenizer_bound(manifest: Manifest) -> None:
    bounds = manifest.seq_bounds()
    tok = manifest.tokenizer
    if tok is not None and bounds is not None and (tok.max_length, tok.min_length) != (bounds[1], bounds[0]):
        raise BundleError(
            f"manifest tokenizer lengths [{tok.min_length}, {tok.max_length}] differ from the "
            f"bundle's sequence bounds {list(bounds)}: the bundle was edited; re-export it"
        )


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_entry(bundle_dir: Path, name: str, role: str) -> FileEntry:
    path = Path(bundle_dir) / name
    return FileEntry(sha256_file(path), path.stat().st_size, role)


def write_manifest(bundle_dir: Path, manifest: Manifest) -> Path:
    path = Path(bundle_dir) / MANIFEST_NAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def bundle_digest(bundle_dir: Path) -> str:
    """Identity of a bundle: the sha256 of its manifest (which pins every file's sha256)."""
    return sha256_file(Path(bundle_dir) / MANIFEST_NAME)


def load_manifest(bundle_dir: Path, verify_files: bool = True) -> Manifest:
    """Read and check a bundle. Raises BundleError naming the bad file and the fix."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{bundle_dir} has no {MANIFEST_NAME}: it is not a fedhft bundle (run `fedhft export`)")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}): the manifest is corrupted; re-export the bundle") from exc
    if not isinstance(raw, dict):
        raise BundleError(f"{path} must hold a JSON object: re-export the bundle")
    check_schema(raw, bundle_dir)
    manifest = Manifest.from_dict(raw)
    if verify_files:
        verify_bundle_files(bundle_dir, manifest)
        verify_tokenizer_file(bundle_dir, manifest)
    return manifest


def verify_bundle_files(bundle_dir: Path, manifest: Manifest) -> None:
    problems = []
    for name, entry in manifest.files.items():
        fpath = Path(bundle_dir) / name
        if not fpath.is_file():
            problems.append(f"{name} is missing")
        elif fpath.stat().st_size != entry.size:
            problems.append(f"{name} has {fpath.stat().st_size} bytes, the manifest says {entry.size}")
        elif sha256_file(fpath) != entry.sha256:
            problems.append(f"{name} sha256 does not match the manifest")
    if problems:
        raise BundleError(
            f"bundle {bundle_dir} does not match its manifest: {'; '.join(problems)}. The bundle is corrupted "
            f"or incomplete: delete it and re-export (or re-download) it"
        )


def tokenizer_file_lengths(path: Path) -> tuple[int | None, int | None]:
    """(truncation max_length, fixed padding length) a tokenizer.json applies by default (None: none)."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    truncation, padding = raw.get("truncation") or {}, raw.get("padding") or {}
    strategy = padding.get("strategy")
    fixed = strategy.get("Fixed") if isinstance(strategy, dict) else None
    return truncation.get("max_length"), fixed


def verify_tokenizer_file(bundle_dir: Path, manifest: Manifest) -> None:
    """The tokenizer file must truncate and pad to the bundle's bound: a longer default (the schema-1
    trap: 128 tokens for a 64-token bundle) is accepted silently by ORT and refused by ExecuTorch."""
    if manifest.tokenizer is None:
        return
    path = Path(bundle_dir) / manifest.tokenizer.file
    try:
        lengths = tokenizer_file_lengths(path)
    except (OSError, ValueError, AttributeError) as exc:
        raise BundleError(f"{path} is not a readable tokenizer JSON ({exc}): re-export the bundle") from exc
    want = (manifest.tokenizer.max_length, manifest.tokenizer.max_length)
    if lengths != want:
        raise BundleError(
            f"{path} truncates to {lengths[0]} and pads to {lengths[1]} tokens, the bundle accepts at "
            f"most {want[0]}: the file was replaced; re-export the bundle"
        )

"""The bundle manifest: one versioned JSON file that describes a compiled training bundle.

Both sides read it: the exporter writes it, the edge runtime loads a bundle through it, the
server tells clients which bundle (and its digest) to train. It never imports torch.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devices import AdapterPlan
from fedhft.layout import MaskSlice, ModelDims, TensorSpec, mask_layout, trainable_layout

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
BACKENDS = ("torch", "ort", "executorch")


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
            "mask": {"length": self.mask_length, "layout": [s.to_dict() for s in self.mask_layout]},
            "inputs": [i.to_dict() for i in self.inputs],
            "files": {n: {"sha256": e.sha256, "size": e.size, "role": e.role} for n, e in sorted(self.files.items())},
            "quantization": self.quantization,
            "backend_extras": self.backend_extras,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Manifest":
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise BundleError(
                f"manifest schema_version {version!r} is not supported by this fedhft (speaks {SCHEMA_VERSION}): "
                f"re-export the bundle with this version or upgrade fedhft"
            )
        try:
            manifest = cls(
                backend=d["backend"], tier=d["tier"], plan=AdapterPlan.from_dict(d["plan"]),
                dims=ModelDims.from_dict(d["dims"]), base_model_id=d["base_model"]["id"],
                base_weights_sha256=d["base_model"]["weights_sha256"],
                inputs=tuple(InputSpec.from_dict(i) for i in d["inputs"]),
                files={n: FileEntry(e["sha256"], int(e["size"]), e["role"]) for n, e in d["files"].items()},
                backend_extras=d.get("backend_extras", {}), quantization=d.get("quantization", {}),
                fedhft_version=d.get("fedhft_version", "?"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"manifest is malformed ({type(exc).__name__}: {exc}): re-export the bundle") from exc
        if manifest.backend not in BACKENDS:
            raise BundleError(f"manifest backend {manifest.backend!r} unknown; expected one of {BACKENDS}")
        recorded = [TensorSpec.from_dict(s) for s in d.get("trainable", [])]
        if recorded != manifest.trainable:
            raise BundleError("manifest trainable tensor list disagrees with its plan and dims: the bundle was edited "
                              "or made by an incompatible fedhft; re-export it")
        return manifest


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
    manifest = Manifest.from_dict(raw)
    if verify_files:
        verify_bundle_files(bundle_dir, manifest)
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

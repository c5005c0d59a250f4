"""Export orchestration: model + tier + backend -> one training bundle with its manifest.

Each backend compiler is a function ``compile(ctx, bundle_dir) -> CompiledBundle`` in its own
module, imported lazily so that a missing optional runtime only fails when that backend is asked for.
"""

from __future__ import annotations

import importlib
import shutil
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from devices import AdapterPlan
from bundle_runtime import AdapterModel, build_adapter_model
from fedhft.layout import ModelDims, init_trainable, mask_length
from fedhft import __version__
from fedhft.manifest import BACKENDS, InputSpec, Manifest, OptimizerSpec, file_entry, write_manifest
from export._backbone import BackboneSource, load_encoder, resolve_model, weights_sha256, write_tokenizer

_COMPILERS = {"torch": "export._torch_backend", "ort": "export._ort_backend", "executorch": "export._et_backend"}
_EXTRAS = {"torch": None, "ort": "ort", "executorch": "executorch"}
# The runtimes each compiler needs, probed up front so a missing extra fails before any slow work.
_RUNTIME_MODULES = {"torch": ("torch",), "ort": ("onnx", "onnxruntime.training"), "executorch": ("executorch.exir",)}
MIN_SEQ = 8


@dataclass
class ExportContext:
    """Everything a backend compiler needs. ``model`` holds the round-0 trainable state."""

    model: AdapterModel
    plan: AdapterPlan
    dims: ModelDims
    source: BackboneSource
    tier: str
    init_state: dict[str, np.ndarray]
    progress: Callable[[str], None] = print

    def example_inputs(self, batch: int | None = None, seq: int | None = None) -> tuple[torch.Tensor, ...]:
        """(input_ids, attention_mask, labels, mask) at the plan's largest shape, deterministic."""
        b, s = batch or self.plan.batch_size, seq or self.plan.max_seq_len
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(1000, 2000, (b, s), generator=g)
        attn = torch.ones(b, s, dtype=torch.long)
        labels = torch.randint(0, self.dims.num_labels, (b,), generator=g)
        mask = torch.ones(self._mask_len)
        return ids, attn, labels, mask

    @cached_property
    def _mask_len(self) -> int:
        # Computed once: plan and dims are frozen dataclasses, and nothing reassigns them on a context.
        return mask_length(self.plan, self.dims)

    def input_specs(self, dynamic: bool = True) -> tuple[InputSpec, ...]:
        b, s, m = self.plan.batch_size, self.plan.max_seq_len, self._mask_len
        bounds = {"batch": [1, b], "seq": [MIN_SEQ, s]} if dynamic else {}
        bs = ("batch", "seq") if dynamic else (b, s)
        return (
            InputSpec("input_ids", "int64", bs, bounds),
            InputSpec("attention_mask", "int64", bs, bounds),
            InputSpec("labels", "int64", bs[:1], {"batch": bounds["batch"]} if dynamic else {}),
            InputSpec("mask", "float32", (m,), {}),
        )


@dataclass
class CompiledBundle:
    files: dict[str, str]  # relative file name -> role
    inputs: tuple[InputSpec, ...]
    extras: dict = field(default_factory=dict)
    #: The bundle file that runs the optimizer step, or "app" when the device code must (see OptimizerSpec).
    optimizer_runs_in: str = "app"


@dataclass
class ExportResult:
    tier: str
    backend: str
    bundle_dir: Path
    seconds: float
    size_bytes: int
    manifest: Manifest


def backend_compiler(backend: str):
    if backend not in _COMPILERS:
        raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)} or 'all'")
    try:
        for module in _RUNTIME_MODULES[backend]:
            importlib.import_module(module)
        return importlib.import_module(_COMPILERS[backend]).compile_bundle
    except ImportError as exc:
        extra = _EXTRAS[backend]
        hint = f"pip install 'fedhft[{extra}]'" if extra else "pip install fedhft"
        raise ImportError(
            f"the {backend} backend needs a package that is missing ({exc.name or exc}): install it with: {hint}"
        ) from exc


def quantization_report(model: AdapterModel, fp32_bytes: int) -> dict:
    stored = sum(t.numel() * t.element_size() for k, t in model.encoder.state_dict().items() if ".lora_" not in k)
    return {
        "precision": model.plan.precision,
        "backbone_bytes_fp32": fp32_bytes,
        "backbone_bytes_stored": stored,
        "bytes_saved": fp32_bytes - stored,
    }


def export_bundle(
    model_spec: str,
    num_labels: int,
    tier: str,
    plan: AdapterPlan,
    backend: str,
    out_dir: Path,
    progress: Callable[[str], None] = print,
    seed: int = 0,
) -> ExportResult:
    """Compile one bundle into ``out_dir/<tier>/<backend>/``."""
    compile_fn = backend_compiler(backend)
    source = resolve_model(model_spec)
    started = time.perf_counter()
    encoder = load_encoder(source)
    base_sha = weights_sha256(encoder)
    fp32_bytes = sum(t.numel() * t.element_size() for t in encoder.state_dict().values())
    model = build_adapter_model(encoder, plan, num_labels)
    state = init_trainable(plan, model.dims, seed)
    model.set_trainable(state)
    bundle_dir = Path(out_dir) / tier / backend
    if bundle_dir.exists():
        shutil.rmtree(bundle_dir)
    bundle_dir.mkdir(parents=True)
    ctx = ExportContext(model, plan, model.dims, source, tier, state, progress)
    compiled = compile_fn(ctx, bundle_dir)
    files = dict(compiled.files)
    ids = next(spec for spec in compiled.inputs if spec.name == "input_ids")
    shortest = ids.bounds["seq"][0] if "seq" in ids.bounds else plan.max_seq_len  # a static program takes one length
    tokenizer = write_tokenizer(source, bundle_dir, plan.max_seq_len, shortest)
    files[tokenizer.file] = "tokenizer"
    manifest = Manifest(
        backend=backend,
        tier=tier,
        plan=plan,
        dims=model.dims,
        base_model_id=source.model_id,
        base_weights_sha256=base_sha,
        inputs=compiled.inputs,
        files={name: file_entry(bundle_dir, name, role) for name, role in files.items()},
        backend_extras=compiled.extras,
        quantization=quantization_report(model, fp32_bytes),
        fedhft_version=__version__,
        tokenizer=tokenizer,
        optimizer=OptimizerSpec(runs_in=compiled.optimizer_runs_in),
        init_seed=seed,
    )
    write_manifest(bundle_dir, manifest)
    size = sum(e.size for e in manifest.files.values())
    return ExportResult(tier, backend, bundle_dir, time.perf_counter() - started, size, manifest)


def export_all(
    model_spec: str,
    num_labels: int,
    tiers: dict[str, AdapterPlan],
    backends: list[str],
    out_dir: Path,
    progress: Callable[[str], None] = print,
) -> list[ExportResult]:
    for backend in backends:  # fail fast on a missing runtime before any slow work
        backend_compiler(backend)
    results = []
    for tier, plan in tiers.items():
        for backend in backends:
            progress(f"exporting {tier}/{backend} ...")
            result = export_bundle(model_spec, num_labels, tier, plan, backend, out_dir, progress)
            progress(f"  {tier}/{backend}: {result.size_bytes / 1e6:.1f} MB in {result.seconds:.1f} s")
            results.append(result)
    return results

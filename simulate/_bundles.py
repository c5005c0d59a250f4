"""Bundles for a simulation: one per (tier, backend), exported once and cached across runs.

Exporting is slow (an ExecuTorch MiniLM program takes minutes on 2 cores), so bundles live in a
cache keyed by everything that changes their bytes: base model, tier name, backend, number of
labels, the (capped) AdapterPlan and the export seed. A run's ``bundles/<tier>/<backend>`` is a
symlink into the cache; the server and the edge devices only ever see that folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from devices import AdapterPlan

#: Bump when the export output changes in a way the key above does not capture.
CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fedhft" / "bundles"


def fit_plan(plan: AdapterPlan, num_layers: int, max_seq_len: int | None, batch_size: int | None) -> AdapterPlan:
    """The tier's plan for this model and the run's caps: a plan deeper than the model (the catalog
    is sized for 6-layer MiniLM, tests use a 2-layer model) keeps its top ``num_layers`` ranks, as
    LEGEND counts layers from the output; seq/batch are capped so a run fits a small machine."""
    depth = min(plan.depth, num_layers)
    seq = min(plan.max_seq_len, max_seq_len) if max_seq_len else plan.max_seq_len
    batch = min(plan.batch_size, batch_size) if batch_size else plan.batch_size
    return replace(plan, depth=depth, ranks=tuple(plan.ranks[-depth:]), max_seq_len=seq, batch_size=batch)


def cache_key(model_id: str, tier: str, backend: str, num_labels: int, plan: AdapterPlan, seed: int) -> str:
    text = json.dumps(
        {
            "format": CACHE_FORMAT,
            "model": model_id,
            "tier": tier,
            "backend": backend,
            "num_labels": num_labels,
            "plan": plan.to_dict(),
            "seed": seed,
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _cached_ok(bundle: Path) -> bool:
    """A finished export (the manifest is written last) whose files still match their digests."""
    from fedhft.manifest import BundleError, load_manifest

    if not (bundle / "manifest.json").is_file():
        return False
    try:
        load_manifest(bundle, verify_files=True)
    except (BundleError, OSError, ValueError):
        return False
    return True


def ensure_bundle(
    model: str,
    model_id: str,
    num_labels: int,
    tier: str,
    plan: AdapterPlan,
    backend: str,
    cache_dir: Path,
    seed: int = 0,
    say: Callable[[str], None] = print,
) -> tuple[Path, float]:
    """The cached bundle dir for these settings, exporting it first when missing. Returns
    (bundle dir, export seconds; 0.0 for a cache hit)."""
    key = cache_key(model_id, tier, backend, num_labels, plan, seed)
    root = Path(cache_dir).expanduser() / key
    bundle = root / tier / backend
    if _cached_ok(bundle):
        say(f"bundle {tier}/{backend}: cached ({bundle})")
        return bundle, 0.0
    from export import export_bundle

    say(
        f"bundle {tier}/{backend}: exporting {model} (depth {plan.depth}, ranks {list(plan.ranks)}, "
        f"{plan.precision}, seq {plan.max_seq_len}, batch {plan.batch_size}) ..."
    )
    started = time.perf_counter()
    # Export into a private temp folder, then rename: a Ctrl-C mid-export never leaves a half
    # bundle under the key (and two runs exporting the same key do not write into each other).
    tmp = root / f".tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        export_bundle(model, num_labels, tier, plan, backend, tmp, progress=lambda m: say(f"  {m}"), seed=seed)
        bundle.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(bundle, ignore_errors=True)
        os.replace(tmp / tier / backend, bundle)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - started
    say(f"bundle {tier}/{backend}: exported in {seconds:.0f} s")
    return bundle, seconds


def link_bundles(run_bundles: Path, bundles: dict[tuple[str, str], Path]) -> Path:
    """``run_bundles/<tier>/<backend>`` -> cached bundle dirs (symlinks; copies where links fail)."""
    for (tier, backend), src in bundles.items():
        dst = run_bundles / tier / backend
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_symlink() or dst.exists():
            continue
        try:
            dst.symlink_to(src.resolve(), target_is_directory=True)
        except OSError:  # filesystems without symlinks
            shutil.copytree(src, dst)
    return run_bundles


def model_identity(model: str, num_labels: int):
    """(model id as the manifest records it, number of encoder layers) without exporting anything."""
    from bundle_runtime import model_dims_from_config
    from export import resolve_model

    source = resolve_model(model)
    if source.path is None:
        return source.model_id, int(source.tiny["layers"])
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source.path, local_files_only=True)
    return source.model_id, model_dims_from_config(config, num_labels).num_layers

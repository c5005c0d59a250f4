"""The tier catalog: named device classes with their budgets and AdapterPlans (``tiers.yaml``).

``load_catalog`` validates the whole file and reports every problem at once (a ``CatalogError``
listing each as ``tiers.<name>.<field>: ...``), so a catalog author fixes them in one pass.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from devices._plan import BACKENDS, AdapterPlan

CATALOG_SCHEMA_VERSION = 1
_TOP_KEYS = {"schema_version", "num_layers", "rank_profile", "tiers"}


class CatalogError(ValueError):
    """The tier catalog is invalid; ``errors`` lists every problem found."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source, self.errors = source, list(errors)
        super().__init__(
            f"{source}: {len(errors)} error(s) in the tier catalog:\n" + "\n".join(f"  - {e}" for e in errors)
        )


@dataclass(frozen=True)
class TierSpec:
    """One device class: its resource budgets, default backend and the AdapterPlan it trains."""

    name: str = field(metadata={"help": "tier id, e.g. android-mid"})
    description: str = field(metadata={"help": "what devices belong to this tier"})
    memory_budget_mb: float = field(metadata={"help": "peak RSS allowed for the training process, MB"})
    battery_threshold: float = field(
        metadata={"help": "percent; a device on battery (not charging) below it skips the round; 0 never skips"}
    )
    compute_gflops: float = field(metadata={"help": "sustained fp32 matmul GFLOP/s of a device of this tier"})
    default_backend: str = field(metadata={"help": "training backend: executorch, ort or torch"})
    plan: AdapterPlan = field(metadata={"help": "what this tier trains (depth, ranks, mask density, shapes)"})

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "memory_budget_mb": self.memory_budget_mb,
            "battery_threshold": self.battery_threshold,
            "compute_gflops": self.compute_gflops,
            "default_backend": self.default_backend,
            "plan": self.plan.to_dict(),
        }


# field -> (check, what it must be); the checks take the raw YAML value
_NUMBER_FIELDS = {
    "memory_budget_mb": (lambda v: v > 0, "a number > 0"),
    "battery_threshold": (lambda v: 0 <= v <= 100, "a number in [0, 100]"),
    "compute_gflops": (lambda v: v > 0, "a number > 0"),
}
_TIER_FIELDS = {"description", "default_backend", "plan", *_NUMBER_FIELDS}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_top(doc: Any, errors: list[str]) -> tuple[int | None, list[int] | None]:
    """Top-level keys; returns (num_layers, rank_profile) where they are usable, else None."""
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        errors.append(f"unknown top-level key(s) {unknown}; known: {sorted(_TOP_KEYS)}")
    if doc.get("schema_version") != CATALOG_SCHEMA_VERSION:
        errors.append(f"schema_version must be {CATALOG_SCHEMA_VERSION}, got {doc.get('schema_version')!r}")
    layers = doc.get("num_layers")
    if not (isinstance(layers, int) and not isinstance(layers, bool) and layers >= 1):
        errors.append(f"num_layers must be an integer >= 1, got {layers!r}")
        layers = None
    profile = doc.get("rank_profile")
    if not (
        isinstance(profile, list)
        and profile
        and all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in profile)
    ):
        errors.append(f"rank_profile must be a list of integers >= 1 (one per layer, bottom first), got {profile!r}")
        return layers, None
    if any(b < a for a, b in zip(profile, profile[1:])):
        errors.append(f"rank_profile must be non-decreasing toward the output, got {profile}")
    if layers is not None and len(profile) != layers:
        errors.append(f"rank_profile has {len(profile)} entries but num_layers is {layers}: give one rank per layer")
    return layers, profile


def _check_plan(
    where: str, raw: Any, layers: int | None, profile: list[int] | None, errors: list[str]
) -> AdapterPlan | None:
    if not isinstance(raw, Mapping):
        errors.append(f"{where}.plan must be a mapping of AdapterPlan fields, got {type(raw).__name__}")
        return None
    try:
        plan = AdapterPlan.from_dict(dict(raw))
    except (TypeError, ValueError) as exc:
        errors.append(f"{where}.plan: {exc}")
        return None
    for problem in plan.problems(layers):
        errors.append(f"{where}.plan: {problem}")
    if profile is not None and plan.depth <= len(profile) and list(plan.ranks) != profile[len(profile) - plan.depth :]:
        errors.append(
            f"{where}.plan: ranks {list(plan.ranks)} differ from the shared rank_profile's top {plan.depth} "
            f"entries {profile[len(profile) - plan.depth :]}: use those, so every tier gives a layer the same rank"
        )
    return plan


def _check_tier(
    name: Any, raw: Any, layers: int | None, profile: list[int] | None, errors: list[str]
) -> TierSpec | None:
    where = f"tiers.{name}"
    if not isinstance(name, str) or not name:
        errors.append(f"tier names must be non-empty strings, got {name!r}")
        return None
    if not isinstance(raw, Mapping):
        errors.append(f"{where} must be a mapping, got {type(raw).__name__}")
        return None
    n_before = len(errors)
    unknown = sorted(set(raw) - _TIER_FIELDS)
    if unknown:
        errors.append(f"{where}: unknown field(s) {unknown}; known: {sorted(_TIER_FIELDS)}")
    missing = sorted(_TIER_FIELDS - set(raw))
    if missing:
        errors.append(f"{where}: missing field(s) {missing}")
    for key, (ok, what) in _NUMBER_FIELDS.items():
        if key in raw and not (_is_number(raw[key]) and ok(raw[key])):
            errors.append(f"{where}.{key} must be {what}, got {raw[key]!r}")
    if "description" in raw and not isinstance(raw["description"], str):
        errors.append(f"{where}.description must be a string, got {raw['description']!r}")
    if "default_backend" in raw and raw["default_backend"] not in BACKENDS:
        errors.append(f"{where}.default_backend must be one of {list(BACKENDS)}, got {raw['default_backend']!r}")
    plan = _check_plan(where, raw["plan"], layers, profile, errors) if "plan" in raw else None
    if len(errors) > n_before or plan is None:
        return None
    return TierSpec(
        name=name,
        description=raw["description"],
        memory_budget_mb=float(raw["memory_budget_mb"]),
        battery_threshold=float(raw["battery_threshold"]),
        compute_gflops=float(raw["compute_gflops"]),
        default_backend=raw["default_backend"],
        plan=plan,
    )


def parse_catalog(doc: Any, source: str = "<catalog>") -> dict[str, TierSpec]:
    """Validate an already-parsed catalog document; raises CatalogError listing every problem."""
    if not isinstance(doc, Mapping):
        raise CatalogError(
            source, [f"the catalog must be a mapping with keys {sorted(_TOP_KEYS)}, got {type(doc).__name__}"]
        )
    errors: list[str] = []
    layers, profile = _check_top(doc, errors)
    tiers = doc.get("tiers")
    if not isinstance(tiers, Mapping) or not tiers:
        errors.append(f"tiers must be a non-empty mapping of tier name -> fields, got {tiers!r}")
        tiers = {}
    specs = {}
    for name, raw in tiers.items():
        spec = _check_tier(name, raw, layers, profile, errors)
        if spec is not None:
            specs[name] = spec
    if errors:
        raise CatalogError(source, errors)
    return specs


def _parse_text(text: str, source: str) -> dict[str, TierSpec]:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError(source, [f"not valid YAML: {exc}"]) from None
    return parse_catalog(doc, source)


@functools.lru_cache(maxsize=1)
def _packaged() -> tuple[tuple[str, TierSpec], ...]:
    # Cached because the profiler, planner and CLI all read it and package data does not change.
    text = resources.files("devices").joinpath("tiers.yaml").read_text(encoding="utf-8")
    return tuple(_parse_text(text, "devices/tiers.yaml").items())


def load_catalog(path: str | Path | None = None) -> dict[str, TierSpec]:
    """Tiers by name, in file order: the packaged ``tiers.yaml``, or the YAML file at ``path``."""
    if path is None:
        return dict(_packaged())  # a fresh dict: callers may mutate theirs
    return _parse_text(Path(path).read_text(encoding="utf-8"), str(path))


def get_tier(name: str, catalog: Mapping[str, TierSpec] | None = None) -> TierSpec:
    """The tier called ``name``; ValueError naming the known tiers if there is none."""
    catalog = load_catalog() if catalog is None else catalog
    if name not in catalog:
        raise ValueError(f"unknown tier {name!r}; known tiers: {', '.join(catalog)}")
    return catalog[name]

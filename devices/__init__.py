"""Device tiers, profiler and planner. Imports nothing else of fedhft's."""

from devices._plan import BACKENDS, PRECISIONS, TARGET_GROUPS, AdapterPlan
from devices._catalog import CatalogError, TierSpec, get_tier, load_catalog
from devices._planner import (
    ACTIVATION_FACTOR,
    RUNTIME_BASELINE_MB,
    Budget,
    Estimate,
    ModelShape,
    PlanError,
    default_rank_profile,
    estimate,
    plan_for,
)
from devices._profiler import DeviceProfile, device_gflops, profile_device, recommend_tier

__all__ = [
    "AdapterPlan",
    "PRECISIONS",
    "TARGET_GROUPS",
    "CatalogError",
    "TierSpec",
    "get_tier",
    "load_catalog",
    "BACKENDS",
    "ACTIVATION_FACTOR",
    "RUNTIME_BASELINE_MB",
    "Budget",
    "Estimate",
    "ModelShape",
    "PlanError",
    "default_rank_profile",
    "estimate",
    "plan_for",
    "DeviceProfile",
    "device_gflops",
    "profile_device",
    "recommend_tier",
]

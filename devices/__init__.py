"""Device tiers, profiler and planner. Imports nothing else of fedhft's."""
from devices._plan import PRECISIONS, TARGET_GROUPS, AdapterPlan
from devices._catalog import CatalogError, TierSpec, get_tier, load_catalog
from devices._planner import BACKENDS, Budget, Estimate, ModelShape, PlanError, default_rank_profile, estimate, plan_for
from devices._profiler import DeviceProfile, profile_device, recommend_tier

__all__ = [
    "AdapterPlan",
    "PRECISIONS",
    "TARGET_GROUPS",
    "CatalogError",
    "TierSpec",
    "get_tier",
    "load_catalog",
    "BACKENDS",
    "Budget",
    "Estimate",
    "ModelShape",
    "PlanError",
    "default_rank_profile",
    "estimate",
    "plan_for",
    "DeviceProfile",
    "profile_device",
    "recommend_tier",
]

"""FedAvg-LoRA: the homogeneous baseline. Every client trains the same plan, the cheapest one
(smallest total rank, then depth, then density), with a full mask; A, B and the head are
averaged weighted by the given weights (normally example counts), as in McMahan et al."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from devices import AdapterPlan
from fedhft.layout import ModelDims

from server.strategies._base import ClientAssignment, ClientInfo
from server.strategies._factor import FactorStrategy


def cheapest_plan(plans) -> AdapterPlan:
    """The plan every device can run: smallest sum of ranks (depth x rank), then depth, density."""
    return min(plans, key=lambda p: (sum(p.ranks), p.depth, p.mask_density, repr(p)))


class FedAvgLoRA(FactorStrategy):
    name = "fedavg-lora"
    fold_scale = False

    def __init__(
        self,
        dims: ModelDims,
        *,
        seed: int = 0,
        plan: AdapterPlan | Mapping | None = None,
        backbone_dims: Mapping[str, ModelDims] | None = None,
    ):
        super().__init__(dims, seed=seed, backbone_dims=backbone_dims)
        self._configured_plan = AdapterPlan.from_dict(dict(plan)) if isinstance(plan, Mapping) else plan
        # Fixed for the whole run: pass ``plan`` (the catalog's cheapest tier) to be independent of
        # which tiers show up in round 0; otherwise the first configure picks and the state keeps it.
        self.plan = self._configured_plan

    @classmethod
    def fleet_options(cls, tier_plans: Mapping[str, AdapterPlan], options: Mapping[str, Any]) -> dict[str, Any]:
        """Pin the plan to the cheapest of the fleet's tiers: otherwise round 0's participants
        would choose it, and the bundles a fleet needs could not be known before it starts."""
        if options.get("plan") is not None or not tier_plans:
            return dict(options)
        return {**options, "plan": cheapest_plan(tier_plans.values()).to_dict()}

    @classmethod
    def tier_plans(cls, tier_plans: Mapping[str, AdapterPlan], options: Mapping[str, Any]) -> dict[str, AdapterPlan]:
        plan = cls.fleet_options(tier_plans, options).get("plan")
        plan = AdapterPlan.from_dict(dict(plan)) if isinstance(plan, Mapping) else plan
        return {tier: plan for tier in tier_plans}

    def configure(
        self, round_idx: int, clients: list[ClientInfo], rng: np.random.Generator | None = None
    ) -> dict[str, ClientAssignment]:
        if self.plan is None and clients:
            self.plan = cheapest_plan(c.plan for c in clients)
        return super().configure(round_idx, clients, rng)

    def plan_for(self, client: ClientInfo) -> AdapterPlan:
        if self.plan is None:
            self.plan = client.plan
        return self.plan

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg["plan"] = self._configured_plan.to_dict() if self._configured_plan else None
        return cfg

    def _extra_meta(self) -> dict[str, Any]:
        return {"plan": self.plan.to_dict() if self.plan else None}

    def _load_tensors(self, tensors, meta) -> None:
        super()._load_tensors(tensors, meta)
        self.plan = AdapterPlan.from_dict(meta["plan"]) if meta.get("plan") else None

"""The bundles the server hands out: ``<bundles_dir>/<tier>/<backend>/manifest.json`` (export's output).

A bundle is identified by what it compiles: its AdapterPlan, its backend and its base model. The
tier in its folder name only says which tier's plan it was exported for; a strategy that assigns
a device another tier's plan (FedAvg-LoRA: everyone trains the cheapest plan) is served that
plan's bundle for the device's own backend. ``needed_bundles`` lists what a fleet needs before it
starts, so a missing one is found at start, not as a failed task in every round.

Each bundle is verified once at start (every file's sha256 against its manifest), so a client is
never told to train a corrupted bundle. A bundle's id names tier, backend and the first hex digits
of its manifest digest: a re-export gets a new id, so devices never mix files of two exports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from devices import AdapterPlan
from fedhft.layout import ModelDims
from fedhft.manifest import MANIFEST_NAME, BundleError, Manifest, bundle_digest, load_manifest
from fedhft.protocol import BundleChunk, iter_file_chunks

from server.strategies import STRATEGIES, ClientInfo

DEFAULT_BACKBONE = "default"  # ClientInfo's default: single-backbone runs keep strategy keys stable


@dataclass(frozen=True)
class BundleInfo:
    tier: str
    backend: str
    dir: Path
    manifest: Manifest
    sha256: str  # bundle_digest: the manifest's sha256

    @property
    def bundle_id(self) -> str:
        return f"{self.tier}.{self.backend}.{self.sha256[:16]}"

    @property
    def plan(self) -> AdapterPlan:
        return self.manifest.plan

    def files(self) -> dict[str, tuple[str, int]]:
        """Every file a device needs (manifest first): name -> (sha256, size)."""
        out = {MANIFEST_NAME: (self.sha256, (self.dir / MANIFEST_NAME).stat().st_size)}
        out.update({n: (e.sha256, e.size) for n, e in sorted(self.manifest.files.items())})
        return out


class BundleIndex:
    """All bundles under one folder, by (tier, backend) and by bundle id."""

    def __init__(self, bundles: list[BundleInfo]):
        if not bundles:
            raise BundleError(
                "no bundles: run `fedhft export` into bundles_dir first (it writes <tier>/<backend>/manifest.json)"
            )
        self.bundles = {(b.tier, b.backend): b for b in sorted(bundles, key=lambda b: (b.tier, b.backend))}
        self.by_id = {b.bundle_id: b for b in bundles}
        plans: dict[str, AdapterPlan] = {}
        models: dict[str, str] = {}
        for b in bundles:
            if (
                plans.setdefault(b.tier, b.plan) != b.plan
                or models.setdefault(b.tier, b.manifest.base_model_id) != b.manifest.base_model_id
            ):
                raise BundleError(
                    f"tier {b.tier!r} has different plans or base models in its backends: re-export the tier"
                )
        self.plans = plans
        self._set_backbones(bundles, models)

    def _set_backbones(self, bundles: list[BundleInfo], models: dict[str, str]) -> None:
        """Backbone name per tier: ``default`` when every tier shares one base model (the usual
        case), else the base model id (HeteroTune: one backbone per device class)."""
        dims: dict[str, ModelDims] = {}
        for b in bundles:
            if dims.setdefault(b.manifest.base_model_id, b.manifest.dims) != b.manifest.dims:
                raise BundleError(
                    f"bundles of base model {b.manifest.base_model_id!r} disagree on its dims: re-export them"
                )
        if len(dims) == 1:
            self.tier_backbone = {t: DEFAULT_BACKBONE for t in self.plans}
            self.backbone_dims = {DEFAULT_BACKBONE: next(iter(dims.values()))}
        else:
            self.tier_backbone = dict(models)
            self.backbone_dims = dict(sorted(dims.items()))
        # The strategy's main dims: the backbone most tiers use (ties: the first by name).
        counts = {name: sum(1 for t in self.tier_backbone.values() if t == name) for name in self.backbone_dims}
        self.primary = max(sorted(counts), key=lambda n: counts[n])
        self.dims: ModelDims = self.backbone_dims[self.primary]

    @property
    def multi_backbone(self) -> bool:
        return len(self.backbone_dims) > 1

    def client_info(self, client_id: str, tier: str) -> ClientInfo:
        """What the strategy needs to know of a client of ``tier``: plan and backbone."""
        return ClientInfo(client_id, tier, self.plans[tier], backbone=self.tier_backbone[tier])

    @classmethod
    def scan(cls, bundles_dir: str | Path, verify_files: bool = True) -> "BundleIndex":
        root = Path(bundles_dir)
        if not root.is_dir():
            raise BundleError(f"bundles_dir {root} does not exist: run `fedhft export --out {root}` first")
        found = []
        for manifest_path in sorted(root.glob(f"*/*/{MANIFEST_NAME}")):
            bdir = manifest_path.parent
            manifest = load_manifest(bdir, verify_files=verify_files)
            if (manifest.tier, manifest.backend) != (bdir.parent.name, bdir.name):
                raise BundleError(
                    f"{bdir} holds a {manifest.tier}/{manifest.backend} bundle: move it to "
                    f"{root / manifest.tier / manifest.backend}"
                )
            found.append(BundleInfo(manifest.tier, manifest.backend, bdir, manifest, bundle_digest(bdir)))
        if not found:
            raise BundleError(
                f"no <tier>/<backend>/{MANIFEST_NAME} under {root}: run `fedhft export --out {root}` first"
            )
        return cls(found)

    @property
    def tiers(self) -> list[str]:
        return sorted(self.plans)

    def backends(self, tier: str) -> list[str]:
        return sorted(b for t, b in self.bundles if t == tier)

    def get(self, tier: str, backend: str) -> BundleInfo:
        try:
            return self.bundles[(tier, backend)]
        except KeyError:
            raise BundleError(
                f"no bundle for tier {tier!r} backend {backend!r}; have {sorted(self.bundles)}: "
                "export it (fedhft export --tier ... --backend ...)"
            ) from None

    def find(self, plan: AdapterPlan, backend: str, device_tier: str) -> BundleInfo:
        """The bundle that trains ``plan`` with ``backend`` on the backbone of ``device_tier``'s
        devices; the device tier's own bundle wins when several compile the same plan."""
        backbone = self.tier_backbone.get(device_tier)
        matches = [
            b
            for b in self.bundles.values()
            if b.plan == plan and b.backend == backend and self.tier_backbone[b.tier] == backbone
        ]
        if not matches:
            need = BundleNeed(_home_tier(plan, self.plans), plan, backend, (device_tier,))
            raise BundleError(
                f"no {backend} bundle compiles the plan assigned to a {device_tier} device "
                f"({need.describe()}): {need.export_hint(self)}"
            )
        return next((b for b in matches if b.tier == device_tier), matches[0])

    def missing(self, strategy: str, options: Mapping[str, Any]) -> list["BundleNeed"]:
        """Bundles the strategy will need that are not here. The fleet is what the bundles say:
        a device of tier T that runs backend B is expected wherever a T/B bundle exists."""
        devices = {tier: self.backends(tier) for tier in self.tiers}
        out = []
        for need in needed_bundles(strategy, options, self.plans, devices):
            try:
                self.find(need.plan, need.backend, need.for_tiers[0])
            except BundleError:
                out.append(need)
        return out

    def chunks(
        self,
        bundle_id: str,
        fleet: str,
        chunk_size: int,
        files: list[str] | None = None,
        indices: list[int] | None = None,
    ) -> Iterator[BundleChunk]:
        """Chunks of the requested files of a bundle (all of them when ``files`` is None).

        Unknown file names are skipped: the device asks again for what it still lacks.
        """
        info = self.by_id.get(bundle_id)
        if info is None:
            raise BundleError(f"unknown bundle id {bundle_id!r}: the device should use the id of its current task")
        catalog = info.files()
        for name in files if files is not None else list(catalog):
            if name not in catalog:
                continue
            yield from iter_file_chunks(
                info.dir / name,
                fleet=fleet,
                bundle_id=bundle_id,
                file=name,
                chunk_size=chunk_size,
                indices=indices,
                file_digest=catalog[name][0],
            )


@dataclass(frozen=True)
class BundleNeed:
    """A bundle a fleet needs: ``plan`` compiled for ``backend``, exported under ``tier`` (a tier
    whose own plan it is), trained by the devices of ``for_tiers``."""

    tier: str
    plan: AdapterPlan
    backend: str
    for_tiers: tuple[str, ...]

    def describe(self) -> str:
        used = ", ".join(self.for_tiers)
        return (
            f"{self.tier}'s plan (depth {self.plan.depth}, ranks {list(self.plan.ranks)}, {self.plan.precision}) "
            f"on {self.backend}, trained by {used} devices"
        )

    def export_hint(self, index: "BundleIndex | None" = None) -> str:
        """The export command (the manifest's base model id is a valid ``--model``)."""
        model, where = "<the base model>", ""
        if index is not None and index.bundles:
            some = next(
                (b for b in index.bundles.values() if b.tier in self.for_tiers), next(iter(index.bundles.values()))
            )
            model = some.manifest.base_model_id
            where = f" --num-labels {some.manifest.dims.num_labels} --out {some.dir.parent.parent}"
        return f"export it with `fedhft export --model {model} --tier {self.tier} --backend {self.backend}{where}`"


def needed_bundles(
    strategy: str,
    options: Mapping[str, Any],
    tier_plans: Mapping[str, AdapterPlan],
    device_backends: Mapping[str, Iterable[str]],
) -> list[BundleNeed]:
    """Every (plan, backend) bundle a fleet needs under ``strategy``: each device tier's own plan
    (the registry matches a device to its tier's bundle) and the plan the strategy assigns it,
    for each backend its devices run. ``tier_plans``: each present tier's own plan;
    ``device_backends``: the backends the devices of each tier run."""
    cls = STRATEGIES.get(strategy)
    if cls is None:
        raise ValueError(f"unknown strategy {strategy!r}; known strategies: {', '.join(sorted(STRATEGIES))}")
    assigned = cls.tier_plans(tier_plans, options)
    needs: dict[tuple[str, str], set[str]] = {}
    for tier, backends in sorted(device_backends.items()):
        for plan in {tier_plans[tier], assigned[tier]}:
            home = tier if tier_plans[tier] == plan else _home_tier(plan, tier_plans)
            for backend in backends:
                needs.setdefault((home, backend), (plan, set()))[1].add(tier)
    return [
        BundleNeed(home, plan, backend, tuple(sorted(users)))
        for (home, backend), (plan, users) in sorted(needs.items())
    ]


def _home_tier(plan: AdapterPlan, tier_plans: Mapping[str, AdapterPlan]) -> str:
    """The folder a plan is exported under: the first tier whose own plan it is, else (a plan set
    in the strategy's options) ``custom-<digest>``."""
    import hashlib
    import json

    for tier, own in sorted(tier_plans.items()):
        if own == plan:
            return tier
    return "custom-" + hashlib.sha256(json.dumps(plan.to_dict(), sort_keys=True).encode()).hexdigest()[:8]

"""The bundles the server hands out: ``<bundles_dir>/<tier>/<backend>/manifest.json`` (export's output).

Each bundle is verified once at start (every file's sha256 against its manifest), so a client is
never told to train a corrupted bundle. A bundle's id names tier, backend and the first hex digits
of its manifest digest: a re-export gets a new id, so devices never mix files of two exports.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from devices import AdapterPlan
from fedhft.layout import ModelDims
from fedhft.manifest import MANIFEST_NAME, BundleError, Manifest, bundle_digest, load_manifest
from fedhft.protocol import BundleChunk, iter_file_chunks

from server.strategies import ClientInfo

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
            raise BundleError("no bundles: run `fedhft export` into bundles_dir first (it writes <tier>/<backend>/manifest.json)")
        self.bundles = {(b.tier, b.backend): b for b in bundles}
        self.by_id = {b.bundle_id: b for b in bundles}
        plans: dict[str, AdapterPlan] = {}
        models: dict[str, str] = {}
        for b in bundles:
            if plans.setdefault(b.tier, b.plan) != b.plan or models.setdefault(b.tier, b.manifest.base_model_id) != \
                    b.manifest.base_model_id:
                raise BundleError(f"tier {b.tier!r} has different plans or base models in its backends: re-export the tier")
        self.plans = plans
        self._set_backbones(bundles, models)

    def _set_backbones(self, bundles: list[BundleInfo], models: dict[str, str]) -> None:
        """Backbone name per tier: ``default`` when every tier shares one base model (the usual
        case), else the base model id (HeteroTune: one backbone per device class)."""
        dims: dict[str, ModelDims] = {}
        for b in bundles:
            if dims.setdefault(b.manifest.base_model_id, b.manifest.dims) != b.manifest.dims:
                raise BundleError(f"bundles of base model {b.manifest.base_model_id!r} disagree on its dims: re-export them")
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
                raise BundleError(f"{bdir} holds a {manifest.tier}/{manifest.backend} bundle: move it to "
                                  f"{root / manifest.tier / manifest.backend}")
            found.append(BundleInfo(manifest.tier, manifest.backend, bdir, manifest, bundle_digest(bdir)))
        if not found:
            raise BundleError(f"no <tier>/<backend>/{MANIFEST_NAME} under {root}: run `fedhft export --out {root}` first")
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
            raise BundleError(f"no bundle for tier {tier!r} backend {backend!r}; have {sorted(self.bundles)}: "
                              "export it (fedhft export --tier ... --backend ...)") from None

    def chunks(self, bundle_id: str, fleet: str, chunk_size: int, files: list[str] | None = None,
               indices: list[int] | None = None) -> Iterator[BundleChunk]:
        """Chunks of the requested files of a bundle (all of them when ``files`` is None).

        Unknown file names are skipped: the device asks again for what it still lacks.
        """
        info = self.by_id.get(bundle_id)
        if info is None:
            raise BundleError(f"unknown bundle id {bundle_id!r}: the device should use the id of its current task")
        catalog = info.files()
        for name in (files if files is not None else list(catalog)):
            if name not in catalog:
                continue
            yield from iter_file_chunks(info.dir / name, fleet=fleet, bundle_id=bundle_id, file=name,
                                        chunk_size=chunk_size, indices=indices, file_digest=catalog[name][0])

"""Fleet registry: who is there, which tier and backend each device trains, who is online.

A device joins with a Hello (its measured DeviceProfile and the backends it can run). Its tier
comes from the profile (``catalog``: ``devices.recommend_tier``; ``planner``: the largest exported
tier whose estimated peak memory and step time fit the device), restricted to tiers that have a
bundle. Liveness comes from the retained ClientStatus on ``from/<client>/status``, which the
device's Last Will turns to ``offline`` when its connection dies.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from devices import DeviceProfile, ModelShape, estimate
from fedhft.protocol import ClientState, ClientStatus, Hello

from server._bundles import BundleIndex
from server._log import event
from server._store import Store

log = logging.getLogger("fedhft.server.registry")

#: Client states in which a device will not take a task.
UNAVAILABLE = (ClientState.OFFLINE, ClientState.LOW_BATTERY, ClientState.ERROR)
STEP_MS_TARGET = 2000.0
MEMORY_SHARE = 0.5


@dataclass
class ClientEntry:
    client: str
    profile: dict
    tier: str | None
    backend: str | None
    backends: list[str]
    online: bool = True
    state: str = "online"
    battery: float | None = None  # percent
    charging: bool | None = None
    last_seen: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def taskable(self) -> bool:
        """False while the device has ``problems`` (an invalid profile, no tier or backend that fits):
        a tier hint alone must not get a device with an unreadable profile tasked."""
        return not self.problems and self.tier is not None and self.backend is not None

    def eligible(self, battery_threshold: float) -> bool:
        if not self.online or self.state in UNAVAILABLE or not self.taskable:
            return False
        return self.battery is None or bool(self.charging) or self.battery >= battery_threshold


def read_profile(profile: dict) -> tuple[DeviceProfile | None, list[str]]:
    """(the DeviceProfile, []) or (None, [why it is unusable])."""
    try:
        return DeviceProfile.from_dict(profile), []
    except ValueError as exc:
        return None, [f"profile: {exc}"]


def _catalog_spec(tier: str | None):
    """The catalog's TierSpec for an exported tier of the same name (None for custom tiers)."""
    if tier is None:
        return None
    try:
        from devices import load_catalog

        return load_catalog().get(tier)
    except (ImportError, ValueError, OSError):
        return None


def _catalog_default_backend(tier: str) -> str | None:
    spec = _catalog_spec(tier)
    return spec.default_backend if spec is not None else None


def model_shape(bundles: BundleIndex) -> ModelShape:
    """The planner's ModelShape from the bundles' dims (vocabulary of a BERT tokenizer assumed:
    the manifest does not carry it, and it only moves the fixed embedding memory)."""
    d = bundles.dims
    return ModelShape.from_hf_config(
        {
            "hidden_size": d.hidden,
            "intermediate_size": d.intermediate,
            "num_hidden_layers": d.num_layers,
            "vocab_size": 30522,
            "num_attention_heads": max(1, d.hidden // 64),
        }
    )


class Registry:
    """In-memory view of the fleet, written through to the store."""

    def __init__(self, store: Store, bundles: BundleIndex, tier_mode: str = "catalog"):
        self.store, self.bundles, self.tier_mode = store, bundles, tier_mode
        self.clients: dict[str, ClientEntry] = {}
        for rec in store.clients():
            # Everyone is offline until the broker replays their retained status (or they say hello);
            # the profile is judged again, so a retained "online" does not make a bad one taskable.
            _, problems = read_profile(rec.profile)
            self.clients[rec.client] = ClientEntry(
                rec.client,
                rec.profile,
                rec.tier,
                rec.backend,
                rec.backends,
                online=False,
                state="offline",
                battery=rec.battery,
                last_seen=rec.last_seen,
                problems=problems,
            )

    # -- tier and backend ------------------------------------------------------------------------
    def choose_tier(self, profile: DeviceProfile | None, hint: str | None, backends: list[str]) -> str | None:
        tiers = self.bundles.tiers
        if hint is not None and hint in tiers:
            return hint  # the operator (or simulator) pinned it
        if profile is None:
            return None
        if self.tier_mode == "catalog":
            try:
                from devices import recommend_tier

                tier = recommend_tier(profile)
                if tier in tiers:
                    return tier
                log.info("catalog tier %s has no bundle; falling back to the planner estimate", tier)
            except (ImportError, ModuleNotFoundError, ValueError) as exc:
                log.info("catalog tier unavailable (%s); falling back to the planner estimate", exc)
        return self._planner_tier(profile, backends)

    def _planner_tier(self, profile: DeviceProfile, backends: list[str]) -> str | None:
        """The exported tier with the largest estimated peak that still fits this device."""
        shape, best = model_shape(self.bundles), None
        for tier in self.bundles.tiers:
            backend = self.choose_backend(tier, backends) or "torch"
            try:
                est = estimate(self.bundles.plans[tier], shape, backend=backend, gflops=profile.matmul_gflops)
            except ValueError:
                continue
            fits = est.peak_mb <= MEMORY_SHARE * profile.available_memory_mb and (est.step_ms or 0) <= STEP_MS_TARGET
            if fits and (best is None or est.peak_mb > best[0]):
                best = (est.peak_mb, tier)
        return None if best is None else best[1]

    def choose_backend(self, tier: str, backends: list[str]) -> str | None:
        """The catalog tier's default backend when the device runs it and it was exported, else
        the device's most preferred backend (its own order) that the tier was exported for."""
        have = [b for b in backends if b in set(self.bundles.backends(tier))]
        default = _catalog_default_backend(tier)
        if default in have:
            return default
        return have[0] if have else None

    # -- messages ------------------------------------------------------------------------------
    def hello(self, msg: Hello, now: float) -> ClientEntry:
        profile, problems = read_profile(msg.profile)
        tier = self.choose_tier(profile, msg.tier_hint, list(msg.backends))
        backend = self.choose_backend(tier, list(msg.backends)) if tier else None
        if tier is None:
            problems.append(f"no exported tier fits this device (tiers: {self.bundles.tiers})")
        elif backend is None:
            problems.append(
                f"tier {tier} is exported for {self.bundles.backends(tier)}, the device runs {list(msg.backends)}"
            )
        battery = profile.battery_percent if profile else None
        entry = ClientEntry(
            msg.client,
            dict(msg.profile),
            tier,
            backend,
            list(msg.backends),
            True,
            "online",
            battery,
            profile.charging if profile else None,
            now,
            problems,
        )
        self.clients[msg.client] = entry
        self.store.upsert_client(msg.client, entry.profile, tier, backend, entry.backends, now, battery)
        if problems:
            event(
                log,
                logging.WARNING,
                "client_joined",
                client=msg.client,
                tier=tier,
                backend=backend,
                taskable=False,
                problems="; ".join(problems),
            )
        else:
            event(log, logging.INFO, "client_joined", client=msg.client, tier=tier, backend=backend, taskable=True)
        return entry

    def status(self, msg: ClientStatus, now: float) -> ClientEntry | None:
        entry = self.clients.get(msg.client)
        if entry is None:
            return None  # a status before any hello (or from an unknown device): nothing to update
        entry.state, entry.online, entry.last_seen = msg.state, msg.state != "offline", now
        if msg.battery_percent is not None:
            entry.battery = msg.battery_percent  # percent, like the Hello profile and the thresholds
        self.store.set_client_status(msg.client, msg.state, entry.online, entry.battery, now)
        return entry

    def eligible(self, battery_threshold: float) -> list[ClientEntry]:
        """Clients that may be selected now. A catalog tier's own battery threshold (a phone tier
        stops earlier than a mains-powered board) overrides the server-wide one."""
        out = []
        for _, c in sorted(self.clients.items()):
            spec = _catalog_spec(c.tier)
            if c.eligible(spec.battery_threshold if spec is not None else battery_threshold):
                out.append(c)
        return out

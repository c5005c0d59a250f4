"""The Strategy API: configure a round (plan, start state, mask per client), then aggregate.

Shaped like Flower's ``Strategy`` (configure, then aggregate) but streaming: ``aggregator()``
returns an object that folds in one update at a time, so server memory grows with the model
size and the number of clusters, never with the number of clients in a round.

A strategy's whole state is ``state_dict()`` = (tensors, JSON-able metadata); the server
persists both and ``load_state_dict`` resumes bit-for-bit: every random choice is drawn from a
generator seeded by (seed, round, client id), never from a shared stream whose position would
depend on client order or on a restart.
"""

from __future__ import annotations

import abc
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from devices import AdapterPlan
from fedhft.layout import ModelDims, masked_update_layout, rows_from_mask, scatter_update

from server.strategies._math import ratio_or_previous, stable_hash, svd_width, truncated_svd, zero_pad

#: Version of the state_dict layout; bump when keys or meaning change.
STATE_FORMAT = 1


@dataclass(frozen=True)
class ClientInfo:
    """What the server knows about a participating client when it plans a round."""

    client_id: str
    tier: str
    plan: AdapterPlan
    backbone: str = "default"
    num_examples: int = 1


@dataclass
class ClientAssignment:
    """A client's task for one round: the plan whose bundle it trains, its start state
    (canonical trainable names), its flat row mask, and for clustered strategies the soft
    cluster membership it was given (the aggregator weights its update with it)."""

    plan: AdapterPlan
    start_state: dict[str, np.ndarray]
    mask: np.ndarray
    membership: np.ndarray | None = None


@dataclass
class StrategyState:
    """The result of a round: the new global state and, for clustered strategies, one state per
    cluster (independent dicts, never aliases of one another)."""

    round_idx: int
    global_state: dict[str, np.ndarray]
    dims: ModelDims
    cluster_states: list[dict[str, np.ndarray]] = field(default_factory=list)
    cluster_weights: np.ndarray | None = None


class Aggregator(abc.ABC):
    """Folds in one client update at a time; ``finish`` commits the new state to the strategy."""

    def _admit(self, client_id: str) -> None:
        """Refuse a second update of one client in a round: it would count twice. (The server
        dedupes redelivered MQTT messages before this; the set of ids is O(clients) strings.)"""
        seen = self.__dict__.setdefault("_seen", set())
        if client_id in seen:
            raise ValueError(f"a second update from {client_id!r} in this round: drop duplicates before add()")
        seen.add(client_id)

    def _intake(
        self, client_id: str, assignment: ClientAssignment, dims: ModelDims, update: Mapping[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """What every ``add`` does first: check the update's layout, admit the client once, and
        return its trained state (start + update) and the masked rows of each B."""
        check_update(assignment, dims, update)
        self._admit(client_id)
        plan, mask = assignment.plan, assignment.mask
        return scatter_update(plan, dims, assignment.start_state, update, mask), rows_from_mask(plan, dims, mask)

    def _close(self, strategy: "Strategy", round_idx: int) -> None:
        """What every ``finish`` checks first: it runs once, and no other aggregator of this round
        has committed already."""
        if self.__dict__.get("_closed"):
            raise RuntimeError("this aggregator already finished; ask the strategy for a new one")
        self._closed = True
        strategy._check_round(round_idx)

    @abc.abstractmethod
    def add(
        self, client: ClientInfo, assignment: ClientAssignment, update: Mapping[str, np.ndarray], weight: float
    ) -> None:
        """``update`` = ``gather_update(...)`` of ``assignment``; ``weight`` is normally
        ``client.num_examples``."""

    @abc.abstractmethod
    def finish(self) -> StrategyState:
        """Compute, commit and return the new state. Call once."""


class Strategy(abc.ABC):
    """Base of every strategy. Subclasses set ``name`` and implement the abstract methods."""

    name: str = ""
    #: config keys a state saved before the option existed lacks -> the behaviour it was trained with
    SAVED_BEFORE_OPTION: Mapping[str, Any] = {}

    def __init__(self, dims: ModelDims, *, seed: int = 0, backbone_dims: Mapping[str, ModelDims] | None = None):
        self.dims = dims
        self.seed = int(seed)
        self.backbone_dims = dict(backbone_dims or {})
        self.round_idx = 0  # rounds finished so far = index of the next round

    # -- API -----------------------------------------------------------------------------------
    def configure(
        self, round_idx: int, clients: list[ClientInfo], rng: np.random.Generator | None = None
    ) -> dict[str, ClientAssignment]:
        """One assignment per client. ``rng``, when given, contributes one draw that seeds this
        round's per-client generators; without it they derive from the strategy seed alone."""
        self._check_round(round_idx)
        salt = int(rng.integers(2**62)) if rng is not None else 0
        return {c.client_id: self.assign(round_idx, c, self.client_rng(round_idx, c.client_id, salt)) for c in clients}

    def preview(self, client: ClientInfo) -> ClientAssignment:
        """What ``configure`` (without ``rng``) would give this client in the next round; its
        start state is the client's current (personalized) model, e.g. for evaluation."""
        return self.assign(self.round_idx, client, self.client_rng(self.round_idx, client.client_id))

    @classmethod
    def fleet_options(cls, tier_plans: Mapping[str, AdapterPlan], options: Mapping[str, Any]) -> dict[str, Any]:
        """``options`` with whatever this strategy must fix from the fleet's tiers before round 0
        (their own plans, ``tier_plans``), so that the plans it will assign are known in advance."""
        return dict(options)

    @classmethod
    def tier_plans(cls, tier_plans: Mapping[str, AdapterPlan], options: Mapping[str, Any]) -> dict[str, AdapterPlan]:
        """The plan the devices of each tier train under this strategy, given each tier's own plan
        and the strategy's options: which bundles a fleet needs, known before any device joins.
        Most strategies train each tier's own plan."""
        return dict(tier_plans)

    @abc.abstractmethod
    def assign(self, round_idx: int, client: ClientInfo, rng: np.random.Generator) -> ClientAssignment:
        """The assignment of one client (deterministic given the state and ``rng``)."""

    @abc.abstractmethod
    def aggregator(self, round_idx: int) -> Aggregator:
        """A fresh streaming aggregator for ``round_idx``."""

    @abc.abstractmethod
    def current(self) -> StrategyState:
        """The committed state (after the last finished round)."""

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-able) besides dims; checked on load so that a resumed run
        cannot silently change the method."""
        return {"seed": self.seed, "backbone_dims": {k: v.to_dict() for k, v in sorted(self.backbone_dims.items())}}

    @abc.abstractmethod
    def _tensors(self) -> dict[str, np.ndarray]: ...

    @abc.abstractmethod
    def _load_tensors(self, tensors: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None: ...

    def _extra_meta(self) -> dict[str, Any]:
        return {}

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(tensors, metadata): safetensors-storable arrays + a small JSON-able dict."""
        meta = {
            "strategy": self.name,
            "format": STATE_FORMAT,
            "round_idx": self.round_idx,
            "dims": self.dims.to_dict(),
            "config": self.config(),
            **self._extra_meta(),
        }
        json.dumps(meta)  # fail here, not in the server's writer, if something is not JSON-able
        return {k: np.ascontiguousarray(v) for k, v in self._tensors().items()}, meta

    def load_state_dict(self, tensors: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        if meta.get("strategy") != self.name:
            raise ValueError(
                f"state was saved by strategy {meta.get('strategy')!r}, this is {self.name!r}: use "
                f"get_strategy({meta.get('strategy')!r}, ...)"
            )
        if meta.get("format") != STATE_FORMAT:
            raise ValueError(f"state format {meta.get('format')} is not supported (expected {STATE_FORMAT})")
        if ModelDims.from_dict(meta["dims"]) != self.dims:
            raise ValueError(f"state was saved for dims {meta['dims']}, this strategy has {self.dims.to_dict()}")
        # Options added after a state was saved take the value that state was trained with.
        saved = {**self.SAVED_BEFORE_OPTION, **json.loads(json.dumps(meta["config"]))}
        mine = json.loads(json.dumps(self.config()))
        if saved != mine:
            raise ValueError(
                f"state was saved with config {saved}, this strategy has {mine}: construct it with the saved config"
            )
        self._load_tensors(tensors, meta)
        self.round_idx = int(meta["round_idx"])

    # -- helpers for subclasses ------------------------------------------------------------------
    def dims_for(self, client: ClientInfo) -> ModelDims:
        return self.backbone_dims.get(client.backbone, self.dims)

    def client_rng(self, round_idx: int, client_id: str, salt: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, round_idx, stable_hash(client_id), salt])

    def _check_round(self, round_idx: int) -> None:
        if round_idx != self.round_idx:
            raise ValueError(
                f"strategy state is at round {self.round_idx} but round {round_idx} was asked for: "
                f"load the state saved after round {round_idx - 1} first"
            )


class GlobalStateStrategy(Strategy):
    """Base of the strategies whose whole state is one global dict ``self.state`` (the factor
    strategies and FlexLoRA): its committed state, and its tensors stored under ``global/``."""

    _PREFIX = "global/"

    def __init__(self, dims: ModelDims, *, seed: int = 0, backbone_dims: Mapping[str, ModelDims] | None = None):
        super().__init__(dims, seed=seed, backbone_dims=backbone_dims)
        self.state: dict[str, np.ndarray] = {}

    def current(self) -> StrategyState:
        return StrategyState(self.round_idx, copy_state(self.state), self.dims)

    def _tensors(self) -> dict[str, np.ndarray]:
        return {self._PREFIX + k: v for k, v in self.state.items()}

    def _load_tensors(self, tensors: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        n = len(self._PREFIX)
        self.state = {k[n:]: np.array(v, dtype=np.float32) for k, v in tensors.items() if k.startswith(self._PREFIX)}


def check_update(assignment: ClientAssignment, dims: ModelDims, update: Mapping[str, np.ndarray]) -> None:
    """Misuse guard: the update must have exactly the names/shapes that the assignment implies."""
    expected = {s.name: s.shape for s in masked_update_layout(assignment.plan, dims, assignment.mask)}
    got = {k: tuple(np.shape(v)) for k, v in update.items()}
    if got != expected:
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
        raise ValueError(
            f"update does not match the assignment: missing {missing}, unexpected {extra}, wrong shape {wrong}"
        )


class Sums:
    """Running weighted sums per key: ``num += w * value``, ``den += w``.

    ``full_axes`` names the axes along which the weight varies (e.g. rows of a B matrix, rank
    components of an A); on the other axes ``den`` is stored with size 1 and broadcasts, so a
    dense ``[out, in]`` site with per-row weights costs one extra ``[out, 1]``. float64, so the
    accumulation order changes the result only at rounding level. Shapes may grow when a larger
    rank arrives: both sums are zero-padded.
    """

    def __init__(self) -> None:
        self.num: dict[str, np.ndarray] = {}
        self.den: dict[str, np.ndarray] = {}
        self.full: dict[str, tuple[int, ...]] = {}

    def _den_shape(self, key: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(s if i in self.full[key] else 1 for i, s in enumerate(shape))

    def add(self, key: str, value: np.ndarray, weight, full_axes: tuple[int, ...] = ()) -> None:
        value = np.asarray(value, dtype=np.float64)
        if key not in self.num:
            self.full[key] = tuple(full_axes)
            self.num[key] = np.zeros(value.shape)
            self.den[key] = np.zeros(self._den_shape(key, value.shape))
        elif tuple(full_axes) != self.full[key]:
            raise ValueError(f"{key}: weight axes {full_axes} differ from earlier {self.full[key]}")
        self._grow(key, value.shape)
        w_shape = self._den_shape(key, value.shape)
        w = np.broadcast_to(np.asarray(weight, dtype=np.float64), w_shape)
        self.num[key][tuple(slice(0, s) for s in value.shape)] += w * value
        self.den[key][tuple(slice(0, s) for s in w_shape)] += w

    def _grow(self, key: str, shape: tuple[int, ...]) -> None:
        new = tuple(max(a, b) for a, b in zip(self.num[key].shape, shape))
        if new != self.num[key].shape:
            self.num[key] = zero_pad(self.num[key], new)
            self.den[key] = zero_pad(self.den[key], self._den_shape(key, new))

    def add_rows(self, key: str, shape: tuple[int, int], rows: np.ndarray, values: np.ndarray, weight: float) -> None:
        """``add`` for a dense ``[out, in]`` key with one weight per row, touching only ``rows``
        (unique indices; the other rows would get weight 0): O(rows x in) instead of O(out x in)."""
        if key not in self.num:
            self.full[key] = (0,)
            self.num[key] = np.zeros(shape)
            self.den[key] = np.zeros((shape[0], 1))
        elif self.full[key] != (0,) or self.num[key].shape != tuple(shape):
            raise ValueError(f"{key}: add_rows needs a dense key with per-row weights of shape {self.num[key].shape}")
        self.num[key][rows] += weight * np.asarray(values, dtype=np.float64)
        self.den[key][rows] += weight

    def fold(self, state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A copy of ``state`` with every summed key replaced by its ``result``."""
        new = copy_state(state)
        for key in self.keys():
            new[key] = self.result(key, state[key])
        return new

    def result(self, key: str, previous: np.ndarray) -> np.ndarray:
        """Weighted mean where any weight was added, ``previous`` elsewhere (float32); the shape
        is the larger of the two (new components beyond ``previous`` default to 0)."""
        previous = np.asarray(previous)
        self._grow(key, previous.shape)
        prev = zero_pad(previous, self.num[key].shape) if previous.shape != self.num[key].shape else previous
        return ratio_or_previous(self.num[key], self.den[key], prev)

    def keys(self):
        return self.num.keys()


def copy_state(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Deep copy: every returned array is a fresh buffer (no aliasing between states)."""
    return {k: np.array(v, copy=True) for k, v in state.items()}


class SvdCache:
    """Truncated SVDs of the dW that clients of one round start from, keyed by site, width bucket
    and the dW's bytes: clients that start from the same dW (all of them under FlexLoRA, a
    cluster's members under FedHFT once their memberships are hard) share one factorization. The
    stored dW is compared on every hit, so a changed state never reuses a stale one; ``limit``
    bounds the entries, least recently used out first (memberships may differ per client, and the
    cache must not grow with the number of clients)."""

    def __init__(self, seed: int, limit: int = 64):
        self.seed, self.limit = seed, limit
        self.entries: dict[tuple[str, int, bytes], tuple[np.ndarray, tuple]] = {}

    def get(self, key: str, dw: np.ndarray, rank: int):
        width = svd_width(rank)
        dw = np.ascontiguousarray(dw)
        ident = (key, width, hashlib.blake2b(dw.tobytes(), digest_size=16).digest())
        hit = self.entries.pop(ident, None)
        if hit is not None and np.array_equal(hit[0], dw):
            self.entries[ident] = hit  # most recently used last
            return hit[1]
        svd = truncated_svd(dw, width, seed=stable_hash(f"{self.seed}/{key}"))
        while len(self.entries) >= self.limit:
            self.entries.pop(next(iter(self.entries)))
        self.entries[ident] = (dw, svd)
        return svd

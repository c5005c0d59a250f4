"""FedHFT (Ilhan et al. 2025): a mixture of masked adapters + client clustering.

Per round and client: start dW = the client's membership-weighted mixture of the K cluster
states (dense ``dW = (alpha/r) B @ A`` per site); mask = per B matrix the tier's share of rows,
chosen by the row energy of that start dW, with a fraction of exploration rows (stalest first);
start factors = rank-r SVD of the start dW. Aggregation, per cluster and per row of every dW:
weighted mean over the clients whose mask covers the row, weights = example weight x soft
membership, of the client's trained rows; rows covered by nobody keep their value.

Clusters: ``_clusters.fit_memberships`` refits a mixture every round from ``warmup_rounds`` on,
over each client's classifier-head UPDATE direction averaged over the rounds it trained from the
shared model (heads over ``sketch_dim`` values are CountSketched). With ``num_clusters="auto"``
each refit picks K in 1..``max_clusters`` by the mixture's BIC (``fit_memberships(choose_k=True)``);
``max_clusters`` cluster states are kept and the unused ones get membership 0. With
``global_model="shared"`` one more state, aggregated over every client's change (not per cluster), is the
global model; by default the global model is the cluster-size mixture. Why that signal, and how this
differs from the reference code (masked-row uploads, K independent cluster states,
``residual_correction``): docs/DESIGN-NOTES.md, section "server/strategies/_fedhft.py".
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from fedhft.layout import ModelDims, adapted_modules, lora_names, mask_from_rows, rows_per_module

from server.strategies._base import (
    Aggregator,
    ClientAssignment,
    ClientInfo,
    Strategy,
    StrategyState,
    SvdCache,
    Sums,
    copy_state,
)
from server.strategies._math import (
    count_sketch,
    count_sketch_hashes,
    explore_count,
    init_a_rows,
    init_head,
    mixture,
    select_rows,
    sparsify_membership,
    stable_hash,
    svd_refactor,
    INIT_A_ROW_NORM,
    svd_width,
    unit,
)
from server.strategies._clusters import fit_memberships
from server.strategies._threads import OneBlasThreadPlanning, one_blas_thread


AUTO = "auto"
DEFAULT_MAX_CLUSTERS = 4
GLOBAL_MODELS = ("mixture", "shared")
START_FACTORS = ("balanced", "init_norm")
PER_CLUSTER = ("all", "head")


def cluster_slots(num_clusters: Any, max_clusters: Any) -> tuple[int, list[str]]:
    """(cluster states to keep, problems) of the options num_clusters (K >= 1 or "auto") and
    max_clusters (with "auto" only: the largest K, >= 2)."""
    whole = lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool)  # noqa: E731
    if num_clusters == AUTO:
        top = DEFAULT_MAX_CLUSTERS if max_clusters is None else max_clusters
        if whole(top) and top >= 2:
            return int(top), []
        return 1, [
            f"max_clusters must be a whole number >= 2 with num_clusters=auto, got {max_clusters!r} "
            "(for no clustering set num_clusters=1)"
        ]
    problems = []
    if not whole(num_clusters) or num_clusters < 1:
        problems.append(
            f"num_clusters must be a whole number >= 1 or 'auto' (K chosen from the data by BIC), got {num_clusters!r}"
        )
    if max_clusters is not None:
        problems.append(
            f"max_clusters={max_clusters!r} applies only to num_clusters=auto: drop it, or set num_clusters=auto"
        )
    return (int(num_clusters) if not problems else 1), problems


def group_problems(groups: Any, num_clusters: Any, max_clusters: Any) -> list[str]:
    """Problems of the option ``groups`` (client id -> group name) against K's options."""
    if groups is None:
        return []
    if (
        not isinstance(groups, Mapping)
        or not groups
        or not all(isinstance(c, str) and isinstance(g, str) and g for c, g in groups.items())
    ):
        return [f"groups must map client ids to group names (a non-empty mapping of strings), got {groups!r}"]
    count = len(set(groups.values()))
    out = []
    if num_clusters != AUTO and num_clusters != count:
        out.append(
            f"groups has {count} groups but num_clusters={num_clusters!r}: with groups, leave num_clusters out "
            "(one cluster per group)"
        )
    if max_clusters is not None:
        out.append(f"max_clusters={max_clusters!r} does not apply with groups (one cluster per group): drop it")
    return out


def _checked_slots(
    num_clusters: Any,
    max_clusters: Any,
    warmup_rounds: int,
    sketch_dim: int,
    explore: float,
    explore_decay: float,
    global_model: str,
    start_factors: str,
    per_cluster: str = "all",
    groups: Any = None,
) -> int:
    """The cluster states to keep (``cluster_slots``, or one per group); a ValueError naming every
    invalid option at once."""
    errors = group_problems(groups, num_clusters, max_clusters)
    if groups is not None:
        slots = len(set(groups.values())) if not errors else 1
    else:
        slots, slot_errors = cluster_slots(num_clusters, max_clusters)
        errors += slot_errors
    if warmup_rounds < 0:
        errors.append(f"warmup_rounds must be >= 0, got {warmup_rounds}")
    if sketch_dim < 2:
        errors.append(f"sketch_dim must be >= 2, got {sketch_dim}")
    if not 0.0 <= explore <= 1.0 or not 0.0 < explore_decay <= 1.0:
        errors.append(f"explore must be in [0, 1] and explore_decay in (0, 1], got {explore}, {explore_decay}")
    if global_model not in GLOBAL_MODELS:
        errors.append(f"global_model must be one of {GLOBAL_MODELS}, got {global_model!r}")
    if start_factors not in START_FACTORS:
        errors.append(f"start_factors must be one of {START_FACTORS}, got {start_factors!r}")
    if per_cluster not in PER_CLUSTER:
        errors.append(f"per_cluster must be one of {PER_CLUSTER}, got {per_cluster!r}")
    if errors:
        raise ValueError("invalid fedhft config: " + "; ".join(errors))
    return slots


class FedHFT(OneBlasThreadPlanning, Strategy):
    name = "fedhft"
    # A state saved before an option existed had that option's then only behaviour.
    SAVED_BEFORE_OPTION = {"start_factors": "balanced", "per_cluster": "all"}

    def __init__(
        self,
        dims: ModelDims,
        *,
        seed: int = 0,
        num_clusters: int | str = AUTO,
        max_clusters: int | None = None,
        warmup_rounds: int = 2,
        sketch_dim: int = 1024,
        explore: float = 0.2,
        explore_decay: float = 1.0,
        min_membership: float = 1e-3,
        residual_correction: bool = False,
        masked: bool = True,
        global_model: str = "mixture",
        start_factors: str = "balanced",
        per_cluster: str = "head",
        groups: Mapping[str, str] | None = None,
        backbone_dims: Mapping[str, ModelDims] | None = None,
    ):
        """Options (``strategy_options``):
        num_clusters   K, the number of client clusters (1: no clustering), or "auto" (default): every
                       refit chooses K in 1..max_clusters by the BIC of the clients' mixture (fewer
                       than 2 clients per cluster are never considered)
        max_clusters   with num_clusters=auto only: the largest K considered (default 4)
        warmup_rounds  rounds of one shared model before the first clustering
        sketch_dim     size of a client's clustering feature (its head update direction)
        explore        share of each tier's mask given to the stalest rows (decays by explore_decay a round)
        min_membership memberships below it are dropped (the row renormalized)
        residual_correction  on: a client contributes its untruncated start mixture + its change; off
                       (default): its trained rows, as the reference code (docs/DESIGN-NOTES.md says why)
        masked         false: every row of every B trains (the no-mask ablation)
        global_model   the model scored on the global test set and given to clients never seen:
                       "mixture" (the cluster states weighted by cluster size) or "shared" (a state
                       aggregated from every client's change, as if there were one cluster)
        start_factors  how a client's start dW is split into A and B (the product is the same):
                       "balanced" (sqrt(S) on each side) or "init_norm" (A's rows at a fresh LoRA
                       init's norm; docs/DESIGN-NOTES.md says why)
        per_cluster    what each cluster keeps its own copy of: "head" (default: one adapter state
                       aggregated over every client, a classifier head per cluster, so the clusters
                       personalize the label prior, not the representation) or "all" (adapters and head,
                       as the paper; docs/DESIGN-NOTES.md says why the default differs)
        groups         fixed clusters instead of fitted ones: client id -> group name (a region, an app,
                       a data domain the operator knows). One cluster per group (in name order); from
                       warm-up on, a client's membership is its group's cluster, and a client not in
                       the mapping gets the cluster sizes. Leave num_clusters out with it
        """
        super().__init__(dims, seed=seed, backbone_dims=backbone_dims)
        slots = _checked_slots(
            num_clusters,
            max_clusters,
            warmup_rounds,
            sketch_dim,
            explore,
            explore_decay,
            global_model,
            start_factors,
            per_cluster,
            groups,
        )
        self.groups = dict(groups) if groups is not None else None
        self.group_names = sorted(set(self.groups.values())) if self.groups else []
        # With "auto", num_clusters is the number of cluster states kept (max_clusters); a refit may use fewer.
        self.auto_clusters = num_clusters == AUTO and groups is None
        self.num_clusters, self.warmup_rounds, self.sketch_dim = slots, int(warmup_rounds), int(sketch_dim)
        self.explore, self.explore_decay = float(explore), float(explore_decay)
        self.min_membership, self.residual_correction = float(min_membership), bool(residual_correction)
        self.masked = bool(masked)  # False: every row of every B trains (the "no mask" ablation)
        self.global_model = global_model
        self.start_factors = start_factors
        self.per_cluster = per_cluster
        self._a_row_norm = INIT_A_ROW_NORM if start_factors == "init_norm" else None
        self.shared: dict[str, np.ndarray] = {}  # global_model="shared": the one state every client updates
        # One independent dict per cluster (never ``[{}] * K``: that is K names for one dict).
        self.clusters: list[dict[str, np.ndarray]] = [{} for _ in range(self.num_clusters)]
        self.last_trained: dict[str, np.ndarray] = {}  # site -> round each row was last covered (-1 never)
        self.client_ids: list[str] = []  # sorted; rows of sketches / memberships
        self._index: dict[str, int] = {}
        self.sketches = np.zeros((0, self.sketch_dim))  # per client: sum of its per-round unit features
        self.sketch_rounds = np.zeros(0)  # per client: how many rounds that sum has
        self.clustered: set[str] = set()  # clients given a fitted membership: their signal is kept as is
        self.memberships = np.zeros((0, self.num_clusters))
        self.cluster_weights = np.full(self.num_clusters, 1.0 / self.num_clusters)
        self.means: np.ndarray | None = None  # last GMM means: keeps cluster labels stable across refits
        self._svd = SvdCache(self.seed)
        self._starts = StartCache()
        self._hashes: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "num_clusters": AUTO if self.auto_clusters else self.num_clusters,
            **({"max_clusters": self.num_clusters} if self.auto_clusters else {}),
            "warmup_rounds": self.warmup_rounds,
            "sketch_dim": self.sketch_dim,
            "explore": self.explore,
            "explore_decay": self.explore_decay,
            "min_membership": self.min_membership,
            "residual_correction": self.residual_correction,
            **({} if self.masked else {"masked": False}),  # absent when default: older saved states still load
            **({} if self.global_model == "mixture" else {"global_model": self.global_model}),
            "start_factors": self.start_factors,
            "per_cluster": self.per_cluster,
            **({"groups": dict(sorted(self.groups.items()))} if self.groups else {}),
        }

    # -- state helpers ------------------------------------------------------------------------------
    def _ensure(self, key: str, out_f: int, in_f: int, dims: ModelDims) -> None:
        for c in self.clusters + ([self.shared] if self.global_model == "shared" else []):
            if key + ".delta" not in c:
                c[key + ".delta"] = np.zeros((out_f, in_f), np.float32)
            elif c[key + ".delta"].shape != (out_f, in_f):
                raise ValueError(f"site {key} is {c[key + '.delta'].shape}, a client needs {(out_f, in_f)}")
            if "head.weight" not in c:
                c.update(init_head(self.seed, "head", dims.num_labels, dims.hidden))
        self.last_trained.setdefault(key, np.full(out_f, -1, np.int64))

    def membership(self, client_id: str) -> np.ndarray:
        """The client's soft membership; a client never seen gets the cluster sizes."""
        i = self._index.get(client_id)
        return self.memberships[i].copy() if i is not None else self.cluster_weights.copy()

    def head_feature(self, change: np.ndarray) -> np.ndarray:
        """The clustering feature of one round's head change (weight and bias, flattened): the
        unit direction, exact (zero-padded to ``sketch_dim``) when it fits, else a seeded CountSketch
        (hashes derived from the seed and the size; rebuilt on demand, never saved)."""
        flat = np.asarray(change, dtype=np.float64).ravel()
        if flat.size <= self.sketch_dim:
            out = np.zeros(self.sketch_dim)
            out[: flat.size] = flat
        else:
            if flat.size not in self._hashes:
                seed = stable_hash(f"{self.seed}/head/{flat.size}")
                self._hashes[flat.size] = count_sketch_hashes((flat.size,), self.sketch_dim, seed)
            out = count_sketch(flat, self.sketch_dim, 0, hashes=self._hashes[flat.size])
        return unit(out)

    def _adapter_membership(self, m: np.ndarray) -> np.ndarray:
        """The membership a client's adapter start is mixed with: its own, or (per_cluster="head", where
        every cluster holds the same adapter state) cluster 0's one-hot, so the start is computed once."""
        if self.per_cluster == "all":
            return m
        one = np.zeros_like(m)
        one[0] = 1.0
        return one

    def mixed(self, key: str, m: np.ndarray) -> np.ndarray:
        return mixture(self.clusters, m, keys=[key])[key].astype(np.float64)

    def _start_site(self, key: str, m: np.ndarray, rank: int) -> tuple[np.ndarray, tuple]:
        """(row energy, truncated SVD) of the site's start mixture for membership ``m``: computed
        once per distinct membership while the cluster states stay as they are (a cluster's members
        share it once their memberships are hard), so neither the mixture nor its bytes' hash is
        redone per client."""
        ident = (key, m.tobytes(), svd_width(rank))
        sources = [c[key + ".delta"] for c in self.clusters]
        hit = self._starts.get(ident)
        # The arrays it was computed from, by identity: states are replaced, never written in place.
        if hit is None or len(hit[0]) != len(sources) or any(a is not b for a, b in zip(hit[0], sources)):
            dw = self.mixed(key + ".delta", m)
            hit = (sources, np.einsum("ij,ij->i", dw, dw), self._svd.get(key, dw, rank))
            self._starts.put(ident, hit)
        return hit[1], hit[2]

    def _set_clusters(self, clusters: list[dict[str, np.ndarray]]) -> None:
        """The strategy's own changes of the cluster states go through here: they drop the start
        cache (whose entries are also checked against the arrays they came from)."""
        self.clusters = clusters
        self._starts = StartCache()

    # -- API -------------------------------------------------------------------------------------
    def assign(self, round_idx: int, client: ClientInfo, rng: np.random.Generator) -> ClientAssignment:
        plan, dims = client.plan, self.dims_for(client)
        m = self.membership(client.client_id)
        fraction = self.explore * self.explore_decay**round_idx
        start, rows = {}, {}
        for layer, module, rank in adapted_modules(plan, dims):
            out_f, in_f = dims.module_shape(module)
            key = f"layer{layer}.{module}"
            a_name, b_name = lora_names(layer, module)
            self._ensure(key, out_f, in_f, dims)
            energy, svd = self._start_site(key, self._adapter_membership(m), rank)
            k = rows_per_module(plan, out_f) if self.masked else out_f
            rows[b_name] = select_rows(energy, self.last_trained[key], k, explore_count(k, out_f, fraction), rng)
            fill = init_a_rows(self.seed, key, 0, rank, in_f)
            start[a_name], start[b_name] = svd_refactor(
                None, rank, plan.alpha / rank, fill, svd=svd, a_row_norm=self._a_row_norm
            )
        head = mixture(self.clusters, m, keys=["head.weight", "head.bias"])
        start.update(head)
        return ClientAssignment(plan, start, mask_from_rows(plan, dims, rows), membership=m)

    def aggregator(self, round_idx: int) -> Aggregator:
        self._check_round(round_idx)
        return FedHFTAggregator(self, round_idx)

    def current(self) -> StrategyState:
        keys = list(self.clusters[0])
        if self.global_model == "shared" and self.shared:
            glob = copy_state(self.shared)
        else:
            glob = mixture(self.clusters, self.cluster_weights, keys=keys) if keys else {}
        return StrategyState(
            self.round_idx, glob, self.dims, [copy_state(c) for c in self.clusters], self.cluster_weights.copy()
        )

    def _refit(self, round_idx: int, previous: np.ndarray) -> None:
        """New memberships of ``self.client_ids``; ``previous``: the memberships they were given
        before (rows aligned with ``self.client_ids``; a client new to the fleet had the cluster sizes)."""
        if round_idx + 1 < self.warmup_rounds or len(self.client_ids) < 2 or self.num_clusters < 2:
            self.memberships = np.full((len(self.client_ids), self.num_clusters), 1.0 / self.num_clusters)
            return
        if self.groups is not None:
            self._set_memberships(self._group_memberships(), previous)
            return
        seed = (self.seed * 1_000_003 + round_idx) % 2**32
        features = self.sketches / np.maximum(self.sketch_rounds, 1.0)[:, None]
        # Labels follow the clients that already had a cluster (a newcomer's cluster-size mixture is no label).
        had = np.array([c in self.clustered for c in self.client_ids], dtype=np.float64)[:, None]
        probs, self.means = fit_memberships(
            features,
            self.num_clusters,
            seed,
            means_init=self.means,
            previous=previous * had,
            normalize=False,
            choose_k=self.auto_clusters,
        )
        self.clustered = set(self.client_ids)
        self._set_memberships(sparsify_membership(probs, self.min_membership), previous)

    def _group_memberships(self) -> np.ndarray:
        """One-hot rows of the clients' groups; a client outside ``groups`` gets the groups' share of
        the clients that are in it (the cluster sizes), or a uniform row when none is."""
        rows = np.zeros((len(self.client_ids), self.num_clusters))
        known = np.array([c in self.groups for c in self.client_ids], dtype=bool)
        for i in np.flatnonzero(known):
            rows[i, self.group_names.index(self.groups[self.client_ids[i]])] = 1.0
        sizes = rows[known].mean(axis=0) if known.any() else np.full(self.num_clusters, 1.0 / self.num_clusters)
        rows[~known] = sizes
        return rows

    def _set_memberships(self, memberships: np.ndarray, previous: np.ndarray) -> None:
        self.memberships = memberships
        weights = self.memberships.mean(axis=0)
        # A cluster that had no member and gains some: start it from what its new members were
        # given (their previous mixtures), not from the state it was left with rounds ago.
        revived = np.flatnonzero((self.cluster_weights <= 0) & (weights > 0))
        if revived.size:
            clusters = list(self.clusters)
            for c in revived:
                w = self.memberships[:, c] @ previous
                clusters[c] = mixture(clusters, w / w.sum())
            self._set_clusters(clusters)
        self.cluster_weights = weights

    def _record_sketches(self, new: Mapping[str, np.ndarray]) -> np.ndarray:
        """Add this round's features to the clients' running sums; returns the memberships the
        clients (rows of the new ``self.client_ids``) had before this round's refit."""
        table = dict(zip(self.client_ids, zip(self.sketches, self.sketch_rounds)))
        old = dict(zip(self.client_ids, self.memberships)) if len(self.memberships) == len(self.client_ids) else {}
        for c, v in new.items():
            total, n = table.get(c, (0.0, 0.0))
            table[c] = (total + np.asarray(v, dtype=np.float64), n + 1.0)
        self.client_ids = sorted(table)
        self._index = {c: i for i, c in enumerate(self.client_ids)}
        sums = [table[c][0] for c in self.client_ids]
        self.sketches = np.asarray(sums, dtype=np.float64).reshape(-1, self.sketch_dim)
        self.sketch_rounds = np.asarray([table[c][1] for c in self.client_ids], dtype=np.float64)
        given = [old.get(c, self.cluster_weights) for c in self.client_ids]
        return np.asarray(given, dtype=np.float64).reshape(-1, self.num_clusters)

    # -- persistence -------------------------------------------------------------------------------
    def _extra_meta(self) -> dict[str, Any]:
        return {"clients": list(self.client_ids), "clustered": sorted(self.clustered)}

    def _tensors(self) -> dict[str, np.ndarray]:
        out = {f"cluster{c}/{k}": v for c, st in enumerate(self.clusters) for k, v in st.items()}
        out.update({f"stale/{k}": v for k, v in self.last_trained.items()})
        out.update({f"shared/{k}": v for k, v in self.shared.items()})
        out.update(
            {
                "clients/sketch": self.sketches,
                "clients/sketch_rounds": self.sketch_rounds,
                "clients/membership": self.memberships,
                "clusters/weights": self.cluster_weights,
            }
        )
        if self.means is not None:
            out["gmm/means"] = self.means
        return out

    def _load_tensors(self, tensors: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        clusters: list[dict[str, np.ndarray]] = [{} for _ in range(self.num_clusters)]
        for name, v in tensors.items():
            if name.startswith("cluster") and "/" in name and name.split("/", 1)[0][7:].isdigit():
                c, key = name.split("/", 1)
                clusters[int(c[7:])][key] = np.array(v, dtype=np.float32)
        self._set_clusters(clusters)
        self.last_trained = {k[6:]: np.array(v, dtype=np.int64) for k, v in tensors.items() if k.startswith("stale/")}
        self.shared = {k[7:]: np.array(v, dtype=np.float32) for k, v in tensors.items() if k.startswith("shared/")}
        self.client_ids = list(meta["clients"])
        self._index = {c: i for i, c in enumerate(self.client_ids)}
        self.sketches = np.array(tensors["clients/sketch"], dtype=np.float64).reshape(-1, self.sketch_dim)
        self.sketch_rounds = np.array(tensors["clients/sketch_rounds"], dtype=np.float64).reshape(-1)
        self.clustered = set(meta.get("clustered", []))
        self.memberships = np.array(tensors["clients/membership"], dtype=np.float64).reshape(-1, self.num_clusters)
        self.cluster_weights = np.array(tensors["clusters/weights"], dtype=np.float64)
        self.means = np.array(tensors["gmm/means"], dtype=np.float64) if "gmm/means" in tensors else None
        self._svd = SvdCache(self.seed)


class StartCache:
    """The (row energy, truncated SVD) of recent start mixtures, keyed by (site, membership bytes,
    SVD width); least recently used out first, so it never grows with the number of clients."""

    def __init__(self, limit: int = 128):
        self.limit, self.entries = limit, {}

    def get(self, ident: tuple):
        hit = self.entries.pop(ident, None)
        if hit is not None:
            self.entries[ident] = hit  # most recently used last
        return hit

    def put(self, ident: tuple, value) -> None:
        while len(self.entries) >= self.limit:
            self.entries.pop(next(iter(self.entries)))
        self.entries[ident] = value


class FedHFTAggregator(Aggregator):
    """K independent running sums (one per cluster) + the row coverage and the clustering features
    of this round's clients (O(clients x sketch_dim), the only per-client memory)."""

    def __init__(self, strategy: FedHFT, round_idx: int):
        self.s, self.round_idx = strategy, round_idx
        self.sums = [Sums() for _ in range(strategy.num_clusters)]
        self.shared_sums = Sums() if strategy.global_model == "shared" else None
        self.covered: dict[str, np.ndarray] = {}
        self.sketches: dict[str, np.ndarray] = {}

    def add(
        self, client: ClientInfo, assignment: ClientAssignment, update: Mapping[str, np.ndarray], weight: float
    ) -> None:
        with one_blas_thread():
            self._add(client, assignment, update, weight)

    def _add(
        self, client: ClientInfo, assignment: ClientAssignment, update: Mapping[str, np.ndarray], weight: float
    ) -> None:
        st, plan, dims = self.s, assignment.plan, self.s.dims_for(client)
        trained, rows = self._intake(client.client_id, assignment, dims, update)
        m = assignment.membership if assignment.membership is not None else st.membership(client.client_id)
        for layer, module, rank in adapted_modules(plan, dims):
            key = f"layer{layer}.{module}"
            a_name, b_name = lora_names(layer, module)
            sel, scale = rows[b_name], plan.alpha / rank
            shape = st.clusters[0][key + ".delta"].shape
            # Only the covered rows get weight, so only those rows are computed and added.
            trained_rows = scale * (trained[b_name][sel].astype(np.float64) @ trained[a_name])
            given = assignment.start_state
            change = trained_rows - scale * (given[b_name][sel].astype(np.float64) @ given[a_name])
            if st.residual_correction:
                value = sum(float(m[c]) * st.clusters[c][key + ".delta"][sel] for c in np.flatnonzero(m > 0)) + change
            else:
                value = trained_rows
            for c, share in self._adapter_targets(m):
                self.sums[c].add_rows(key + ".delta", shape, sel, value, float(weight) * share)
            if self.shared_sums is not None:
                own = st.shared[key + ".delta"][sel] + change if st.residual_correction else trained_rows
                self.shared_sums.add_rows(key + ".delta", shape, sel, own, float(weight))
            self.covered.setdefault(key, np.zeros(shape[0], bool))[sel] = True
        for c in np.flatnonzero(m > 0):
            self.sums[c].add("head.weight", trained["head.weight"], float(weight) * m[c])
            self.sums[c].add("head.bias", trained["head.bias"], float(weight) * m[c])
        if self.shared_sums is not None:  # the head's change from the client's start, applied to the shared head
            for name in ("head.weight", "head.bias"):
                moved = trained[name].astype(np.float64) - assignment.start_state[name]
                self.shared_sums.add(name, st.shared[name] + moved, float(weight))
        if client.client_id not in st.clustered:  # trained from the shared model: comparable signal
            start = assignment.start_state
            head_change = np.concatenate(
                [
                    (trained["head.weight"].astype(np.float64) - start["head.weight"]).ravel(),
                    (trained["head.bias"].astype(np.float64) - start["head.bias"]).ravel(),
                ]
            )
            self.sketches[client.client_id] = st.head_feature(head_change)

    def _adapter_targets(self, m: np.ndarray) -> list[tuple[int, float]]:
        """(cluster, share of the client's weight) its adapter rows are added to: its clusters by
        membership, or (per_cluster="head") the one shared adapter state, kept in cluster 0."""
        if self.s.per_cluster == "head":
            return [(0, 1.0)]
        return [(int(c), float(m[c])) for c in np.flatnonzero(m > 0)]

    def finish(self) -> StrategyState:
        with one_blas_thread():
            return self._finish()

    def _finish(self) -> StrategyState:
        self._close(self.s, self.round_idx)
        st = self.s
        clusters = [sums.fold(old) for old, sums in zip(st.clusters, self.sums)]
        if st.per_cluster == "head":  # every cluster carries the one adapter state (a copy: saved per cluster)
            for c in clusters[1:]:
                c.update({k: v.copy() for k, v in clusters[0].items() if k.endswith(".delta")})
        st._set_clusters(clusters)
        if self.shared_sums is not None:
            st.shared = self.shared_sums.fold(st.shared)
        for key, cov in self.covered.items():
            st.last_trained[key][cov] = self.round_idx
        previous = st._record_sketches(self.sketches)
        st._refit(self.round_idx, previous)
        st.round_idx += 1
        return st.current()

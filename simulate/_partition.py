"""Non-iid client splits: Dirichlet label skew, a natural key (movie, domain), or iid.

Every function is deterministic given its seed and returns one index array per client (sorted,
disjoint). Clients never end up empty: a simulated device with no data cannot join.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

PARTITIONS = ("dirichlet", "natural", "iid")


class PartitionError(ValueError):
    """The data cannot be split as asked; the message says what to change."""


def iid(n: int, clients: int, seed: int) -> list[np.ndarray]:
    _check(n, clients, 1)
    order = np.random.default_rng([seed, 1]).permutation(n)
    return [np.sort(part) for part in np.array_split(order, clients)]


def dirichlet(
    labels: Sequence[int], clients: int, alpha: float, seed: int, min_size: int = 4, max_tries: int = 100
) -> list[np.ndarray]:
    """Label skew (Hsu et al. 2019): each class is spread over the clients with proportions drawn
    from Dir(alpha); small alpha -> each client sees few classes. Redrawn until every client holds
    ``min_size`` examples; after ``max_tries`` the smallest clients take examples from the largest
    (keeps tiny test fleets workable; the skew is barely changed)."""
    labels = np.asarray(labels)
    _check(len(labels), clients, min_size)
    if not alpha > 0:
        raise PartitionError(f"alpha={alpha}: the Dirichlet concentration must be > 0 (0.1 very skewed, 100 ~ iid)")
    rng = np.random.default_rng([seed, 2])
    by_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    for _ in range(max_tries):
        parts: list[list[int]] = [[] for _ in range(clients)]
        for idx in by_class:
            p = rng.dirichlet(np.full(clients, float(alpha)))
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(int)
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            break
    else:
        _top_up(parts, min_size)
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def _top_up(parts: list[list[int]], min_size: int) -> None:
    for small in sorted(range(len(parts)), key=lambda k: len(parts[k])):
        while len(parts[small]) < min_size:
            big = max(range(len(parts)), key=lambda k: len(parts[k]))
            parts[small].append(parts[big].pop())


def natural(keys: Sequence[str | None], clients: int, seed: int) -> tuple[list[np.ndarray], list[str]]:
    """Split by a natural key. With at least as many keys as clients (movies), whole keys go to
    clients, largest first to the client with fewest examples (balanced sizes, no key shared).
    With fewer keys (4 Amazon domains, 12 clients), clients form one group per key (client i gets
    key i mod K) and each key's examples are split evenly inside its group.
    Returns (index arrays, each client's group label: its key, or 'mixed' for many keys)."""
    if any(k is None for k in keys):
        raise PartitionError(
            "partition=natural needs a key per example: this dataset has none; use "
            "partition=dirichlet, or a dataset with one (rotten_tomatoes: movie_name, amazon: domain)"
        )
    groups: dict[str, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        groups[str(k)].append(i)
    _check(len(keys), clients, 1)
    names = sorted(groups)
    rng = np.random.default_rng([seed, 3])
    if len(names) >= clients:
        order = sorted(names, key=lambda k: (-len(groups[k]), rng.random()))
        parts: list[list[int]] = [[] for _ in range(clients)]
        owner: list[list[str]] = [[] for _ in range(clients)]
        for k in order:
            c = min(range(clients), key=lambda j: len(parts[j]))
            parts[c].extend(groups[k])
            owner[c].append(k)
        labels = [o[0] if len(o) == 1 else "mixed" for o in owner]
        return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts], labels
    members = defaultdict(list)
    for c in range(clients):
        members[names[c % len(names)]].append(c)
    out: list[np.ndarray] = [np.zeros(0, np.int64)] * clients
    for k, cs in members.items():
        idx = rng.permutation(np.asarray(groups[k], dtype=np.int64))
        for c, part in zip(cs, np.array_split(idx, len(cs))):
            out[c] = np.sort(part)
    return out, [names[c % len(names)] for c in range(clients)]


def _check(n: int, clients: int, min_size: int) -> None:
    if clients < 1:
        raise PartitionError(f"clients={clients}: use at least 1")
    if n < clients * min_size:
        raise PartitionError(
            f"{n} examples cannot give {clients} clients {min_size} each: raise train_size or lower clients"
        )


def partition(
    kind: str, labels: Sequence[int], keys: Sequence[str | None], clients: int, alpha: float, seed: int
) -> tuple[list[np.ndarray], list[str] | None]:
    """(index arrays per client, group label per client for natural splits else None)."""
    if kind == "dirichlet":
        return dirichlet(labels, clients, alpha, seed), None
    if kind == "natural":
        return natural(keys, clients, seed)
    if kind == "iid":
        return iid(len(labels), clients, seed), None
    raise PartitionError(f"partition={kind!r}: use one of {list(PARTITIONS)}")


def label_histogram(labels: Sequence[int], parts: list[np.ndarray], num_labels: int) -> list[list[int]]:
    labels = np.asarray(labels)
    return [np.bincount(labels[p], minlength=num_labels).tolist() for p in parts]


def concept_groups(clients: int, groups: int, seed: int) -> np.ndarray:
    """Each client's concept group in 0..groups-1: equal shares (to one client), in a seeded order that
    does not follow the client index (so groups do not line up with the round-robin tiers)."""
    if groups < 1 or groups > clients:
        raise PartitionError(f"concept_groups={groups}: use 1 (none) up to the number of clients ({clients})")
    return np.random.default_rng([seed, 5]).permutation(np.arange(clients) % groups)


def shifted_labels(labels: Sequence[int], group: int, num_labels: int) -> np.ndarray:
    """``labels`` as concept group ``group`` names them: each shifted by ``group`` modulo ``num_labels``,
    so that the same text has another label in every group (group 0 keeps the dataset's labels)."""
    return (np.asarray(labels, np.int64) + int(group)) % int(num_labels)

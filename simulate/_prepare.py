"""Turn a dataset into what the devices read: one JSONL file per client + the global test set."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from simulate._config import SimConfig
from simulate._datasets import Dataset, Example, load_dataset
from simulate._partition import concept_groups, label_histogram, partition, shifted_labels
from simulate._userdata import UserFileOptions


@dataclass
class PreparedData:
    dataset: Dataset
    client_files: dict[str, Path]
    client_sizes: dict[str, int]
    client_groups: dict[str, str] | None  # natural partition: the key (domain) of each client
    label_hist: dict[str, list[int]]
    test: list[Example]
    test_file: Path
    partition: str = "dirichlet"  # the split actually used (``auto`` resolved)
    concept_groups: dict[str, int] | None = None  # concept_groups > 1: each client's group (its label shift)

    def summary(self) -> dict:
        return {
            "dataset": self.dataset.name,
            "num_labels": self.dataset.num_labels,
            "label_names": self.dataset.label_names,
            "sources": self.dataset.sources,
            "train_examples": sum(self.client_sizes.values()),
            "test_examples": len(self.test),
            "client_sizes": self.client_sizes,
            "client_groups": self.client_groups,
            "label_hist": self.label_hist,
            "partition": self.partition,
            "concept_groups": self.concept_groups,
        }


def subsample(examples: list[Example], size: int, seed: int, salt: int) -> list[Example]:
    """A seeded subset of ``size`` (all when size is 0 or larger), in the original order."""
    if not size or size >= len(examples):
        return list(examples)
    idx = np.sort(np.random.default_rng([seed, salt]).choice(len(examples), size=size, replace=False))
    return [examples[i] for i in idx]


def write_jsonl(path: Path, examples: list[Example]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for e in examples:
            fh.write(json.dumps(e.to_json(), ensure_ascii=False) + "\n")
    return path


def _balanced_subsample(examples: list[Example], size: int, seed: int) -> list[Example]:
    """For natural keys: a subset with the same share of every key (each domain keeps its clients)."""
    keys = sorted({e.key for e in examples})
    if not size or size >= len(examples) or len(keys) > 32:
        return subsample(examples, size, seed, 11)
    per = size // len(keys)
    out = []
    for i, k in enumerate(keys):
        out += subsample([e for e in examples if e.key == k], per, seed, 100 + i)
    return out


#: Seed of the fixed split of a training file into its tune and eval halves (never a run's seed:
#: the halves must be the same for every seed, or tuning would see the reported runs' data).
POOL_SEED = 20261204


def dataset_of(cfg: SimConfig) -> Dataset:
    """The dataset a run uses: dataset=, its column settings and test_dataset= (raises DatasetError),
    its training examples restricted to ``cfg.train_pool``."""
    ds = load_dataset(cfg.dataset, cfg.data_root, cfg.seed, cfg.natural_key, UserFileOptions.of(cfg), cfg.test_dataset)
    return replace(ds, train=pool_of(ds.train, cfg.train_pool))


def pool_of(examples: list[Example], pool: str) -> list[Example]:
    """``all``, or one of two fixed disjoint halves (``tune``, ``eval``) of ``examples``, in order."""
    if pool == "all":
        return list(examples)
    tune = np.zeros(len(examples), bool)
    tune[np.random.default_rng(POOL_SEED).permutation(len(examples))[: len(examples) // 2]] = True
    return [e for e, t in zip(examples, tune) if t == (pool == "tune")]


def prepare_data(cfg: SimConfig, client_ids: list[str], out_dir: Path, say=print) -> PreparedData:
    ds = dataset_of(cfg)
    kind = cfg.partition if cfg.partition != "auto" else ("natural" if ds.natural_key else "dirichlet")
    if kind == "natural":
        train = _balanced_subsample(ds.train, cfg.train_size, cfg.seed)
    else:
        train = subsample(ds.train, cfg.train_size, cfg.seed, 11)
    test = subsample(ds.test, cfg.test_size, cfg.seed, 12)
    labels = [e.label for e in train]
    parts, groups = partition(kind, labels, [e.key for e in train], len(client_ids), cfg.alpha, cfg.seed)
    concepts = concept_groups(len(client_ids), cfg.concept_groups, cfg.seed) if cfg.concept_groups > 1 else None
    files, sizes, client_labels = {}, {}, np.asarray(labels, np.int64)
    for i, (cid, idx) in enumerate(zip(client_ids, parts)):
        examples = [train[j] for j in idx]
        if concepts is not None:  # the partition follows the dataset's labels; the client's data carries its own
            shifted = shifted_labels([e.label for e in examples], concepts[i], ds.num_labels)
            examples = [replace(e, label=int(y)) for e, y in zip(examples, shifted)]
            client_labels[idx] = shifted
        files[cid] = write_jsonl(out_dir / f"{cid}.jsonl", examples)
        sizes[cid] = int(len(idx))
    hist = dict(zip(client_ids, label_histogram(client_labels, parts, ds.num_labels)))
    test_file = write_jsonl(out_dir / "test.jsonl", test)
    say(
        f"data: {ds.name}, {len(train)} train examples over {len(client_ids)} clients "
        f"({kind}{f', alpha {cfg.alpha}' if kind == 'dirichlet' else ''}; sizes "
        f"{min(sizes.values())}..{max(sizes.values())}), {len(test)} test examples"
        + (f"; {cfg.concept_groups} concept groups (labels shifted per group)" if concepts is not None else "")
    )
    return PreparedData(
        ds,
        files,
        sizes,
        dict(zip(client_ids, groups)) if groups else None,
        hist,
        test,
        test_file,
        kind,
        dict(zip(client_ids, map(int, concepts))) if concepts is not None else None,
    )


def assign_tiers(client_ids: list[str], tiers: list[str], weights: list[float] | None) -> dict[str, str]:
    """Clients over tiers: round robin for equal shares (tiers interleave with data groups), else
    largest-remainder counts from ``weights``, then interleaved in the same way."""
    if weights is None:
        return {c: tiers[i % len(tiers)] for i, c in enumerate(client_ids)}
    w = np.asarray(weights, np.float64) / float(np.sum(weights))
    raw = w * len(client_ids)
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts))[: len(client_ids) - counts.sum()]:
        counts[i] += 1
    left, out, i = counts.copy(), {}, 0
    for c in client_ids:
        while left[i % len(tiers)] == 0:
            i += 1
        out[c] = tiers[i % len(tiers)]
        left[i % len(tiers)] -= 1
        i += 1
    return out

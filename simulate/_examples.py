"""The dataset types every loader returns (built-in folders and user files alike), and the two
helpers they share: the error that names a file and row, and the seeded test split.

A module of its own so that ``_datasets`` (the built-in loaders, which dispatch to user files)
and ``_userdata`` (the user files) both import it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class DatasetError(ValueError):
    """The data cannot be read; the message names the file (and row) and the fix."""


@dataclass(frozen=True)
class Example:
    text: str
    label: int
    text_pair: str | None = None
    key: str | None = None  # natural partition key (movie, domain)

    def to_json(self) -> dict:
        out = {"text": self.text, "label": self.label}
        if self.text_pair is not None:
            out["text_pair"] = self.text_pair
        return out


@dataclass
class Dataset:
    name: str
    train: list[Example]
    test: list[Example]
    label_names: list[str]
    natural_key: str | None = None  # what Example.key means ("movie_name", "domain")
    sources: list[str] = field(default_factory=list)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def pairs(self) -> bool:
        return any(e.text_pair is not None for e in self.train[:10])


def data_error(path: Path, row: int | None, problem: str, fix: str) -> DatasetError:
    """``<path>, row <row>: <problem>; <fix>`` (rows are 1-based, the header is row 1)."""
    where = f"{path}, row {row}" if row is not None else str(path)
    return DatasetError(f"{where}: {problem}; {fix}")


def split_test(examples: list[Example], test_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, test): a seeded ``test_fraction`` of ``examples`` (at least one) is the test set."""
    order = np.random.default_rng([seed, 7]).permutation(len(examples))
    n_test = max(1, int(round(test_fraction * len(examples))))
    test_idx = set(order[:n_test].tolist())
    return (
        [e for i, e in enumerate(examples) if i not in test_idx],
        [e for i, e in enumerate(examples) if i in test_idx],
    )

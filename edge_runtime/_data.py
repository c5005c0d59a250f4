"""The device's private labelled data: read a TSV/CSV/JSONL file (``fedhft.datafile``), find its
columns, tokenize it with the bundle's tokenizer, split off a local validation part, and batch it.

Tokenizing uses the ``tokenizers`` library on the bundle's ``tokenizer.json``, never ``transformers``:
an ORT or ExecuTorch device may have neither torch nor transformers installed.

Every problem with the file is a ``DataError`` naming the file, the row number (1-based, as an
editor shows it; the header is row 1 for TSV/CSV) and the fix.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from fedhft.datafile import PAIR_COLUMNS, DataError, label_ids, read_columns, read_records  # noqa: F401 (re-exported)
from fedhft.datafile import data_error as _fail
from fedhft.datafile import detect_columns as _detect_columns


@dataclass(frozen=True)
class DataOptions:
    """How to read the data file. ``None`` columns are auto-detected from common names."""

    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    label_map: Mapping[str, int] | None = None  # explicit string label -> class index
    val_fraction: float = 0.15
    seed: int = 0


@dataclass
class Examples:
    """Parsed rows: texts (and optional pair texts) with integer labels."""

    path: Path
    texts: list[str]
    pairs: list[str] | None
    labels: np.ndarray  # int64
    label_names: list[str] | None = None  # index -> original string label, when labels were strings
    columns: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class Encoded:
    """Token ids of a set of examples at one sequence length."""

    input_ids: np.ndarray  # int64 [N, S]
    attention_mask: np.ndarray  # int64 [N, S]
    labels: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, idx: np.ndarray) -> "Encoded":
        return Encoded(self.input_ids[idx], self.attention_mask[idx], self.labels[idx])


@dataclass
class LocalData:
    """Train and validation parts of the device's data, tokenized for one bundle."""

    train: Encoded
    val: Encoded
    seq_len: int
    source: Examples = field(repr=False)


# ----------------------------------------------------------------------------- columns and labels


def detect_columns(columns: Sequence[str], options: DataOptions, path: Path) -> tuple[str, str | None, str]:
    """(text column, pair column or None, label column), from the options or common names
    (``fedhft.datafile.detect_columns``, shared with ``fedhft simulate``)."""
    return _detect_columns(columns, path, options.text_column, options.text_pair_column, options.label_column)


def map_labels(raw: list, rownums: list[int], options: DataOptions, path: Path, num_labels: int | None):
    """Integer labels (and the index -> name list for string labels)."""
    out, names = label_ids(raw, rownums, path, options.label_map)
    labels = np.asarray(out, dtype=np.int64)
    if num_labels is not None and len(labels):
        bad = np.flatnonzero((labels < 0) | (labels >= num_labels))
        if bad.size:
            i = int(bad[0])
            shown = f"{len(names)} distinct string labels {names[:8]}" if names else f"label {raw[i]!r}"
            raise _fail(
                path,
                rownums[i],
                f"{shown} outside the model's {num_labels} classes [0, {num_labels})",
                'map the labels to 0..num_labels-1 (label_map=\'{"neg":0,"pos":1}\') or drop those rows',
            )
    return labels, names


def load_examples(path: str | Path, options: DataOptions = DataOptions(), num_labels: int | None = None) -> Examples:
    """Parse and check the whole file (fail fast at start-up, before joining the fleet)."""
    path = Path(path)
    if not path.is_file():
        raise _fail(path, None, "no such file", "pass data=PATH of a .tsv, .csv or .jsonl file")
    rows, columns = read_records(path)
    if not rows:
        raise _fail(path, None, "the file has no examples", "add at least two labelled rows")
    text_col, pair_col, label_col = detect_columns(columns, options, path)
    texts, pairs, raw, rownums = read_columns(rows, path, text_col, pair_col, label_col)
    labels, names = map_labels(raw, rownums, options, path, num_labels)
    return Examples(path, texts, pairs, labels, names, tuple(c for c in (text_col, pair_col, label_col) if c))


# ----------------------------------------------------------------------------- tokenizing


def load_tokenizer(bundle_dir: str | Path):
    """The bundle's ``tokenizer.json`` through the ``tokenizers`` library (no transformers)."""
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise ImportError("the tokenizers library is missing: install it with: pip install tokenizers") from exc
    path = Path(bundle_dir) / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the bundle has no fast tokenizer; re-export it with fedhft export")
    return Tokenizer.from_file(str(path))


def _pad_id(tokenizer) -> tuple[int, str]:
    padding = tokenizer.padding
    if padding:
        return int(padding["pad_id"]), str(padding["pad_token"])
    for token in ("[PAD]", "<pad>", "<|pad|>"):
        tid = tokenizer.token_to_id(token)
        if tid is not None:
            return int(tid), token
    return 0, "[PAD]"


def tokenize(tokenizer, examples: Examples, seq_len: int, batch: int = 256) -> Encoded:
    """Truncate and pad every example (or pair) to exactly ``seq_len`` tokens."""
    pad_id, pad_token = _pad_id(tokenizer)
    tokenizer.enable_truncation(max_length=seq_len)
    tokenizer.enable_padding(length=seq_len, pad_id=pad_id, pad_token=pad_token)
    ids = np.empty((len(examples), seq_len), dtype=np.int64)
    attn = np.empty((len(examples), seq_len), dtype=np.int64)
    for start in range(0, len(examples), batch):
        stop = start + batch
        inputs = (
            list(zip(examples.texts[start:stop], examples.pairs[start:stop]))
            if examples.pairs is not None
            else examples.texts[start:stop]
        )
        for row, enc in enumerate(tokenizer.encode_batch(inputs), start=start):
            ids[row] = enc.ids
            attn[row] = enc.attention_mask
    return Encoded(ids, attn, examples.labels.copy())


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train, val) index split; val has at least 1 example and train at least 1."""
    if n < 2:
        raise ValueError(f"need at least 2 examples to split off a validation part, got {n}: add more data")
    n_val = min(n - 1, max(1, int(round(val_fraction * n))))
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def prepare(
    examples: Examples, bundle_dir: str | Path, seq_len: int, options: DataOptions = DataOptions()
) -> LocalData:
    """Tokenize for a bundle and split; the split depends only on the data and the seed."""
    if len(examples) < 2:
        raise _fail(examples.path, None, f"only {len(examples)} example", "add at least two labelled rows")
    encoded = tokenize(load_tokenizer(bundle_dir), examples, seq_len)
    # Mix the file's content into the seed so that two devices with different data split differently.
    seed = options.seed ^ zlib.crc32(examples.texts[0].encode("utf-8"))
    train_idx, val_idx = split_indices(len(examples), options.val_fraction, seed)
    return LocalData(encoded.take(train_idx), encoded.take(val_idx), seq_len, examples)


def iter_batches(
    data: Encoded, batch_size: int, seed: int, *, epochs: int = 0, steps: int = 0, drop_last: bool = False
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Shuffled batches for ``steps`` optimizer steps (if > 0) or else ``epochs`` full passes.

    ``drop_last`` is for bundles with a static batch dimension: a short last batch is skipped,
    unless the data is smaller than one batch (then it is tiled to a full one).
    """
    n = len(data)
    if n == 0 or batch_size < 1:
        return
    rng = np.random.default_rng(seed)
    done, epoch = 0, 0
    while (steps > 0 and done < steps) or (steps <= 0 and epoch < max(epochs, 1)):
        order = rng.permutation(n)
        if drop_last and n < batch_size:
            order = np.resize(order, batch_size)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            if drop_last and len(idx) < batch_size:
                break
            yield data.input_ids[idx], data.attention_mask[idx], data.labels[idx]
            done += 1
            if steps > 0 and done >= steps:
                return
        epoch += 1


def eval_batches(data: Encoded, batch_size: int, static: bool = False):
    """In-order batches over all examples (a static bundle gets the last batch padded by repetition)."""
    n = len(data)
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(n, start + batch_size))
        real = len(idx)
        if static and real < batch_size:
            idx = np.resize(idx, batch_size)
        yield data.input_ids[idx], data.attention_mask[idx], data.labels[idx], real


class DataSource:
    """The parsed examples of one device, tokenized lazily per (bundle tokenizer, sequence length)."""

    def __init__(self, examples: Examples, options: DataOptions = DataOptions()):
        self.examples, self.options = examples, options
        self._cache: dict[tuple[str, int], LocalData] = {}

    def at(self, bundle_dir: str | Path, seq_len: int) -> LocalData:
        key = (str(Path(bundle_dir).resolve()), int(seq_len))
        if key not in self._cache:
            if len(self._cache) >= 4:  # bounded: a week of rounds must not accumulate tokenized copies
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = prepare(self.examples, bundle_dir, seq_len, self.options)
        return self._cache[key]

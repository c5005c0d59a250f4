"""What int8 weight-only storage costs in accuracy: fp32 vs int8 backbone on real text.

A random head would make a logit comparison meaningless, so a logistic-regression head is fitted
on the fp32 embeddings of labelled SST-2 sentences (first half) and both backbones are scored with
it on the second half: accuracy fp32 vs int8, logit differences and argmax agreement, plus the
cosine similarity of the mean-pooled embeddings.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from devices import AdapterPlan
from fedhft.layout import full_mask

FALLBACK_TEXTS = [
    "a charming and often affecting journey",
    "unflinchingly bleak and desperate",
    "the acting is superb but the plot never quite comes together",
    "one of the most enjoyable films of the year",
    "a tedious, overlong mess with nothing to say",
    "stocks rallied after the central bank held rates steady",
    "the new phone's battery lasts two full days",
    "the home team won in overtime after a late equalizer",
]


def labelled_texts(limit: int = 512) -> tuple[list[str], list[int]]:
    """SST-2 dev sentences from ../shared/data when present, else a tiny built-in sample."""
    for root in (Path.cwd(), *Path.cwd().parents):
        path = root / "shared" / "data" / "sst2" / "dev.tsv"
        if path.is_file():
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f, delimiter="\t"))[:limit]
            return [r["sentence"].strip() for r in rows], [int(r["label"]) for r in rows]
    return FALLBACK_TEXTS, [1, 0, 0, 1, 0, 1, 1, 1]


def _embed(model_spec: str, precision: str, ids, attn):
    from export._backbone import load_encoder, resolve_model
    from bundle_runtime import build_adapter_model

    plan = AdapterPlan(depth=1, ranks=(1,), mask_density=1.0, precision=precision)
    model = build_adapter_model(load_encoder(resolve_model(model_spec)), plan, 2)
    zeros = torch.zeros(len(full_mask(plan, model.dims)))  # adapters off: the pure backbone
    with torch.no_grad():
        return torch.cat(
            [model.pooled(ids[i : i + 64], attn[i : i + 64], zeros) for i in range(0, len(ids), 64)]
        ).numpy()


def quantization_accuracy(model_spec: str = "minilm", seq_len: int = 64) -> dict:
    from sklearn.linear_model import LogisticRegression
    from tokenizers import Tokenizer

    from export._backbone import resolve_model

    texts, labels = labelled_texts()
    tok = Tokenizer.from_file(str(resolve_model(model_spec).tokenizer_dir / "tokenizer.json"))
    tok.enable_truncation(seq_len)
    tok.enable_padding(length=seq_len)
    enc = tok.encode_batch(texts)
    ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
    attn = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)
    e32, e8 = _embed(model_spec, "fp32", ids, attn), _embed(model_spec, "int8", ids, attn)
    y = np.asarray(labels)
    half = len(y) // 2
    head = LogisticRegression(max_iter=2000).fit(e32[:half], y[:half])
    l32, l8 = head.decision_function(e32[half:]), head.decision_function(e8[half:])
    cos = (e32 * e8).sum(1) / (np.linalg.norm(e32, axis=1) * np.linalg.norm(e8, axis=1))
    return {
        "texts": len(texts),
        "seq_len": seq_len,
        "embedding_cosine_mean": float(cos.mean()),
        "embedding_cosine_min": float(cos.min()),
        "accuracy_fp32": float(((l32 > 0) == y[half:]).mean()),
        "accuracy_int8": float(((l8 > 0) == y[half:]).mean()),
        "logit_max_abs_diff": float(np.abs(l32 - l8).max()),
        "logit_mean_abs_diff": float(np.abs(l32 - l8).mean()),
        "logit_mean_abs": float(np.abs(l32).mean()),
        "argmax_agreement": float(((l32 > 0) == (l8 > 0)).mean()),
    }

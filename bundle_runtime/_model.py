"""The masked-adapter training model: a frozen HF encoder + LoRA sites + a mean-pooled head.

* LoRA on query/value (optionally the FFN) of the plan's top ``depth`` layers.
* The FedHFT row mask is a forward INPUT (one flat float vector, sliced per site), never a
  buffer: a buffer would be baked into the compiled program as a constant, and the mask changes
  every round while the bundle does not.
* Mean pooling over tokens, not BERT's CLS pooler: all-MiniLM-L6-v2 was trained with mean pooling,
  and a pooler missing from a checkpoint would otherwise be randomly initialised.
* Dropout is off: the compiled graphs must match eager step for step (the parity contract).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from devices import AdapterPlan
from fedhft.layout import ModelDims, adapted_modules, lora_names, mask_layout, trainable_layout
from bundle_runtime._quant import quantize_frozen

# Where the LoRA target modules live, per supported architecture (HF module paths).
_SITE_PATHS = {
    "bert": {
        "query": "encoder.layer.{l}.attention.self.query",
        "value": "encoder.layer.{l}.attention.self.value",
        "intermediate": "encoder.layer.{l}.intermediate.dense",
        "output": "encoder.layer.{l}.output.dense",
    },
    "distilbert": {
        "query": "transformer.layer.{l}.attention.q_lin",
        "value": "transformer.layer.{l}.attention.v_lin",
        "intermediate": "transformer.layer.{l}.ffn.lin1",
        "output": "transformer.layer.{l}.ffn.lin2",
    },
}
_FAMILY = {
    "bert": "bert",
    "roberta": "bert",
    "xlm-roberta": "bert",
    "electra": "bert",
    "camembert": "bert",
    "distilbert": "distilbert",
}
SUPPORTED_MODEL_TYPES = tuple(sorted(_FAMILY))


def architecture_family(model_type: str) -> str:
    try:
        return _FAMILY[model_type]
    except KeyError:
        raise ValueError(
            f"unsupported architecture model_type={model_type!r}: fedhft adapts BERT-family encoders "
            f"({', '.join(SUPPORTED_MODEL_TYPES)}); export one of those instead"
        ) from None


def site_paths(model_type: str) -> dict[str, str]:
    """Module -> the HF path of its LoRA site in ``model_type``'s encoder (``{l}`` = layer index), e.g.
    ``"query": "encoder.layer.{l}.attention.self.query"``; ValueError for an unsupported architecture."""
    return dict(_SITE_PATHS[architecture_family(model_type)])


def model_dims_from_config(config, num_labels: int) -> ModelDims:
    family = architecture_family(config.model_type)
    if family == "distilbert":
        return ModelDims(config.n_layers, config.dim, config.hidden_dim, num_labels)
    return ModelDims(config.num_hidden_layers, config.hidden_size, config.intermediate_size, num_labels)


class LoRALinear(nn.Module):
    """``base(x) + (x A^T B^T) * row_mask * alpha/r`` with ``row_mask`` set per forward."""

    def __init__(self, base: nn.Module, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        out_f, in_f = base.out_features, base.in_features
        self.lora_A = nn.Parameter(torch.zeros(rank, in_f))
        self.lora_B = nn.Parameter(torch.zeros(out_f, rank))
        self.scaling = alpha / rank
        self.row_mask: torch.Tensor | None = None

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.row_mask is None:
            raise RuntimeError("LoRALinear called without a row mask: call AdapterModel.forward, which sets it")
        # The mask multiplies B's rows (not the output) so that masked rows get exactly zero gradient.
        b = self.lora_B * self.row_mask[:, None]
        delta = F.linear(F.linear(x, self.lora_A), b) * self.scaling
        return self.base(x) + delta


@dataclass(frozen=True)
class Site:
    canonical_a: str
    canonical_b: str
    module: LoRALinear


class AdapterModel(nn.Module):
    """forward(input_ids, attention_mask, labels, mask) -> (loss, logits)."""

    def __init__(self, encoder: nn.Module, plan: AdapterPlan, dims: ModelDims) -> None:
        super().__init__()
        problems = plan.problems(dims.num_layers)
        if problems:
            raise ValueError("plan does not fit this model: " + "; ".join(problems))
        self.encoder, self.plan, self.dims = encoder, plan, dims
        if hasattr(self.encoder, "pooler"):
            self.encoder.pooler = None  # mean pooling instead; saves the pooler's compute
        self.encoder.requires_grad_(False)
        family = architecture_family(encoder.config.model_type)
        self._sites: list[Site] = []
        for layer, module, rank in adapted_modules(plan, dims):
            path = _SITE_PATHS[family][module].format(l=layer)
            parent_path, attr = path.rsplit(".", 1)
            parent = encoder.get_submodule(parent_path)
            lora = LoRALinear(getattr(parent, attr), rank, plan.alpha)
            setattr(parent, attr, lora)
            self._sites.append(Site(*lora_names(layer, module), lora))
        self.head = nn.Linear(dims.hidden, dims.num_labels)
        #: The lowest adapted encoder layer: the layers below it are frozen and see no adapter.
        self.first_adapted = min(layer for layer, _, _ in adapted_modules(plan, dims))
        self._mask_slices = [(s.offset, s.rows) for s in mask_layout(plan, dims)]

    def trainable(self) -> list[tuple[str, nn.Parameter]]:
        """(canonical name, parameter) in canonical order."""
        out: list[tuple[str, nn.Parameter]] = []
        for site in self._sites:
            out += [(site.canonical_a, site.module.lora_A), (site.canonical_b, site.module.lora_B)]
        out += [("head.weight", self.head.weight), ("head.bias", self.head.bias)]
        return out

    def torch_names(self) -> dict[str, str]:
        """canonical name -> this module's state_dict name (what ONNX/ET graphs call the tensor)."""
        by_id = {id(p): n for n, p in self.named_parameters()}
        return {c: by_id[id(p)] for c, p in self.trainable()}

    def set_trainable(self, state: dict[str, np.ndarray]) -> None:
        with torch.no_grad():
            for name, param in self.trainable():
                value = torch.as_tensor(np.asarray(state[name], dtype=np.float32))
                if tuple(value.shape) != tuple(param.shape):
                    raise ValueError(f"{name}: got shape {tuple(value.shape)}, expected {tuple(param.shape)}")
                param.copy_(value)

    def get_trainable(self) -> dict[str, np.ndarray]:
        return {n: p.detach().cpu().numpy().copy() for n, p in self.trainable()}

    def pooled(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        mask: torch.Tensor,
        below: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean-pooled sentence embedding (padding excluded) with the adapters under ``mask``.
        ``below``: ``hidden_below(input_ids, attention_mask)``, so that only the adapted layers run."""
        for site, (offset, rows) in zip(self._sites, self._mask_slices):
            site.module.row_mask = mask[offset : offset + rows]
        if below is None:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        else:
            hidden = encoder_span(self.encoder, input_ids, attention_mask, self.first_adapted, None, below)
        weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

    def logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        mask: torch.Tensor,
        below: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.head(self.pooled(input_ids, attention_mask, mask, below))

    def hidden_below(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The hidden states entering layer ``first_adapted``: what the frozen layers make of the
        input, the same whatever the adapters (the same ops as the full forward, so the same bits)."""
        return encoder_span(self.encoder, input_ids, attention_mask, 0, self.first_adapted)

    def forward(self, input_ids, attention_mask, labels, mask):
        logits = self.logits(input_ids, attention_mask, mask)
        return F.cross_entropy(logits, labels), logits.detach()


def encoder_span(
    encoder: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    start: int,
    stop: int | None = None,
    embedded: torch.Tensor | None = None,
) -> torch.Tensor:
    """A HF encoder's hidden states after its layers [start, stop) only (the same ops as its full
    forward, so the same bits): from ``embedded``, the hidden states entering layer ``start``, in
    place of the embeddings' output when given."""
    owner = encoder.encoder if hasattr(encoder, "encoder") else encoder.transformer
    layers, embeddings = owner.layer, encoder.embeddings
    owner.layer = nn.ModuleList(list(layers)[start:stop])
    if embedded is not None:
        encoder.embeddings = _Given(embedded)
    try:
        return encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    finally:
        owner.layer, encoder.embeddings = layers, embeddings


class _Given(nn.Module):
    """Stands in for the embeddings module: returns the hidden states it was given."""

    def __init__(self, hidden: torch.Tensor) -> None:
        super().__init__()
        self.hidden = hidden

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.hidden


def build_adapter_model(
    encoder: nn.Module, plan: AdapterPlan, num_labels: int, state: dict[str, np.ndarray] | None = None
) -> AdapterModel:
    """Wrap a loaded HF encoder (fp32) per plan; quantize the frozen backbone if the plan says int8."""
    dims = model_dims_from_config(encoder.config, num_labels)
    model = AdapterModel(encoder, plan, dims)
    if plan.precision == "int8":
        quantize_frozen(model.encoder)
    if state is not None:
        model.set_trainable(state)
    model.eval()  # no dropout anywhere; training is driven by the optimizer, not module.train()
    return model


def expected_layout(model: AdapterModel):
    """Sanity check used by tests and export: the module agrees with the shared layout."""
    got = [(n, tuple(p.shape)) for n, p in model.trainable()]
    want = [(s.name, s.shape) for s in trainable_layout(model.plan, model.dims)]
    if got != want:
        raise AssertionError(f"model trainables {got} disagree with fedhft.layout {want}")
    return want

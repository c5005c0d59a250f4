"""Adapter tensor layout and mask index math, shared by export, edge runtime and server.

Pure numpy: arrays in, arrays out, no I/O. Everything that must agree byte-for-byte between the
device and the server (tensor names, canonical order, shapes, mask slices, row gathering) is here.

Naming (canonical order = the order of ``trainable_layout``):

* for each adapted layer ``l`` ascending, for each target module ``m`` in plan order:
  ``layer{l}.{m}.lora_A`` with shape ``[rank, in_features]`` and
  ``layer{l}.{m}.lora_B`` with shape ``[out_features, rank]``;
* then ``head.weight`` ``[num_labels, hidden]`` and ``head.bias`` ``[num_labels]``.

The FedHFT mask selects output rows of each ``lora_B`` (rows of dW = B @ A). On the wire and as
the compiled graph's runtime input it is ONE float32 vector, the concatenation of the per-module
row masks in canonical order (``mask_layout`` gives the slices).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Mapping

import numpy as np

from devices import AdapterPlan

HEAD_NAMES = ("head.weight", "head.bias")


@dataclass(frozen=True)
class ModelDims:
    """The backbone shape facts that the layout depends on."""

    num_layers: int
    hidden: int
    intermediate: int
    num_labels: int

    def module_shape(self, module: str) -> tuple[int, int]:
        """(out_features, in_features) of a target module."""
        return {
            "query": (self.hidden, self.hidden),
            "value": (self.hidden, self.hidden),
            "intermediate": (self.intermediate, self.hidden),
            "output": (self.hidden, self.intermediate),
        }[module]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "ModelDims":
        return cls(**{k: int(d[k]) for k in ("num_layers", "hidden", "intermediate", "num_labels")})


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: Mapping) -> "TensorSpec":
        return cls(str(d["name"]), tuple(int(s) for s in d["shape"]), str(d.get("dtype", "float32")))


@dataclass(frozen=True)
class MaskSlice:
    """Where one B matrix's row mask sits inside the flat mask vector."""

    b_name: str
    offset: int
    rows: int

    def to_dict(self) -> dict:
        return asdict(self)


def adapted_modules(plan: AdapterPlan, dims: ModelDims) -> list[tuple[int, str, int]]:
    """(layer, module, rank) for every LoRA site, in canonical order."""
    layers = plan.adapted_layers(dims.num_layers)
    return [(layer, m, rank) for layer, rank in zip(layers, plan.ranks) for m in plan.target_modules()]


def lora_names(layer: int, module: str) -> tuple[str, str]:
    return f"layer{layer}.{module}.lora_A", f"layer{layer}.{module}.lora_B"


def trainable_layout(plan: AdapterPlan, dims: ModelDims) -> list[TensorSpec]:
    """Every trainable tensor of a plan, in canonical order."""
    specs: list[TensorSpec] = []
    for layer, module, rank in adapted_modules(plan, dims):
        out_f, in_f = dims.module_shape(module)
        a, b = lora_names(layer, module)
        specs += [TensorSpec(a, (rank, in_f)), TensorSpec(b, (out_f, rank))]
    specs += [TensorSpec("head.weight", (dims.num_labels, dims.hidden)), TensorSpec("head.bias", (dims.num_labels,))]
    return specs


def mask_layout(plan: AdapterPlan, dims: ModelDims) -> list[MaskSlice]:
    slices, offset = [], 0
    for layer, module, _ in adapted_modules(plan, dims):
        rows = dims.module_shape(module)[0]
        slices.append(MaskSlice(lora_names(layer, module)[1], offset, rows))
        offset += rows
    return slices


def mask_length(plan: AdapterPlan, dims: ModelDims) -> int:
    return sum(s.rows for s in mask_layout(plan, dims))


def rows_per_module(plan: AdapterPlan, rows: int) -> int:
    """How many rows of a B matrix with ``rows`` outputs this plan's density trains (at least 1)."""
    return max(1, min(rows, int(round(plan.mask_density * rows))))


def init_trainable(plan: AdapterPlan, dims: ModelDims, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic round-0 state: A ~ U(+-1/sqrt(in)) (kaiming-uniform, a=sqrt(5)), B = 0, head ~ N(0, 0.02)."""
    rng = np.random.default_rng(seed)
    state: dict[str, np.ndarray] = {}
    for spec in trainable_layout(plan, dims):
        if spec.name.endswith("lora_A"):
            bound = 1.0 / np.sqrt(spec.shape[1])
            state[spec.name] = rng.uniform(-bound, bound, size=spec.shape).astype(np.float32)
        elif spec.name == "head.weight":
            state[spec.name] = (rng.standard_normal(spec.shape) * 0.02).astype(np.float32)
        else:
            state[spec.name] = np.zeros(spec.shape, dtype=np.float32)
    return state


def full_mask(plan: AdapterPlan, dims: ModelDims) -> np.ndarray:
    return np.ones(mask_length(plan, dims), dtype=np.float32)


def mask_from_rows(plan: AdapterPlan, dims: ModelDims, rows: Mapping[str, Iterable[int]]) -> np.ndarray:
    """Flat mask vector from the selected row indices of each B matrix (missing B = no rows)."""
    mask = np.zeros(mask_length(plan, dims), dtype=np.float32)
    for s in mask_layout(plan, dims):
        idx = np.asarray(list(rows.get(s.b_name, ())), dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= s.rows):
            raise ValueError(f"row index out of range for {s.b_name}: must be in [0, {s.rows})")
        mask[s.offset + idx] = 1.0
    return mask


def rows_from_mask(plan: AdapterPlan, dims: ModelDims, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Selected row indices (int64, ascending) of each B matrix."""
    mask = np.asarray(mask)
    expected = mask_length(plan, dims)
    if mask.shape != (expected,):
        raise ValueError(f"mask has shape {mask.shape}, this plan needs ({expected},)")
    return {s.b_name: np.flatnonzero(mask[s.offset : s.offset + s.rows] > 0.5) for s in mask_layout(plan, dims)}


def masked_update_layout(plan: AdapterPlan, dims: ModelDims, mask: np.ndarray) -> list[TensorSpec]:
    """Tensor specs of an update under ``mask``: A and head whole, each B reduced to its masked rows."""
    rows = rows_from_mask(plan, dims, mask)
    out = []
    for spec in trainable_layout(plan, dims):
        if spec.name in rows:
            out.append(TensorSpec(spec.name, (len(rows[spec.name]), spec.shape[1])))
        else:
            out.append(spec)
    return out


def gather_update(
    plan: AdapterPlan,
    dims: ModelDims,
    start: Mapping[str, np.ndarray],
    trained: Mapping[str, np.ndarray],
    mask: np.ndarray,
) -> dict[str, np.ndarray]:
    """Device side: the update (trained - start), with each B reduced to its masked rows."""
    rows = rows_from_mask(plan, dims, mask)
    update = {}
    for spec in trainable_layout(plan, dims):
        delta = np.asarray(trained[spec.name], dtype=np.float32) - np.asarray(start[spec.name], dtype=np.float32)
        update[spec.name] = np.ascontiguousarray(delta[rows[spec.name]]) if spec.name in rows else delta
    return update


def scatter_update(
    plan: AdapterPlan,
    dims: ModelDims,
    start: Mapping[str, np.ndarray],
    update: Mapping[str, np.ndarray],
    mask: np.ndarray,
) -> dict[str, np.ndarray]:
    """Server side: the client's trained state = start + update, masked B rows scattered back."""
    rows = rows_from_mask(plan, dims, mask)
    state = {}
    for spec in trainable_layout(plan, dims):
        value = np.array(start[spec.name], dtype=np.float32, copy=True)
        if spec.name in rows:
            value[rows[spec.name]] += update[spec.name]
        else:
            value += update[spec.name]
        state[spec.name] = value
    return state


def top_rows_by_energy(
    delta_w: np.ndarray, k: int, rng: np.random.Generator | None = None, explore: float = 0.0
) -> np.ndarray:
    """FedHFT mask for one module: the ``k`` rows of dW with the largest L2 energy.

    ``explore`` in [0, 1] is the fraction of the ``k`` rows drawn uniformly at random from the
    rest, so that rows with no energy yet (all of them at round 0) still get trained. Ties are
    broken by row index so the result is deterministic without ``rng``.
    """
    rows = delta_w.shape[0]
    k = int(min(max(k, 0), rows))
    n_explore = int(round(explore * k)) if rng is not None else 0
    energy = np.einsum("ij,ij->i", delta_w, delta_w)
    order = np.lexsort((np.arange(rows), -energy))
    chosen = list(order[: k - n_explore])
    if n_explore:
        rest = np.setdiff1d(np.arange(rows), chosen)
        chosen += list(rng.choice(rest, size=n_explore, replace=False))
    return np.sort(np.asarray(chosen, dtype=np.int64))

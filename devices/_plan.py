"""The AdapterPlan: what one device tier trains, and how big its batches are.

Lives in ``devices`` (which imports nothing else of ours) because the tier catalog is made
of plans; the shared ``fedhft`` package and every side read it from here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: The training runtimes a tier can name as its backend.
BACKENDS = ("torch", "ort", "executorch")
PRECISIONS = ("fp32", "int8")
#: Module groups that can carry LoRA. "ffn" adds the two feed-forward projections.
TARGET_GROUPS = {
    "qv": ("query", "value"),
    "qv+ffn": ("query", "value", "intermediate", "output"),
}


@dataclass(frozen=True)
class AdapterPlan:
    """LEGEND depth/rank + FedHFT mask density + the compiled input shape of one tier."""

    depth: int = field(metadata={"help": "number of top encoder layers that carry LoRA (LEGEND depth)"})
    ranks: tuple[int, ...] = field(
        metadata={"help": "LoRA rank per adapted layer, lowest adapted layer first; non-decreasing"}
    )
    mask_density: float = field(
        metadata={"help": "fraction of each LoRA B matrix's output rows trained per round (FedHFT mask), in (0, 1]"}
    )
    precision: str = field(default="fp32", metadata={"help": "frozen backbone storage: fp32 or int8 (weight only)"})
    max_seq_len: int = field(default=128, metadata={"help": "largest sequence length the bundle accepts"})
    batch_size: int = field(default=16, metadata={"help": "largest batch size the bundle accepts"})
    targets: str = field(default="qv", metadata={"help": "LoRA targets: 'qv' (attention query/value) or 'qv+ffn'"})
    alpha: float = field(default=16.0, metadata={"help": "LoRA scaling numerator: the delta is scaled by alpha/rank"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "ranks", tuple(int(r) for r in self.ranks))
        errors = self.problems()
        if errors:
            raise ValueError("invalid AdapterPlan: " + "; ".join(errors))

    def problems(self, num_layers: int | None = None) -> list[str]:
        """Every reason this plan is invalid (for a model of ``num_layers`` if given)."""
        errs: list[str] = []
        if self.depth < 1:
            errs.append(f"depth must be >= 1, got {self.depth}")
        if len(self.ranks) != self.depth:
            errs.append(
                f"ranks has {len(self.ranks)} entries but depth is {self.depth}: give one rank per adapted layer"
            )
        if any(r < 1 for r in self.ranks):
            errs.append(f"every rank must be >= 1, got {list(self.ranks)}")
        if any(b < a for a, b in zip(self.ranks, self.ranks[1:])):
            errs.append(f"ranks must be non-decreasing toward the output, got {list(self.ranks)}")
        if not 0.0 < self.mask_density <= 1.0:
            errs.append(f"mask_density must be in (0, 1], got {self.mask_density}")
        if self.precision not in PRECISIONS:
            errs.append(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.max_seq_len < 8:
            errs.append(f"max_seq_len must be >= 8, got {self.max_seq_len}")
        if self.batch_size < 1:
            errs.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.targets not in TARGET_GROUPS:
            errs.append(f"targets must be one of {sorted(TARGET_GROUPS)}, got {self.targets!r}")
        if self.alpha <= 0:
            errs.append(f"alpha must be > 0, got {self.alpha}")
        if num_layers is not None and self.depth > num_layers:
            errs.append(
                f"plan depth {self.depth} is deeper than the model's {num_layers} layers: use depth <= {num_layers}"
            )
        return errs

    def adapted_layers(self, num_layers: int) -> list[int]:
        """Indices of the adapted encoder layers (the top ``depth``), ascending."""
        if self.depth > num_layers:
            raise ValueError(
                f"plan depth {self.depth} is deeper than the model's {num_layers} layers: use depth <= {num_layers}"
            )
        return list(range(num_layers - self.depth, num_layers))

    def target_modules(self) -> tuple[str, ...]:
        return TARGET_GROUPS[self.targets]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ranks"] = list(self.ranks)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AdapterPlan":
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown AdapterPlan field(s) {unknown}; known fields: {sorted(known)}")
        missing = sorted(f for f in ("depth", "ranks", "mask_density") if f not in d)
        if missing:
            raise ValueError(f"AdapterPlan is missing required field(s) {missing}")
        return cls(**{**d, "ranks": tuple(d["ranks"])})

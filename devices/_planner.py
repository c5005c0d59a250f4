"""LEGEND-style planner: estimate what a plan costs, and pick the largest plan that fits a device.

``estimate`` is a closed-form model of one training step of an encoder with LoRA on the top ``d``
of its ``L`` layers: peak resident memory (runtime baseline, frozen weights, int8 dequantized
copies, activations of the adapted layers only, one layer's working set, AdamW state) and compute
(forward through all L layers, backward through the top d only: about (L + d) / (2 L) of adapting
every layer). Step time = FLOPs / (backend efficiency x the device's measured matmul rate) + a
per-layer-pass dispatch overhead. The formulas and what the constants were fitted to:
docs/DESIGN-NOTES.md, section "devices/_planner.py".

``plan_for`` enumerates candidate plans (sequence length, batch, depth, precision) and returns the
largest one, in a fixed total order, whose estimate fits the memory budget and the step-time
target. Because the order is fixed and a larger budget only ever adds feasible candidates, more
memory or compute never yields a smaller plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from devices._plan import BACKENDS, TARGET_GROUPS, AdapterPlan
from devices._profiler import DeviceProfile

MB = 1024.0 * 1024.0

#: Resident MB of a training process before its weights are touched. torch: python + torch +
#: transformers with the model classes instantiated (transformers pulls in torchao and more when a
#: model is built: 386 MB measured here, 240 MB of it at import). ort: python + numpy +
#: onnxruntime without torch (80-190 MB peak on a tiny model: docs/DESIGN-NOTES.md, ONNX Runtime).
#: executorch: the native runtime in an app process (the Python bindings would add torch + 140 MB;
#: a phone runs the C++/Java runtime). Only the torch figure is measured on MiniLM (benchmarks/planner_check.py).
RUNTIME_BASELINE_MB = {"torch": 385.0, "ort": 70.0, "executorch": 60.0}
#: Multiplier on the structural activation count. torch: fitted 2.2 on MiniLM (the saved tensors
#: match the structural count; the rest is forward/backward transients and heap the allocator keeps
#: between them). ExecuTorch plans memory ahead and measured ~40% below eager; ORT's arena is assumed
#: in between. The last two are not yet measured on MiniLM.
ACTIVATION_FACTOR = {"torch": 2.2, "ort": 1.5, "executorch": 1.2}
#: Fraction of the numpy matmul GFLOP/s a backend sustains on a training step (eager MiniLM: 122 of
#: 180 at 16x64 with 2 threads; 0.65-0.73 at 1 thread in planner_check). ExecuTorch's GEMM-only
#: XNNPACK delegation measured 3-7x slower than eager on x86.
EFFICIENCY = {"torch": 0.65, "ort": 0.65, "executorch": 0.2}
#: Fixed milliseconds per layer pass (forward or backward) for op dispatch that does not scale with
#: the tokens; dominates tiny batches.
PASS_OVERHEAD_MS = {"torch": 1.0, "ort": 0.5, "executorch": 0.5}
#: Optimizer bytes per trainable parameter at its peak: fp32 gradient + AdamW's two moments + the
#: weight (16); ExecuTorch's in-program adamw_step also holds its outputs and temporaries during the call.
OPTIMIZER_BYTES_PER_PARAM = {"torch": 16.0, "ort": 16.0, "executorch": 44.0}
#: int8 dequantization cost, in "FLOP equivalents" per matrix element per step (memory-bound).
DEQUANT_FLOPS_PER_PARAM = 8.0

DEFAULT_STEP_MS = 2000.0
DEFAULT_MEMORY_SHARE = 0.5


class PlanError(ValueError):
    """No candidate plan fits the budget; the message says what the smallest one needs."""


@dataclass(frozen=True)
class ModelShape:
    """The backbone facts the estimate needs (devices must not import fedhft's ModelDims)."""

    num_layers: int = field(metadata={"help": "encoder layers (L)"})
    hidden: int = field(metadata={"help": "hidden size (H)"})
    intermediate: int = field(metadata={"help": "feed-forward inner size (I)"})
    vocab: int = field(metadata={"help": "vocabulary size (rows of the word-embedding table)"})
    num_params: int = field(metadata={"help": "total backbone parameters, embeddings included"})
    heads: int = field(metadata={"help": "attention heads"})

    @classmethod
    def from_hf_config(cls, config: dict[str, Any]) -> "ModelShape":
        """From a Hugging Face BERT-style ``config.json`` dict (no transformers import needed)."""
        h, i, layers = int(config["hidden_size"]), int(config["intermediate_size"]), int(config["num_hidden_layers"])
        vocab, pos = int(config["vocab_size"]), int(config.get("max_position_embeddings", 512))
        types = int(config.get("type_vocab_size", 2))
        per_layer = 4 * (h * h + h) + 2 * h * i + i + h + 4 * h  # q,k,v,o + FFN + biases + 2 LayerNorms
        embeddings = (vocab + pos + types) * h + 2 * h
        pooler = h * h + h
        return cls(layers, h, i, vocab, embeddings + layers * per_layer + pooler, int(config["num_attention_heads"]))

    @classmethod
    def minilm(cls) -> "ModelShape":
        """all-MiniLM-L6-v2, the bundled backbone (22,713,216 parameters)."""
        return cls.from_hf_config(
            {
                "hidden_size": 384,
                "intermediate_size": 1536,
                "num_hidden_layers": 6,
                "vocab_size": 30522,
                "max_position_embeddings": 512,
                "type_vocab_size": 2,
                "num_attention_heads": 12,
            }
        )

    def layer_matrix_params(self) -> int:
        """Matrix elements of one encoder layer (q, k, v, attention output, two FFN matrices)."""
        return 4 * self.hidden * self.hidden + 2 * self.hidden * self.intermediate

    def matrix_params(self) -> int:
        """Elements of every 2-D weight (what weight-only int8 quantizes): all but biases and LayerNorms."""
        vectors = self.num_layers * (9 * self.hidden + self.intermediate) + 3 * self.hidden
        return self.num_params - vectors

    def module_shape(self, module: str) -> tuple[int, int]:
        """(out_features, in_features) of a LoRA target module."""
        h, i = self.hidden, self.intermediate
        return {"query": (h, h), "value": (h, h), "intermediate": (i, h), "output": (h, i)}[module]


@dataclass(frozen=True)
class Estimate:
    """What one training step of a plan costs. ``parts`` itemizes ``peak_mb``."""

    peak_mb: float
    step_ms: float | None
    flops: float
    parts: dict[str, float] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"peak_mb": self.peak_mb, "step_ms": self.step_ms, "flops": self.flops, "parts": dict(self.parts)}


@dataclass(frozen=True)
class Budget:
    """What a device can give one training step."""

    memory_mb: float = field(metadata={"help": "peak RSS allowed for the training process, MB"})
    gflops: float = field(metadata={"help": "sustained fp32 matmul GFLOP/s of the device"})
    step_ms: float = field(default=DEFAULT_STEP_MS, metadata={"help": "largest acceptable step time, ms"})
    backend: str = field(default="torch", metadata={"help": "training backend: torch, ort or executorch"})

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}: use one of {BACKENDS}")
        if not all(0 < v < math.inf for v in (self.memory_mb, self.gflops, self.step_ms)):
            raise ValueError(
                f"memory_mb, gflops and step_ms must be finite and > 0, got {self.memory_mb}, "
                f"{self.gflops}, {self.step_ms}"
            )


def default_rank_profile(num_layers: int) -> tuple[int, ...]:
    """Shared per-layer ranks, bottom layer first: thirds of 2, 4, 8 (6 layers: 2,2,4,4,8,8).

    One profile for every tier means a layer has the same LoRA shape on every device that trains
    it, so the server can average it without padding or truncation.
    """
    return tuple(2 if i < num_layers / 3 else 4 if i < 2 * num_layers / 3 else 8 for i in range(num_layers))


def trainable_params(plan: AdapterPlan, model: ModelShape, num_labels: int = 2) -> int:
    """LoRA A and B of every adapted module plus the classifier head."""
    lora = sum(r * (o + i) for r in plan.ranks for o, i in map(model.module_shape, plan.target_modules()))
    return lora + num_labels * model.hidden + num_labels


def _weights_bytes(plan: AdapterPlan, model: ModelShape) -> tuple[float, float]:
    """(stored frozen weights, fp32 dequantized copies kept for backward), in bytes."""
    if plan.precision == "fp32":
        return 4.0 * model.num_params, 0.0
    matrices = model.matrix_params()
    # One fp32 scale per row; rows ~ elements / hidden (exact for all but the FFN output matrix).
    stored = 1.0 * matrices + 4.0 * matrices / model.hidden + 4.0 * (model.num_params - matrices)
    return stored, 4.0 * plan.depth * model.layer_matrix_params()


def _activation_bytes(plan: AdapterPlan, model: ModelShape, backend: str) -> tuple[float, float]:
    """(saved activations of the adapted layers, one layer's transient working set), in bytes."""
    tokens, s, h = plan.batch_size * plan.max_seq_len, plan.max_seq_len, model.hidden
    n_mod = len(plan.target_modules())
    # FFN targets also keep the inputs of their LoRA branches: the attention LayerNorm's output (H)
    # and the GELU output (I), which the frozen FFN matmuls alone would not save.
    ffn = h + model.intermediate if "output" in plan.target_modules() else 0
    per_token = [6 * h + model.intermediate + model.heads * s + ffn + 2 * r * n_mod for r in plan.ranks]
    saved = 4.0 * tokens * sum(per_token) * ACTIVATION_FACTOR[backend]
    # Backward of one layer holds the FFN intermediate and the attention scores plus their grads.
    working = 4.0 * tokens * 2 * (model.intermediate + model.heads * s + 4 * h)
    return saved, working


def step_flops(plan: AdapterPlan, model: ModelShape) -> float:
    """FLOPs of one step: forward through all layers, backward through the adapted top ``depth``."""
    tokens, s, h = plan.batch_size * plan.max_seq_len, plan.max_seq_len, model.hidden
    dense = 2.0 * tokens * model.layer_matrix_params()
    attention = 4.0 * tokens * s * h
    lora = [
        2.0 * tokens * r * sum(o + i for o, i in map(model.module_shape, plan.target_modules())) for r in plan.ranks
    ]
    forward = model.num_layers * (dense + attention) + sum(lora)
    backward = plan.depth * (dense + 2 * attention) + 2 * sum(lora)
    return forward + backward


def estimate(
    plan: AdapterPlan, model: ModelShape, *, backend: str = "torch", gflops: float | None = None, num_labels: int = 2
) -> Estimate:
    """Peak MB, step ms (None unless ``gflops`` is given) and FLOPs of one training step of ``plan``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: use one of {BACKENDS}")
    problems = plan.problems(model.num_layers)
    if problems:
        raise ValueError("plan does not fit the model: " + "; ".join(problems))
    stored, dequant = _weights_bytes(plan, model)
    saved, working = _activation_bytes(plan, model, backend)
    parts = {
        "runtime": RUNTIME_BASELINE_MB[backend],
        "weights": stored / MB,
        "dequantized": dequant / MB,
        "activations": saved / MB,
        "working": working / MB,
        "optimizer": OPTIMIZER_BYTES_PER_PARAM[backend] * trainable_params(plan, model, num_labels) / MB,
    }
    flops = step_flops(plan, model)
    step_ms = None
    if gflops is not None:
        if gflops <= 0:
            raise ValueError(f"gflops must be > 0, got {gflops}")
        work = flops + (
            DEQUANT_FLOPS_PER_PARAM * model.num_layers * model.layer_matrix_params()
            if plan.precision == "int8"
            else 0.0
        )
        passes = model.num_layers + plan.depth
        step_ms = work / (EFFICIENCY[backend] * gflops * 1e9) * 1e3 + passes * PASS_OVERHEAD_MS[backend]
    return Estimate(sum(parts.values()), step_ms, flops, parts)


def candidate_key(plan: AdapterPlan) -> tuple[int, int, int, int]:
    """The planner's total order: keep the task's sequence length, then its batch, then go deep.

    Sequence length first because truncation throws data away while a smaller batch only adds
    gradient noise; depth after them because it is the per-device knob LEGEND tunes; fp32 over
    int8 last, since int8 only saves memory and costs a dequantization per step.
    """
    return (plan.max_seq_len, plan.batch_size, plan.depth, int(plan.precision == "fp32"))


def density_for_depth(depth: int, num_layers: int) -> float:
    """Mask density rises with depth, in quarters: both say how much adapter a device can afford.

    The mask is a runtime input of the compiled graph, so density changes neither memory nor
    FLOPs; it sets how many B rows are trained and uploaded per round.
    """
    return min(1.0, math.ceil(4.0 * depth / num_layers) / 4.0)


def _candidates(
    model: ModelShape,
    ranks: Sequence[int],
    seq_lens: Iterable[int],
    batch_sizes: Iterable[int],
    targets: str,
    alpha: float,
) -> list[AdapterPlan]:
    out = []
    for s in seq_lens:
        for b in batch_sizes:
            for d in range(1, model.num_layers + 1):
                for precision in ("fp32", "int8"):
                    out.append(
                        AdapterPlan(
                            depth=d,
                            ranks=tuple(ranks[-d:]),
                            mask_density=density_for_depth(d, model.num_layers),
                            precision=precision,
                            max_seq_len=s,
                            batch_size=b,
                            targets=targets,
                            alpha=alpha,
                        )
                    )
    return sorted(out, key=candidate_key, reverse=True)


def _budget_of(
    target: Budget | DeviceProfile, backend: str | None, step_ms: float | None, memory_share: float
) -> Budget:
    """A Budget from a Budget, or from a DeviceProfile (a share of its available memory)."""
    if isinstance(target, Budget):
        return Budget(target.memory_mb, target.gflops, step_ms or target.step_ms, backend or target.backend)
    if isinstance(target, DeviceProfile):
        return Budget(
            memory_share * target.available_memory_mb,
            target.matmul_gflops,
            step_ms or DEFAULT_STEP_MS,
            backend or "torch",
        )
    raise TypeError(f"plan_for needs a Budget or a DeviceProfile, got {type(target).__name__}")


def plan_for(
    target: Budget | DeviceProfile,
    model: ModelShape,
    *,
    backend: str | None = None,
    step_ms: float | None = None,
    memory_share: float = DEFAULT_MEMORY_SHARE,
    rank_profile: Sequence[int] | None = None,
    seq_lens: Sequence[int] = (128, 64, 32),
    batch_sizes: Sequence[int] = (16, 8, 4, 2, 1),
    targets: str = "qv",
    alpha: float = 16.0,
) -> AdapterPlan:
    """The largest plan (``candidate_key`` order) whose estimate fits ``target``'s memory and step time.

    ``target`` is a ``Budget`` or a ``DeviceProfile``; for a profile the memory budget is
    ``memory_share`` of its available memory and the compute its measured matmul GFLOP/s.
    Raises ``PlanError`` naming what the smallest candidate needs when nothing fits.
    """
    budget = _budget_of(target, backend, step_ms, memory_share)
    ranks = tuple(rank_profile) if rank_profile is not None else default_rank_profile(model.num_layers)
    if len(ranks) != model.num_layers:
        raise ValueError(
            f"rank_profile has {len(ranks)} entries but the model has {model.num_layers} layers: give one per layer"
        )
    if targets not in TARGET_GROUPS:
        raise ValueError(f"targets must be one of {sorted(TARGET_GROUPS)}, got {targets!r}")
    candidates = _candidates(model, ranks, seq_lens, batch_sizes, targets, alpha)
    if not candidates:
        raise ValueError("no candidate plans: seq_lens and batch_sizes must not be empty")
    for plan in candidates:
        est = estimate(plan, model, backend=budget.backend, gflops=budget.gflops)
        if est.peak_mb <= budget.memory_mb and est.step_ms <= budget.step_ms:
            return plan
    return _raise_nothing_fits(candidates, model, budget)


def _raise_nothing_fits(candidates: list[AdapterPlan], model: ModelShape, budget: Budget) -> AdapterPlan:
    ests = [(estimate(p, model, backend=budget.backend, gflops=budget.gflops), p) for p in candidates]
    lean_mem, lean_plan = min(ests, key=lambda e: e[0].peak_mb)
    fast_time, fast_plan = min(ests, key=lambda e: e[0].step_ms)
    leaner = min(BACKENDS, key=RUNTIME_BASELINE_MB.__getitem__)
    raise PlanError(
        f"no plan fits {budget.memory_mb:.0f} MB and {budget.step_ms:.0f} ms/step on {budget.backend} at "
        f"{budget.gflops:.1f} GFLOP/s: the leanest plan ({_describe(lean_plan)}) needs {lean_mem.peak_mb:.0f} MB peak "
        f"and the fastest ({_describe(fast_plan)}) {fast_time.step_ms:.0f} ms/step. Raise the memory budget to at "
        f"least {math.ceil(lean_mem.peak_mb)} MB (or use the leaner '{leaner}' backend, baseline "
        f"{RUNTIME_BASELINE_MB[leaner]:.0f} MB), and the step-time target to at least {math.ceil(fast_time.step_ms)} ms"
    )


def _describe(plan: AdapterPlan) -> str:
    return f"depth {plan.depth}, batch {plan.batch_size}, seq {plan.max_seq_len}, {plan.precision}"

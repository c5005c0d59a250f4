"""Parity is the contract: each bundle, run by its backend's own runtime, must train like eager PyTorch.

``verify_bundle`` rebuilds the eager reference from the manifest's base model (checking the
weights' sha256), then runs N AdamW steps on one fixed batch with one fixed mask in both and
compares the loss trajectory and the trained tensors. Tolerances (documented contract):

* loss, every step: |a-b| <= LOSS_ATOL + LOSS_RTOL*|b|;
* each trained tensor's CHANGE from the start state: ||d_backend - d_eager|| <= PARAM_RTOL * ||d_eager||,
  and no single element further apart than PARAM_ATOL_STEPS Adam steps (lr each);
* masked-off B rows must not move at all (<= FROZEN_ATOL).

Relative on the change, because the backends do the same fp32 math in another order and Adam
magnifies rounding where a gradient is near eps, while the faults to catch (a frozen parameter, a
wrong optimizer, a wrong mask) are orders of magnitude larger: docs/DESIGN-NOTES.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedhft.layout import init_trainable, mask_from_rows, mask_layout, rows_from_mask, rows_per_module
from fedhft.manifest import BundleError, Manifest, load_manifest

LOSS_ATOL, LOSS_RTOL, PARAM_RTOL, PARAM_ATOL_STEPS, FROZEN_ATOL = 1e-4, 1e-4, 1e-2, 1.0, 1e-7
VERIFY_LR = 5e-3


@dataclass
class VerifyReport:
    bundle_dir: Path
    backend: str
    tier: str
    steps: int
    losses_backend: list[float]
    losses_eager: list[float]
    max_loss_diff: float
    max_param_diff: float
    worst_param: str
    max_frozen_move: float
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def reference_spec(manifest: Manifest) -> str:
    from export._backbone import MINILM_ID

    return "minilm" if manifest.base_model_id == MINILM_ID else manifest.base_model_id


def reference_model(manifest: Manifest):
    """The eager AdapterModel for a manifest, rebuilt from its recorded base model."""
    from export._backbone import load_encoder, resolve_model, weights_sha256
    from bundle_runtime import build_adapter_model

    source = resolve_model(reference_spec(manifest))
    encoder = load_encoder(source)
    digest = weights_sha256(encoder)
    if digest != manifest.base_weights_sha256:
        raise BundleError(
            f"base model {manifest.base_model_id} has weights sha256 {digest[:12]}..., the bundle was "
            f"exported from {manifest.base_weights_sha256[:12]}...: verify against the same model"
        )
    return build_adapter_model(encoder, manifest.plan, manifest.dims.num_labels)


def fixed_problem(manifest: Manifest, seed: int = 0):
    """One batch, one mask and a start state with non-zero B (so the mask matters in the forward)."""
    rng = np.random.default_rng(seed)
    shapes = {i.name: i for i in manifest.inputs}
    ids_spec = shapes["input_ids"]
    static = all(isinstance(d, int) for d in ids_spec.shape)
    batch, seq = ids_spec.shape if static else (min(4, manifest.plan.batch_size), min(32, manifest.plan.max_seq_len))
    ids = rng.integers(1000, 2000, size=(batch, seq), dtype=np.int64)
    attn = np.ones((batch, seq), dtype=np.int64)
    attn[0, seq // 2 :] = 0  # one padded row exercises the attention mask
    labels = (np.arange(batch) % manifest.dims.num_labels).astype(np.int64)
    rows = {
        s.b_name: rng.choice(s.rows, size=rows_per_module(manifest.plan, s.rows), replace=False)
        for s in mask_layout(manifest.plan, manifest.dims)
    }
    mask = mask_from_rows(manifest.plan, manifest.dims, rows)
    state = init_trainable(manifest.plan, manifest.dims, seed + 1)
    for name in state:
        if name.endswith("lora_B"):
            state[name] = (rng.standard_normal(state[name].shape) * 0.02).astype(np.float32)
    return (ids, attn, labels), mask, state


def _run(session, batch, mask, state, steps: int, lr: float):
    session.set_state(state)
    session.begin_round(mask, lr)
    losses = [session.train_step(*batch) for _ in range(steps)]
    return losses, session.get_state()


def compare(manifest, mask, start, eager, backend, lr: float = VERIFY_LR) -> tuple[float, float, str, float, list[str]]:
    (le, se), (lb, sb) = eager, backend
    problems = []
    loss_diff = max(abs(a - b) for a, b in zip(lb, le))
    for step, (a, b) in enumerate(zip(lb, le)):
        if abs(a - b) > LOSS_ATOL + LOSS_RTOL * abs(b):
            problems.append(f"step {step}: loss {a:.6f} vs eager {b:.6f}")
            break
    worst, param_diff, worst_rel = "", 0.0, 0.0
    for name in se:
        d = float(np.max(np.abs(sb[name] - se[name]), initial=0.0))
        change = float(np.linalg.norm(se[name] - start[name]))
        rel = float(np.linalg.norm(sb[name] - se[name])) / max(change, 1e-12)
        if d > param_diff:
            worst, param_diff = name, d
        if rel > PARAM_RTOL and rel > worst_rel:
            worst_rel = rel
            problems.append(f"{name}: change differs from eager by {rel:.1e} of its norm (> {PARAM_RTOL:.0e})")
    if param_diff > PARAM_ATOL_STEPS * lr:
        problems.append(
            f"{worst} differs from eager by {param_diff:.2e} (> {PARAM_ATOL_STEPS:g} Adam step of lr {lr:g})"
        )
    frozen = 0.0
    for b_name, rows in rows_from_mask(manifest.plan, manifest.dims, mask).items():
        off = np.setdiff1d(np.arange(start[b_name].shape[0]), rows)
        frozen = max(frozen, float(np.max(np.abs(sb[b_name][off] - start[b_name][off]), initial=0.0)))
    if frozen > FROZEN_ATOL:
        problems.append(f"masked-off B rows moved by {frozen:.2e}: the mask is not applied")
    return loss_diff, param_diff, worst, frozen, problems


def verify_bundle(bundle_dir: Path, steps: int = 5, lr: float = VERIFY_LR, seed: int = 0) -> VerifyReport:
    from bundle_runtime import EagerSession, open_session

    manifest = load_manifest(Path(bundle_dir))
    batch, mask, state = fixed_problem(manifest, seed)
    eager = _run(EagerSession(reference_model(manifest), manifest), batch, mask, state, steps, lr)
    backend = _run(open_session(bundle_dir, verify_files=False), batch, mask, state, steps, lr)
    loss_diff, param_diff, worst, frozen, problems = compare(manifest, mask, state, eager, backend, lr)
    return VerifyReport(
        Path(bundle_dir),
        manifest.backend,
        manifest.tier,
        steps,
        backend[0],
        eager[0],
        loss_diff,
        param_diff,
        worst,
        frozen,
        problems,
    )


def find_bundles(root: Path) -> list[Path]:
    root = Path(root)
    if (root / "manifest.json").is_file():
        return [root]
    found = sorted(p.parent for p in root.rglob("manifest.json"))
    if not found:
        raise BundleError(f"no bundles (manifest.json) under {root}: run `fedhft export --out {root}` first")
    return found

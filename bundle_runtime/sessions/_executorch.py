"""ExecuTorch session: runs an executorch bundle's joint forward+backward .pte program.

The program returns ``[loss, logits, *grads, *params]``; ``TrainingModule`` (executorch's own,
experimental) slices that list. Its ``named_parameters()`` are tensors that share memory with the
runtime, so ``copy_()`` writes new weights in and ``clone()`` reads them out. They exist only after
a first ``forward_backward``, so the session runs one warm-up step at load (it computes gradients
but never applies them, so weights do not change).

The optimizer is the program's own ``adamw_step`` method (``backend_extras.optimizer_method``), the
one an app runs, so the shipped program is what gets tested; its moments start at zero and its step
at 1 every round, so that no moments leak across mask changes. Bundles made before the method
existed (``optimizer.runs_in == "app"``) get ``torch.optim.AdamW`` over the same tensors instead.

The session always checks the program's sha256 against the manifest before the runtime sees it
(even with ``verify_files=False``): executorch 1.5.1 segfaults on some corrupted .pte files instead
of returning an error, which would kill the whole device process.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from fedhft.manifest import BundleError, Manifest
from bundle_runtime.sessions._base import ADAM_BETAS, ADAM_EPS, WEIGHT_DECAY, check_mask, check_state


def _import_runtime(bundle_dir: Path | None = None):
    import torch
    from executorch.extension.training import _load_for_executorch_for_training_from_buffer

    return torch, _load_for_executorch_for_training_from_buffer


class ExecuTorchSession:
    def __init__(self, bundle_dir: Path, manifest: Manifest, threads: int | None = None):
        torch, load = _import_runtime()
        self._torch = torch
        self.bundle_dir, self.manifest = Path(bundle_dir), manifest
        extras = manifest.backend_extras
        try:
            self._method = extras.get("method", "forward")
            self._fqn = {canon: fqn for fqn, canon in extras["param_to_canonical"].items()}
            program = manifest.files_with_role("program")[0]
        except (KeyError, IndexError, AttributeError) as exc:
            raise BundleError(
                f"{bundle_dir}: the manifest lacks the executorch program entry or its parameter "
                f"map ({exc!r}): re-export the bundle with `fedhft export --backend executorch`"
            ) from exc
        if threads:
            self._set_threads(threads)
        if extras.get("xnnpack"):
            self._require_backend("XnnpackBackend")
        self._max_batch, self._min_seq, self._max_seq = self._shape_bounds(manifest)
        # The runtime keeps a raw pointer into these bytes and does not own them: they must live as long
        # as the module (freeing them gave segfaults on the real MiniLM program at the next step).
        self._program_bytes = self._read_program(program)
        try:
            self._module = load(self._program_bytes)
        except RuntimeError as exc:
            raise BundleError(
                f"{self.bundle_dir / program} could not be loaded by ExecuTorch ({exc}): the file is "
                f"corrupted or was made by another executorch version; re-export the bundle"
            ) from exc
        self._mask = torch.ones(manifest.mask_length)
        self._params = self._warm_up()
        self._opt_method = self._optimizer_method(program)
        self._opt = None

    def _read_program(self, name: str) -> bytes:
        path = self.bundle_dir / name
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BundleError(
                f"{path} cannot be read ({exc}): the bundle is incomplete; re-download or re-export it"
            ) from exc
        if hashlib.sha256(data).hexdigest() != self.manifest.files[name].sha256:
            raise BundleError(
                f"{path} sha256 does not match the manifest: the program is corrupted (ExecuTorch would "
                f"crash on it); delete the bundle and re-download or re-export it"
            )
        return data

    def _optimizer_method(self, program: str) -> str | None:
        """The program's optimizer method, checked against the manifest; None when the app must run AdamW."""
        if self.manifest.optimizer.runs_in != program:
            return None
        spec = self.manifest.backend_extras.get("optimizer_method") or {}
        name, count = spec.get("name"), spec.get("count")
        if count != len(self.manifest.trainable) or name not in self._module.model.method_names():
            raise BundleError(
                f"{self.bundle_dir}: the manifest says {program} runs the optimizer, but its method "
                f"{name!r} over {count} tensors is not in the program for {len(self.manifest.trainable)}"
                f" trainable tensors: the bundle was edited; re-export it"
            )
        return name

    def _require_backend(self, name: str) -> None:
        from executorch.extension.pybindings.portable_lib import _get_registered_backend_names

        if name not in _get_registered_backend_names():
            raise BundleError(
                f"{self.bundle_dir}: the program delegates to {name}, which this executorch build lacks: "
                f"use an executorch build with {name}, or re-export without {name} delegation"
            )

    @staticmethod
    def _set_threads(threads: int) -> None:
        from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

        _unsafe_reset_threadpool(int(threads))

    @staticmethod
    def _shape_bounds(manifest: Manifest) -> tuple[int, int, int]:
        spec = {i.name: i for i in manifest.inputs}["input_ids"]
        if spec.bounds:
            return spec.bounds["batch"][1], spec.bounds["seq"][0], spec.bounds["seq"][1]
        batch, seq = spec.shape  # a static program accepts exactly one shape
        return batch, seq, seq

    def _warm_up(self) -> dict:
        """One forward_backward (gradients discarded) so that named_parameters() exists."""
        ids = np.zeros((1, self._min_seq), dtype=np.int64)
        try:
            self._run(ids, np.ones_like(ids), np.zeros(1, dtype=np.int64))
        except RuntimeError as exc:
            raise BundleError(
                f"{self.bundle_dir}: the ExecuTorch program failed its first step ({exc}): the "
                f"program does not fit this manifest or runtime; re-export the bundle"
            ) from exc
        named = self._module.named_parameters()
        unmapped = sorted({s.name for s in self.manifest.trainable} ^ set(self._fqn))
        if unmapped:
            raise BundleError(
                f"{self.bundle_dir}: the manifest's param_to_canonical map disagrees with its trainable "
                f"tensors on {unmapped[:3]}: the manifest was edited; re-export the bundle"
            )
        missing = sorted(set(self._fqn.values()) - set(named))
        if missing:
            raise BundleError(
                f"{self.bundle_dir}: the program has no parameters {missing[:3]} named in the manifest: "
                f"re-export the bundle"
            )
        return {canon: named[fqn] for canon, fqn in self._fqn.items()}

    # -- state -------------------------------------------------------------------------------------
    def set_state(self, tensors: dict[str, np.ndarray]) -> None:
        check_state(self.manifest, tensors)
        for name, param in self._params.items():
            param.copy_(self._torch.from_numpy(np.ascontiguousarray(tensors[name], dtype=np.float32)))

    def get_state(self) -> dict[str, np.ndarray]:
        return {spec.name: self._params[spec.name].clone().numpy() for spec in self.manifest.trainable}

    def begin_round(self, mask: np.ndarray, lr: float) -> None:
        self._mask = self._torch.from_numpy(check_mask(self.manifest, mask).copy())
        params = [self._params[spec.name] for spec in self.manifest.trainable]
        if self._opt_method is not None:
            self._opt = _ProgramAdamW(self._torch, self._module.model, self._opt_method, params, lr)
            return
        for p in params:
            p.grad = None
        self._opt = self._torch.optim.AdamW(params, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=WEIGHT_DECAY)

    # -- steps -------------------------------------------------------------------------------------
    def _inputs(self, input_ids, attention_mask, labels):
        ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        attn = np.ascontiguousarray(attention_mask, dtype=np.int64)
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        if ids.ndim != 2 or attn.shape != ids.shape or labels.shape != ids.shape[:1]:
            raise ValueError(
                f"input_ids {ids.shape}, attention_mask {attn.shape} and labels {labels.shape} must be "
                f"[batch, seq], [batch, seq] and [batch]"
            )
        batch, seq = ids.shape
        if not 1 <= batch <= self._max_batch or seq > self._max_seq:
            raise ValueError(
                f"batch {batch} x seq {seq} is outside this bundle's program (batch <= {self._max_batch},"
                f" seq <= {self._max_seq}): split the batch or truncate sequences to {self._max_seq}"
            )
        if seq < self._min_seq:
            # Extra padding tokens with attention 0 change nothing: attention and mean pooling ignore them.
            pad = ((0, 0), (0, self._min_seq - seq))
            ids, attn = np.pad(ids, pad), np.pad(attn, pad)
        return ids, attn, labels

    def _run(self, ids, attn, labels):
        t = self._torch
        inputs = (t.from_numpy(ids), t.from_numpy(attn), t.from_numpy(labels), self._mask)
        loss, logits = self._module.forward_backward(self._method, inputs)[:2]
        return loss, logits

    def train_step(self, input_ids, attention_mask, labels) -> float:
        if self._opt is None:
            raise RuntimeError("call begin_round(mask, lr) before train_step")
        loss, _ = self._run(*self._inputs(input_ids, attention_mask, labels))
        grads = self._module.named_gradients()
        if isinstance(self._opt, _ProgramAdamW):
            self._opt.step([grads[self._fqn[spec.name]] for spec in self.manifest.trainable])
            return float(loss)
        for name, param in self._params.items():
            param.grad = grads[self._fqn[name]]
        self._opt.step()
        return float(loss)

    def logits(self, input_ids, attention_mask) -> np.ndarray:
        """Eval forward (the joint program also computes gradients; they are discarded, weights unchanged).
        Batches larger than the program's are run in chunks."""
        ids_all = np.asarray(input_ids)
        attn_all = np.asarray(attention_mask)
        out = []
        for start in range(0, ids_all.shape[0], self._max_batch):
            ids, attn = ids_all[start : start + self._max_batch], attn_all[start : start + self._max_batch]
            args = self._inputs(ids, attn, np.zeros(ids.shape[0], dtype=np.int64))
            out.append(self._run(*args)[1].numpy().astype(np.float32, copy=False))
        return np.concatenate(out) if out else np.zeros((0, self.manifest.dims.num_labels), dtype=np.float32)


class _ProgramAdamW:
    """The program's ``adamw_step`` with fresh state: moments zero, first step 1. Inputs and outputs are
    flat tensors in trainable order (docs/MANIFEST.md); the new parameters are written into the runtime's
    own parameter tensors, so the next ``forward_backward`` sees them."""

    def __init__(self, torch, model, method: str, params: list, lr: float):
        self._torch, self._model, self._method, self._params = torch, model, method, params
        self._exp_avg = [torch.zeros_like(p) for p in params]
        self._exp_avg_sq = [torch.zeros_like(p) for p in params]
        self._step = 0
        self._lr = torch.tensor([lr], dtype=torch.float64)

    def step(self, grads: list) -> None:
        self._step += 1
        n, t = len(self._params), self._torch
        step = t.tensor([self._step], dtype=t.int64)
        out = self._model.run_method(
            self._method, (*self._params, *grads, *self._exp_avg, *self._exp_avg_sq, step, self._lr)
        )
        for param, new in zip(self._params, out[:n]):
            param.copy_(new)
        self._exp_avg, self._exp_avg_sq = list(out[n : 2 * n]), list(out[2 * n : 3 * n])

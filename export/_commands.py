"""The library functions behind `fedhft export` and `fedhft export verify` (the CLI only parses)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from fedhft.manifest import BACKENDS

if TYPE_CHECKING:
    from devices import AdapterPlan


def _names(text: str, known: Sequence[str], what: str, flag: str, problems: list[str]) -> list[str]:
    """``text`` (a name, a comma list of names, or ``all``) as known names, in the order given."""
    words = [w.strip() for w in str(text).split(",") if w.strip()]
    if "all" in words:
        return list(known)
    unknown = [w for w in words if w not in known]
    if unknown or not words:
        problems.append(
            f"{flag} {text!r}: unknown {what} {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"use one of {', '.join(known)}, a comma list of them, or all"
        )
    return list(dict.fromkeys(w for w in words if w in known))


def _model_layers(model: str, num_labels: int) -> tuple[str, int]:
    """(model id, encoder layers) without loading the weights; ValueError/OSError for a bad --model."""
    from export._backbone import resolve_model
    from bundle_runtime import model_dims_from_config

    source = resolve_model(model)
    if source.path is None:
        return source.model_id, int(source.tiny["layers"])
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source.path, local_files_only=True)
    return source.model_id, model_dims_from_config(config, num_labels).num_layers


def _too_deep(model_id: str, layers: int, plans: dict[str, AdapterPlan]) -> str | None:
    """The problem of plans deeper than the model, naming each such tier and the fixes; None if all fit."""
    deep = {tier: plan.depth for tier, plan in plans.items() if plan.problems(layers)}
    if not deep:
        return None
    fit = [tier for tier in plans if tier not in deep]
    fixes = [
        f"a model with at least {max(deep.values())} layers (e.g. --model minilm or "
        f"--model tiny:layers={max(deep.values())})"
    ]
    fixes += [f"only the tiers that fit (--tier {','.join(fit)})"] if fit else []
    listed = ", ".join(f"{tier} (depth {depth})" for tier, depth in deep.items())
    return (
        f"the plans of tiers {listed} adapt more layers than model {model_id} has ({layers}): "
        f"export {' or '.join(fixes)}"
    )


def export_request(model: str, num_labels: int, tier: str, backend: str) -> tuple[dict, list[str]]:
    """({tier: plan}, backends) of an export request, or ConfigError listing every problem (unknown
    tier or backend, missing runtime, bad model, plans deeper than the model) before any export."""
    from devices import load_catalog
    from export._api import backend_compiler
    from fedhft.config import ConfigError

    problems: list[str] = []
    if num_labels < 2:
        problems.append(f"--num-labels must be >= 2 for classification, got {num_labels}")
    catalog = load_catalog()
    plans = {name: catalog[name].plan for name in _names(tier, list(catalog), "tier", "--tier", problems)}
    backends = _names(backend, BACKENDS, "backend", "--backend", problems)
    for name in backends:  # a missing runtime fails here, before any slow work
        try:
            backend_compiler(name)
        except ImportError as exc:
            problems.append(str(exc))
    try:
        model_id, layers = _model_layers(model, max(num_labels, 2))
        problems += filter(None, [_too_deep(model_id, layers, plans)])
    except (OSError, ValueError, ImportError) as exc:
        problems.append(f"--model {model!r}: {exc}")
    if problems:
        raise ConfigError(problems, "the export request")
    return plans, backends


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def export_command(model: str, num_labels: int, tier: str, backend: str, out: str | Path) -> int:
    """Export every requested (tier, backend) bundle and print a summary table. ``tier`` and
    ``backend`` are a name, a comma list of names or ``all``. Raises ConfigError for a bad request."""
    from export._api import export_all

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tiers, backends = export_request(model, num_labels, tier, backend)
    started = time.perf_counter()
    results = export_all(model, num_labels, tiers, backends, Path(out), progress=_say)
    print(f"{'tier':<18} {'backend':<11} {'precision':<9} {'size MB':>8} {'export s':>9}  path")
    for r in results:
        print(
            f"{r.tier:<18} {r.backend:<11} {r.manifest.plan.precision:<9} {r.size_bytes / 1e6:>8.2f} "
            f"{r.seconds:>9.1f}  {r.bundle_dir}"
        )
    print(f"{len(results)} bundles in {time.perf_counter() - started:.0f} s under {out}")
    return 0


def verify_command(root: str | Path, steps: int = 5, as_json: bool = False) -> int:
    """Parity of every bundle under ``root``; exit code 1 if any is beyond tolerance."""
    from export._verify import LOSS_ATOL, PARAM_RTOL, find_bundles, verify_bundle

    reports = []
    for bundle in find_bundles(Path(root)):
        _say(f"verifying {bundle} ...")
        reports.append(verify_bundle(bundle, steps=steps))
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "bundle": str(r.bundle_dir),
                        "backend": r.backend,
                        "tier": r.tier,
                        "ok": r.ok,
                        "max_loss_diff": r.max_loss_diff,
                        "max_param_diff": r.max_param_diff,
                        "worst_param": r.worst_param,
                        "max_frozen_move": r.max_frozen_move,
                        "losses_backend": r.losses_backend,
                        "losses_eager": r.losses_eager,
                        "problems": r.problems,
                    }
                    for r in reports
                ],
                indent=2,
            )
        )
    else:
        print(
            f"{'tier':<18} {'backend':<11} {'steps':>5} {'max |dloss|':>12} {'max |dparam|':>13} "
            f"{'frozen move':>11}  result"
        )
        for r in reports:
            verdict = "ok" if r.ok else "FAIL: " + "; ".join(r.problems)
            print(
                f"{r.tier:<18} {r.backend:<11} {r.steps:>5} {r.max_loss_diff:>12.2e} {r.max_param_diff:>13.2e} "
                f"{r.max_frozen_move:>11.1e}  {verdict}"
            )
        print(
            f"tolerance: loss {LOSS_ATOL:.0e} (+rel), each tensor's change {PARAM_RTOL:.0e} of its norm, "
            f"no element beyond one Adam step; "
            f"{sum(r.ok for r in reports)}/{len(reports)} bundles match eager PyTorch"
        )
    return 0 if all(r.ok for r in reports) else 1

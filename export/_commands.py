"""The library functions behind `fedhft export` and `fedhft export verify` (the CLI only parses)."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from fedhft.manifest import BACKENDS


def _tiers(tier: str) -> dict:
    from devices import get_tier, load_catalog

    if tier == "all":
        return {name: spec.plan for name, spec in load_catalog().items()}
    return {tier: get_tier(tier).plan}


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def export_command(model: str, num_labels: int, tier: str, backend: str, out: str | Path) -> int:
    """Export every requested (tier, backend) bundle and print a summary table."""
    from export._api import export_all

    if num_labels < 2:
        raise ValueError(f"--num-labels must be >= 2 for classification, got {num_labels}")
    backends = list(BACKENDS) if backend == "all" else [backend]
    tiers = _tiers(tier)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    results = export_all(model, num_labels, tiers, backends, Path(out), progress=_say)
    print(f"{'tier':<18} {'backend':<11} {'precision':<9} {'size MB':>8} {'export s':>9}  path")
    for r in results:
        print(f"{r.tier:<18} {r.backend:<11} {r.manifest.plan.precision:<9} {r.size_bytes / 1e6:>8.2f} "
              f"{r.seconds:>9.1f}  {r.bundle_dir}")
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
        print(json.dumps([{"bundle": str(r.bundle_dir), "backend": r.backend, "tier": r.tier, "ok": r.ok,
                           "max_loss_diff": r.max_loss_diff, "max_param_diff": r.max_param_diff,
                           "worst_param": r.worst_param, "max_frozen_move": r.max_frozen_move,
                           "losses_backend": r.losses_backend, "losses_eager": r.losses_eager,
                           "problems": r.problems} for r in reports], indent=2))
    else:
        print(f"{'tier':<18} {'backend':<11} {'steps':>5} {'max |dloss|':>12} {'max |dparam|':>13} "
              f"{'frozen move':>11}  result")
        for r in reports:
            verdict = "ok" if r.ok else "FAIL: " + "; ".join(r.problems)
            print(f"{r.tier:<18} {r.backend:<11} {r.steps:>5} {r.max_loss_diff:>12.2e} {r.max_param_diff:>13.2e} "
                  f"{r.max_frozen_move:>11.1e}  {verdict}")
        print(f"tolerance: loss {LOSS_ATOL:.0e} (+rel), each tensor's change {PARAM_RTOL:.0e} of its norm, "
              f"no element beyond one Adam step; "
              f"{sum(r.ok for r in reports)}/{len(reports)} bundles match eager PyTorch")
    return 0 if all(r.ok for r in reports) else 1

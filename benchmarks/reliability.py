"""`fedhft bench reliability`: run the reliability suite (tests/reliability: faults, bad input,
intrusion, budgets, all against real processes and a private Mosquitto) and print its figures.

    fedhft bench reliability --quick            # intrusion, bad input, one server kill (~2 min)
    fedhft bench reliability --out rel.json     # every scenario (~6-8 min on 2 cores)

The suite's fixtures count what they did (faults injected, rounds completed, updates stored and
lost, bad inputs tried and rejected, intrusions tried and refused) and write them as JSON at the
end of the pytest session; this script runs pytest in a subprocess, reads that file back, prints
the table and writes it to --out. Exit status 1 if a scenario failed or an update was lost.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE = "tests/reliability"
QUICK = "intrusion or bad_ or (server_killed and intake)"
ROWS = [
    ("scenarios_run", "scenarios run"),
    ("scenarios_passed", "scenarios passed"),
    ("faults_injected", "faults injected (kills, stalls, broker restarts)"),
    ("rounds_completed", "rounds completed"),
    ("updates_stored", "updates stored"),
    ("updates_lost", "updates lost (must be 0)"),
    ("updates_double_counted", "updates counted twice (must be 0)"),
    ("bad_inputs_tried", "bad inputs tried"),
    ("bad_inputs_rejected", "bad inputs rejected"),
    ("intrusions_tried", "intrusions tried"),
    ("intrusions_refused", "intrusions refused"),
]


def run_suite(quick: bool, keyword: str | None, extra: list[str]) -> tuple[dict, int, float]:
    with tempfile.TemporaryDirectory(prefix="fedhft-rel-") as tmp:
        out = Path(tmp) / "figures.json"
        cmd = [sys.executable, "-m", "pytest", SUITE, "-q", "-p", "no:cacheprovider", "-rfEx"]
        k = keyword or (QUICK if quick else None)
        if k:
            cmd += ["-k", k]
        env = {**os.environ, "FEDHFT_RELIABILITY_OUT": str(out)}
        started = time.perf_counter()
        rc = subprocess.run(cmd + extra, cwd=ROOT, env=env).returncode
        seconds = time.perf_counter() - started
        figures = json.loads(out.read_text()) if out.is_file() else {"figures": {}, "scenarios": {}, "details": {}}
    return figures, rc, seconds


def format_table(result: dict) -> str:
    f = result["figures"]
    width = max(len(label) for _, label in ROWS)
    lines = [
        f"fedhft reliability ({'quick' if result['quick'] else 'full'}, {result['seconds']:.0f} s, "
        f"pytest exit {result['pytest_exit']})",
        "-" * (width + 10),
    ]
    lines += [f"{label:<{width}}  {f.get(key, 0):>7}" for key, label in ROWS]
    failed = {k: v for k, v in result["scenarios"].items() if v not in ("passed", "xfail (known gap)")}
    gaps = [k for k, v in result["scenarios"].items() if v == "xfail (known gap)"]
    lines.append("-" * (width + 10))
    lines.append(
        "all scenarios passed" if not failed else "NOT passed: " + ", ".join(f"{k} ({v})" for k, v in failed.items())
    )
    lines += [f"known gap (xfail): {k}" for k in gaps]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fedhft bench reliability", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=f"only: -k '{QUICK}'")
    p.add_argument("-k", dest="keyword", default=None, help="pytest -k expression (overrides --quick)")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    p.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = p.parse_args(argv)
    figures, rc, seconds = run_suite(args.quick, args.keyword, args.pytest_args)
    result = {"quick": args.quick, "seconds": round(seconds, 1), "pytest_exit": rc, **figures}
    print(format_table(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        print(f"figures written to {args.out}")
    f = figures.get("figures", {})
    ok = rc == 0 and f.get("updates_lost", 1) == 0 and f.get("updates_double_counted", 1) == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

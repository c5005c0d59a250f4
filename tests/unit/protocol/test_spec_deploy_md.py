"""docs/DEPLOY.md states the versions setup.py pins, puts every catalog tier on the bundle of its
default backend, names the ExecuTorch Android calls in order, and writes the session-id rule as
docs/PROTOCOL.md does."""

from __future__ import annotations

import re
from pathlib import Path

from devices import load_catalog

ROOT = Path(__file__).resolve().parents[3]
TEXT = (ROOT / "docs" / "DEPLOY.md").read_text(encoding="utf-8")
SETUP = (ROOT / "setup.py").read_text(encoding="utf-8")


def _pin(package: str) -> str:
    match = re.search(rf'"{re.escape(package)}(==[^"]+)"', SETUP)
    assert match, f"setup.py no longer pins {package}: update docs/DEPLOY.md and this test"
    return match.group(1)


def test_the_runtime_versions_are_the_pinned_ones():
    for package in ("executorch", "onnxruntime-training-cpu", "onnx", "transformers"):
        assert f"{package}{_pin(package)}" in TEXT, package
    assert re.search(r'TORCH = "(torch==[^"]+)"', SETUP).group(1) in TEXT
    assert f"ExecuTorch **{_pin('executorch')[2:]}**" in TEXT
    assert f"ONNX Runtime training **{_pin('onnxruntime-training-cpu')[2:]}**" in TEXT


def test_every_tier_is_on_the_bundle_of_its_default_backend():
    rows = [line for line in TEXT.splitlines() if line.startswith("| ")]
    for name, tier in load_catalog().items():
        row = next((r for r in rows if f"`{name}`" in r), None)
        assert row is not None, f"docs/DEPLOY.md's table lacks the tier {name}"
        assert f"| `{tier.default_backend}` |" in row, name


def test_the_android_calls_in_order():
    calls = [
        "TrainingModule.load(",
        "executeForwardBackward(",
        "namedParameters(",
        "namedGradients(",
        'execute("adamw_step"',
        "dataAsFloatArray",
    ]
    steps = TEXT[TEXT.index("## Android: the ExecuTorch calls") : TEXT.index("```kotlin")]
    positions = [steps.index(c) for c in calls]
    assert positions == sorted(positions)
    assert "`Module.load(" in steps and "getRawDataBuffer()" in steps  # the second load, for adamw_step
    sketch = TEXT[TEXT.index("```kotlin") :]
    assert "optimizer.execute(b.optimizerMethod" in sketch  # the program's own AdamW step, not a hand-written one
    assert "import org.pytorch.executorch.training.TrainingModule" in TEXT


def test_the_session_id_rule_is_the_protocols():
    rule = '<client>-<hex(sha256("fedhft-session|" + client + "|" + password))[:16]>'
    assert rule in TEXT
    protocol = (ROOT / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")
    assert 'hex(sha256("fedhft-session|" + client + "|" + password))[:16]' in protocol

"""Integration and reliability tests FAIL, never skip, when this machine lacks what they test.

A skipped broker test looks like a passed run: `make test` on a fresh machine without Mosquitto
went green having tested no broker. So these suites declare what they need
(``@pytest.mark.requires("mosquitto")`` or ``require("onnxruntime")`` inside a fixture) and a
missing component fails the test with the command that installs it. As a safety net, any other
skip of a test marked ``integration`` or ``reliability`` is turned into a failure too, unless the
test carries ``@pytest.mark.may_skip("why no machine can be expected to have it")``.

Unit tests are left alone: a unit test of an optional extra may skip, because the integration
test of that extra fails without it.

Loaded by tests/conftest.py (its hooks are imported there) and usable alone as ``-p tests._require``.
"""

from __future__ import annotations

import importlib
import os
import shutil
from dataclasses import dataclass
from typing import Callable

import pytest

#: Marked suites whose skips are failures.
REAL_SUITES = ("integration", "reliability")


@dataclass(frozen=True)
class Requirement:
    what: str  # what is missing, in words
    present: Callable[[], bool]
    install: str  # the command that installs it


def _module(name: str) -> Callable[[], bool]:
    def present() -> bool:
        try:
            importlib.import_module(name)
        except ImportError:
            return False
        return True

    return present


def _mosquitto() -> bool:
    from server.broker import find_mosquitto

    return find_mosquitto() is not None


def _mosquitto_passwd() -> bool:
    return os.access(shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd", os.X_OK)


APT_MOSQUITTO = (
    "sudo apt-get install -y mosquitto (or `make setup` as root; or set FEDHFT_MOSQUITTO=/path/to/mosquitto)"
)

REQUIREMENTS: dict[str, Requirement] = {
    "mosquitto": Requirement("the Mosquitto broker binary", _mosquitto, APT_MOSQUITTO),
    "mosquitto_passwd": Requirement(
        "mosquitto_passwd (Mosquitto's password tool)", _mosquitto_passwd, "sudo apt-get install -y mosquitto"
    ),
    "setpriv": Requirement(
        "util-linux setpriv", lambda: shutil.which("setpriv") is not None, "sudo apt-get install -y util-linux"
    ),
    "paho": Requirement("the paho-mqtt client", _module("paho.mqtt.client"), "pip install -e '.[mqtt]'"),
    "torch": Requirement("PyTorch", _module("torch"), "pip install torch==2.13.0 -e . (or `make setup`)"),
    "onnxruntime": Requirement("ONNX Runtime training", _module("onnxruntime.training"), "pip install -e '.[ort]'"),
    "executorch": Requirement("ExecuTorch", _module("executorch"), "pip install -e '.[executorch]'"),
    "amqtt": Requirement("the embedded amqtt broker", _module("amqtt"), "pip install -e '.[broker]'"),
}


def missing(*names: str) -> list[str]:
    """One line per requirement in ``names`` that this machine lacks: what, and how to install it."""
    unknown = [n for n in names if n not in REQUIREMENTS]
    if unknown:
        raise KeyError(f"unknown requirement(s) {unknown}; known: {sorted(REQUIREMENTS)}")
    return [
        f"{REQUIREMENTS[n].what} is missing: {REQUIREMENTS[n].install}" for n in names if not REQUIREMENTS[n].present()
    ]


def require(*names: str) -> None:
    """Fail the running test (or fixture) unless every named component is present."""
    lines = missing(*names)
    if lines:
        pytest.fail("this test cannot run here: " + "; ".join(lines), pytrace=False)


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers",
        "requires(*names): the test fails unless these components are present "
        f"(one of {', '.join(sorted(REQUIREMENTS))})",
    )
    config.addinivalue_line(
        "markers",
        "may_skip(reason): an integration/reliability test allowed to skip, "
        "for something no fresh machine can have (private data)",
    )


def pytest_runtest_setup(item) -> None:
    for mark in item.iter_markers("requires"):
        require(*mark.args)


@pytest.hookimpl(hookwrapper=True, trylast=True)  # innermost: other report hooks see the failure
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail") or item.get_closest_marker("may_skip"):
        return
    suites = [s for s in REAL_SUITES if item.get_closest_marker(s)]
    if not suites:
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (
        f"{suites[0]} test skipped ({reason.removeprefix('Skipped: ')}): integration and "
        "reliability tests must run, not skip, so that a green run has tested the real thing. "
        "Install what the reason names, or mark the test may_skip(reason) if no machine can "
        "have it"
    )

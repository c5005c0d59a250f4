"""The guard of tests/_require.py: on a machine without Mosquitto (or an extra), an integration or
reliability test FAILS naming what is missing and the install command; it never skips silently."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PLANTED = """
import pytest

pytestmark = pytest.mark.integration

@pytest.mark.requires("mosquitto")
def test_needs_a_broker():
    pass

@pytest.mark.skipif(True, reason="no widget binary: apt-get install widget")
def test_a_plain_skipif():
    pass

def test_an_importorskip():
    pytest.importorskip("fedhft_no_such_module", reason="pip install fedhft-no-such-module")

@pytest.mark.may_skip("the lab's private data set")
@pytest.mark.skipif(True, reason="no private data")
def test_allowed_to_skip():
    pass

@pytest.mark.reliability
def test_passes():
    pass
"""

UNIT = """
import pytest

def test_a_unit_test_may_still_skip():
    pytest.importorskip("fedhft_no_such_module")
"""


def _run(tmp_path: Path, **env) -> dict[str, str]:
    """Run pytest with only the guard plugin on the planted files; test name -> outcome."""
    (tmp_path / "test_planted.py").write_text(PLANTED)
    (tmp_path / "test_unit.py").write_text(UNIT)
    junit = tmp_path / "junit.xml"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests._require",
            "-p",
            "no:cacheprovider",
            "-c",
            os.devnull,
            "--rootdir",
            str(tmp_path),
            f"--junitxml={junit}",
            "-q",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )
    assert junit.is_file(), proc.stdout + proc.stderr
    outcomes = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        kinds = [child for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[case.get("name")] = (
            kinds[0].tag + ": " + (kinds[0].get("message") or "") + (kinds[0].text or "") if kinds else "passed"
        )
    return outcomes


def test_missing_components_fail_integration_tests_instead_of_skipping(tmp_path):
    got = _run(tmp_path, FEDHFT_MOSQUITTO="/nonexistent/mosquitto")
    broker = got["test_needs_a_broker"]
    assert broker.startswith("error") and "Mosquitto broker binary is missing" in broker
    assert "sudo apt-get install -y mosquitto" in broker
    for name, says in (
        ("test_a_plain_skipif", "apt-get install widget"),
        ("test_an_importorskip", "pip install fedhft-no-such-module"),
    ):
        assert got[name].split(":")[0] in ("failure", "error") and says in got[name], (name, got[name])
    assert got["test_allowed_to_skip"].startswith("skipped")
    assert got["test_passes"] == "passed"
    assert got["test_a_unit_test_may_still_skip"].startswith("skipped")


def test_present_components_run(tmp_path):
    got = _run(tmp_path, FEDHFT_MOSQUITTO=sys.executable)  # any executable stands in for the binary
    assert got["test_needs_a_broker"] == "passed"

"""The Makefile a new user runs first: `make demo` twice, `make clean`, and Mosquitto for the tests.
Recipes are printed (`make -n`) or run against stand-in commands on PATH: nothing is installed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MAKE = shutil.which("make")
STAMP = ".venv/.fedhft-installed"  # -o: treat the venv as made, so only the target's own recipe shows

pytestmark = pytest.mark.skipif(MAKE is None, reason="no make on this machine (the Makefile is not used)")


def _make(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [MAKE, "--no-print-directory", *args], cwd=REPO, capture_output=True, text=True, timeout=60, env=env
    )


def test_each_demo_gets_its_own_run_folder_or_the_one_passed():
    out = _make("-n", "-o", STAMP, "demo", "MOSQUITTO_FOUND=true").stdout
    assert re.search(r"fedhft simulate out=runs/demo-\d{8}-\d{6}$", out, re.M), out
    out = _make("-n", "-o", STAMP, "demo", "RUN=runs/mine", "MOSQUITTO_FOUND=true").stdout
    assert "fedhft simulate out=runs/mine" in out


def test_clean_says_what_it_removes_and_keeps_runs():
    out = _make("-n", "clean").stdout
    said = next(line for line in out.splitlines() if line.startswith("echo"))
    assert ".venv" in said and "bundles" in said and "runs/ is kept" in said
    removes = next(line for line in out.splitlines() if line.lstrip("@").startswith("rm "))
    assert "runs" not in removes


def _shims(tmp_path: Path, uid: int, apt: bool) -> dict:
    """PATH with only `id` (saying ``uid``) and, if ``apt``, an `apt-get` that "installs" a mosquitto."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {"id": f"#!/bin/sh\necho {uid}\n"}
    if apt:
        scripts["apt-get"] = (
            f'#!/bin/sh\necho "$@" >> {tmp_path}/apt.log\n'
            f"case \"$*\" in *install*) printf '#!/bin/sh\\n' > {bin_dir}/mosquitto; "
            f"/bin/chmod +x {bin_dir}/mosquitto;; esac\n"
        )
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "FEDHFT_MOSQUITTO"}
    env["PATH"] = str(bin_dir)
    return env


def test_setup_without_mosquitto_and_root_fails_with_the_install_command(tmp_path):
    env = _shims(tmp_path, uid=1000, apt=True)
    proc = _make("-o", STAMP, "test", "MOSQUITTO_SBIN=/nonexistent", env=env)
    assert proc.returncode != 0
    assert "sudo apt-get install -y mosquitto" in proc.stdout
    assert not (tmp_path / "apt.log").exists()  # not root: nothing was tried
    assert "pytest" not in proc.stdout + proc.stderr  # the suite never started


def test_setup_as_root_installs_mosquitto_with_apt_get(tmp_path):
    env = _shims(tmp_path, uid=0, apt=True)
    proc = _make("mosquitto", "MOSQUITTO_SBIN=/nonexistent", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "install -y -qq mosquitto" in (tmp_path / "apt.log").read_text()
    assert (tmp_path / "bin" / "mosquitto").is_file()


def test_an_installed_mosquitto_is_left_alone(tmp_path):
    env = _shims(tmp_path, uid=0, apt=True)
    (tmp_path / "bin" / "mosquitto").write_text("#!/bin/sh\n")
    (tmp_path / "bin" / "mosquitto").chmod(0o755)
    proc = _make("mosquitto", "MOSQUITTO_SBIN=/nonexistent", env=env)
    assert proc.returncode == 0 and proc.stdout == "" and not (tmp_path / "apt.log").exists()

"""The import rules of the brief, enforced on the source: who may import whom."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"fedhft", "devices", "export", "edge_runtime", "server", "benchmarks"}
# package -> packages of ours it must never import (directly or lazily)
FORBIDDEN = {
    "devices": OURS - {"devices"},
    "fedhft": {"server", "edge_runtime"},
    "server": {"edge_runtime", "export"},
    "edge_runtime": {"server"},
    "export": {"server"},
}
# Applications that still live inside the fedhft folder (the simulation, the CLI dispatcher) sit on
# top of every package, so they may import server and edge_runtime; the rest of fedhft may not.
APPLICATIONS = {"fedhft": ("fedhft/simulate/", "fedhft/cli.py")}
# Heavy runtimes a package must only import lazily (inside functions), never at module level.
LAZY_ONLY = {"fedhft": {"torch", "paho", "onnxruntime", "executorch"},
             "server": {"torch", "onnxruntime", "executorch"},
             "devices": {"torch"}}


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0], node


def _module_level(tree_path: Path):
    tree = ast.parse(tree_path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Import):
            yield from (a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_it_may(package):
    apps = APPLICATIONS.get(package, ())
    files = [p for p in (ROOT / package).rglob("*.py") if not str(p.relative_to(ROOT)).startswith(apps)]
    bad = [f"{p.relative_to(ROOT)}:{node.lineno} imports {name}"
           for p in files for name, node in _imports(p) if name in FORBIDDEN[package]]
    assert not bad, "\n".join(bad)


def test_the_application_exemption_does_not_hide_the_shared_package(tmp_path):
    """The exemption covers only the application folders: a shared module importing server fails."""
    apps = APPLICATIONS["fedhft"]
    assert not "fedhft/protocol/_messages.py".startswith(apps) and "fedhft/simulate/_run.py".startswith(apps)


@pytest.mark.parametrize("package", sorted(LAZY_ONLY))
def test_heavy_runtimes_are_imported_lazily(package):
    bad = [f"{p.relative_to(ROOT)} imports {name} at module level"
           for p in (ROOT / package).rglob("*.py") for name in _module_level(p) if name in LAZY_ONLY[package]]
    assert not bad, "\n".join(bad)


def test_every_package_declares_its_public_api():
    for package in ("fedhft", "devices", "export", "edge_runtime", "server"):
        text = (ROOT / package / "__init__.py").read_text()
        assert "__all__" in text, f"{package}/__init__.py must define __all__"

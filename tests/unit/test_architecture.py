"""The import rules of docs/CONTRACTS.md, enforced on the source: one table of who may import whom.

Three rules, checked on every module outside tests/ (lazy imports inside functions count too):

* layers: a module of unit U imports only units in ALLOWED[U] (and its own unit);
* private reach: nothing imports another package's ``_`` module (or a ``_`` name of another package);
* cycles: no import cycle between modules.

KNOWN_VIOLATIONS lists, by name, violations the tree still has (none since issue 11): the test fails on any
violation not in the list, and on any listed one that no longer exists (delete its entry: the list only
shrinks).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# unit -> the module prefixes it owns (the longest matching prefix decides a module's unit)
UNITS = {
    "devices": ("devices",),
    "fedhft": ("fedhft",),  # the shared vocabulary: everything in fedhft/ not claimed below
    "bundle_runtime": ("bundle_runtime",),
    "export": ("export",),
    "edge_runtime": ("edge_runtime",),
    "server": ("server",),
    "simulate": ("simulate",),
    "benchmarks": ("benchmarks",),
    "cli": ("fedhft.cli", "fedhft.__main__"),
    "tools": ("tools",),
}
# THE TABLE (docs/CONTRACTS.md, "Packages and who may import whom", mirrors it row by row):
# unit -> the other units it may import. Layers from the bottom: devices; the shared vocabulary; the
# bundle runtime; export, edge_runtime, server (never each other); the applications; the CLI on top.
_BELOW_APPS = {"fedhft", "devices", "bundle_runtime", "export", "edge_runtime", "server"}
ALLOWED = {
    "devices": set(),
    "fedhft": {"devices"},
    "bundle_runtime": {"fedhft", "devices"},
    "export": {"fedhft", "devices", "bundle_runtime"},
    "edge_runtime": {"fedhft", "devices", "bundle_runtime"},
    "server": {"fedhft", "devices"},
    "simulate": _BELOW_APPS,
    "benchmarks": _BELOW_APPS | {"simulate"},
    "cli": _BELOW_APPS | {"simulate", "benchmarks"},
    "tools": _BELOW_APPS | {"simulate", "benchmarks"},
}
# Heavy runtimes a unit must only import lazily (inside functions), never at module level.
_SHARED_LAZY = {"torch", "paho", "onnxruntime", "executorch"}
LAZY_ONLY = {
    "fedhft": _SHARED_LAZY,
    "simulate": _SHARED_LAZY,
    "cli": _SHARED_LAZY,
    "server": {"torch", "onnxruntime", "executorch"},
    "devices": {"torch"},
}


@dataclass(frozen=True, order=True)
class Violation:
    kind: str  # "layer" | "private" | "cycle"
    source: str  # importing module (for a cycle: its modules, " -> "-joined, sorted)
    target: str = ""  # imported module (a private one: up to its first _ component)

    def __str__(self) -> str:
        return f"{self.kind}: {self.source}" + (f" imports {self.target}" if self.target else "")


# Known violations of the tree, each with what removes it. Only ever delete entries: the tree has none
# left (issue 11), so a new violation fails the test instead of joining this table.
KNOWN_VIOLATIONS: dict[Violation, str] = {}


# ------------------------------------------------------------------ the checker


def _modules(root: Path) -> dict[str, Path]:
    """Every module of the units' folders under ``root`` (tests/ is not a unit), by dotted name."""
    tops = {prefix.split(".")[0] for prefixes in UNITS.values() for prefix in prefixes}
    out = {}
    for top in sorted(tops):
        for path in sorted((root / top).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def unit_of(module: str) -> str | None:
    best = max(
        ((p, u) for u, ps in UNITS.items() for p in ps if module == p or module.startswith(p + ".")),
        key=lambda pu: len(pu[0]),
        default=(None, None),
    )
    return best[1]


def _imports(module: str, path: Path, modules: dict[str, Path]):
    """(dotted name imported, module it resolves to) for every import of ours in ``path``, lazy ones too."""
    tops = {m.split(".")[0] for m in modules}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] not in tops:
                continue
            parts = name.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            if parts:
                yield name, ".".join(parts)


def _private_reach(importer: str, name: str) -> str | None:
    """The private module (or name) of another package that ``name`` reaches into, else None."""
    parts = name.split(".")
    first = next((i for i, p in enumerate(parts) if p.startswith("_") and not p.startswith("__")), None)
    if first is None:
        return None
    owner = ".".join(parts[:first])
    inside = importer == owner or importer.startswith(owner + ".")
    return None if inside and unit_of(importer) == unit_of(owner) else ".".join(parts[: first + 1])


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def check(root: Path) -> set[Violation]:
    """Every violation of the three rules in the tree under ``root``."""
    modules = _modules(root)
    found, graph = set(), {m: set() for m in modules}
    for module, path in modules.items():
        unit = unit_of(module)
        for name, target in _imports(module, path, modules):
            if target != module:
                graph[module].add(target)
            other = unit_of(target)
            if other != unit and other not in ALLOWED[unit]:
                found.add(Violation("layer", module, target))
            private = _private_reach(module, name)
            if private:
                found.add(Violation("private", module, private))
    found |= {Violation("cycle", " -> ".join(c)) for c in _cycles(graph)}
    return found


def compare(found: set[Violation], known) -> tuple[list[Violation], list[Violation]]:
    """(new violations, listed ones that are gone)."""
    return sorted(found - set(known)), sorted(set(known) - found)


# ------------------------------------------------------------------ the tree


def test_the_tree_breaks_no_rule_beyond_the_known_violations():
    new, gone = compare(check(ROOT), KNOWN_VIOLATIONS)
    assert not new, "import rules of docs/CONTRACTS.md broken:\n" + "\n".join(map(str, new))
    assert not gone, "fixed, so delete from KNOWN_VIOLATIONS (the list only shrinks):\n" + "\n".join(
        f"{v}  [{KNOWN_VIOLATIONS[v]}]" for v in gone
    )


def test_the_table_is_layered():
    """ALLOWED itself has no cycle and names only units; edge_runtime and server never meet."""
    assert set(ALLOWED) == set(UNITS)
    assert all(deps <= set(UNITS) for deps in ALLOWED.values())
    assert not _cycles({u: set(deps) for u, deps in ALLOWED.items()})
    assert "server" not in ALLOWED["edge_runtime"] and "edge_runtime" not in ALLOWED["server"]


def test_docs_contracts_shows_the_same_table():
    """docs/CONTRACTS.md's table row per unit lists exactly ALLOWED[unit] in its last column."""
    text = (ROOT / "docs" / "CONTRACTS.md").read_text(encoding="utf-8")
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"`\w+`", cells[0]):
            rows[cells[0].strip("`")] = set(re.findall(r"`(\w+)`", cells[-1]))
    assert rows == ALLOWED, "docs/CONTRACTS.md and ALLOWED disagree: update both together"


@pytest.mark.parametrize("unit", sorted(LAZY_ONLY))
def test_heavy_runtimes_are_imported_lazily(unit):
    bad = []
    for module, path in _modules(ROOT).items():
        if unit_of(module) != unit:
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                else []
            )
            bad += [
                f"{path.relative_to(ROOT)} imports {n} at module level"
                for n in names
                if n.split(".")[0] in LAZY_ONLY[unit]
            ]
    assert not bad, "\n".join(bad)


def test_setup_installs_every_unit_but_tools():
    """docs/CONTRACTS.md's install layout: each unit's top-level package is installed, tools/ and tests/ are not."""
    include = re.search(r"find_packages\(\s*include=\[(.*?)\]\s*\)", (ROOT / "setup.py").read_text(), re.S).group(1)
    tops = {prefix.split(".")[0] for prefixes in UNITS.values() for prefix in prefixes}
    assert set(re.findall(r'"(\w+)\*"', include)) == tops - {"tools"}


def test_every_package_declares_its_public_api():
    for package in ("fedhft", "devices", "bundle_runtime", "export", "edge_runtime", "server", "simulate"):
        text = (ROOT / package / "__init__.py").read_text()
        assert "__all__" in text, f"{package}/__init__.py must define __all__"


# ------------------------------------------------------------------ the checker itself


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


_CLEAN = {
    "devices/__init__.py": "from devices._plan import Plan\n",
    "devices/_plan.py": "Plan = 1\n",
    "fedhft/__init__.py": "",
    "fedhft/layout.py": "from devices import Plan\n",
    "server/__init__.py": "from server._run import run\n",
    "server/_run.py": "from fedhft.layout import Plan\nfrom . import _store\ndef run():\n    return _store\n",
    "server/_store.py": "",
    "edge_runtime/__init__.py": "",
    "simulate/__init__.py": "",
    "simulate/_run.py": "import server\nimport edge_runtime\n",
}


def test_the_checker_passes_a_clean_tree(tmp_path):
    assert check(_tree(tmp_path, _CLEAN)) == set()


def test_the_checker_fails_on_planted_violations(tmp_path):
    planted = {
        # layer: server imports edge_runtime, lazily
        "server/_bad.py": "def f():\n    import edge_runtime\n",
        # private reach: the shared package takes devices' _plan, simulate server's _store, and a relative
        # import in one sub-package of the shared package takes a sibling sub-package's _ module
        "fedhft/manifest.py": "from devices._plan import Plan\n",
        "simulate/_cfg.py": "from fedhft import layout\nfrom server import _store\n",
        "fedhft/protocol/__init__.py": "from fedhft.protocol._topics import Topics\n",
        "fedhft/protocol/_topics.py": "Topics = 1\n",
        "fedhft/mqtt/_client.py": "from . import _own\nfrom ..protocol import _topics\n",
        "fedhft/mqtt/_own.py": "",
        # a cycle of two devices modules
        "devices/_a.py": "from devices import _b\n",
        "devices/_b.py": "def f():\n    from devices._a import X\n",
    }
    found = check(_tree(tmp_path, {**_CLEAN, **planted}))
    assert found == {
        Violation("layer", "server._bad", "edge_runtime"),
        Violation("private", "fedhft.manifest", "devices._plan"),
        Violation("private", "simulate._cfg", "server._store"),
        Violation("private", "fedhft.mqtt._client", "fedhft.protocol._topics"),
        Violation("cycle", "devices._a -> devices._b"),
    }


def test_the_known_list_only_shrinks():
    """A violation missing from the list fails the tree test, and so does a listed one that is gone."""
    a, b = Violation("layer", "server.x", "edge_runtime"), Violation("private", "fedhft.y", "devices._z")
    assert compare({a, b}, {a: "item"}) == ([b], [])
    assert compare({a}, {a: "item", b: "item"}) == ([], [b])
    assert compare({a}, {a: "item"}) == ([], [])

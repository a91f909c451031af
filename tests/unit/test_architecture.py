"""The shape issue 15 asked for, held by tests: no import circle, only the CLI imports the
composition root, modules small. Imports are read from the source (every import statement,
including those inside functions and under ``TYPE_CHECKING``: a circle hidden behind a lazy
import is still a circle in the design)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("fog_appliance", "textual_ui")
MAX_LINES = 400
OVERSIZE: dict[str, int] = {
    # Modules still over MAX_LINES, with the size they may not exceed: this list only
    # shrinks (a module that got under the limit must leave it; issue 15). Empty now.
}
KNOWN_CIRCLES: list[set[str]] = []
COMPOSITION_ROOT = "fog_appliance.app"
MAY_IMPORT_ROOT = {"fog_appliance.cli", "fog_appliance.__main__"}


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


def _graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        deps: set[str | None] = set()
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps |= {owner(a.name) for a in node.names if a.name.startswith(PACKAGES)}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                if base.startswith(PACKAGES):
                    deps |= {owner(f"{base}.{a.name}") for a in node.names}
        graph[mod] = {d for d in deps if d and d != mod}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_reader_sees_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(graph) == [{"a", "b", "c"}]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle() -> None:
    circles = _circles(_graph(_modules()))
    unexpected = [c for c in circles if c not in KNOWN_CIRCLES]
    assert not unexpected, "import circles: " + "; ".join(" ↔ ".join(sorted(c))
                                                          for c in unexpected)
    gone = [c for c in KNOWN_CIRCLES if c not in circles]
    assert not gone, f"no longer circles, remove from KNOWN_CIRCLES: {gone}"


def test_only_the_cli_imports_the_composition_root() -> None:
    graph = _graph(_modules())
    importers = {m for m, deps in graph.items() if COMPOSITION_ROOT in deps}
    assert importers <= MAY_IMPORT_ROOT, (
        f"{sorted(importers - MAY_IMPORT_ROOT)} import app.py: take a "
        "fog_appliance.node.view.NodeView instead")


def test_modules_are_small() -> None:
    sizes = {m: len(p.read_text(encoding="utf-8").splitlines())
             for m, p in _modules().items()}
    too_big = {m: n for m, n in sizes.items() if n > OVERSIZE.get(m, MAX_LINES)}
    assert not too_big, f"over {MAX_LINES} lines (or grown past OVERSIZE): {too_big}"
    shrunk = sorted(m for m in OVERSIZE if sizes.get(m, 0) <= MAX_LINES)
    assert not shrunk, f"within {MAX_LINES} lines now, remove from OVERSIZE: {shrunk}"


def test_test_files_have_unique_basenames() -> None:
    # tests/ has no __init__.py: two test modules of one name break the collection of the
    # whole suite (it happened twice when branches merged).
    seen: dict[str, Path] = {}
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        assert path.name not in seen, f"{path} and {seen[path.name]} share a name"
        seen[path.name] = path

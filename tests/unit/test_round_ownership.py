"""One owner per round (issue 15): the transition table is the only writer of round state,
the engine and the table do no I/O, the coordinator does not reach into the intake, and
the intake's admit path talks only to the rounds' port. Checked on the source, so a later
change that writes a round field elsewhere fails here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import fog_appliance
from tests.source_rules import assigned, unpacked

PACKAGE = Path(fog_appliance.__file__).parent
TABLE = PACKAGE / "rounds" / "table.py"
ROUND_FIELDS = {"id", "model_version", "opened_at", "deadline_at", "threshold", "min_updates",
                "deadline_s", "state", "max_staleness", "committed", "pending", "contributors"}
MUTATORS = {"pop", "popitem", "clear", "update", "setdefault", "__setitem__", "__delitem__"}
ROUNDISH = re.compile(r"(^|\.)(rnd|round|_round)$")
"""How the code names a Round: ``rnd``, ``self.round``, ``node.coordinator.round`` …"""


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p != TABLE)


def _round_field(node: ast.expr) -> str | None:
    """``rnd.threshold`` / ``self.round.committed[k]`` → the field written, else None."""
    while isinstance(node, ast.Subscript):
        node = node.value
    if (isinstance(node, ast.Attribute) and node.attr in ROUND_FIELDS
            and ROUNDISH.search(ast.unparse(node.value))):
        return node.attr
    return None


def _writes(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        targets = assigned(node)
        if isinstance(node, ast.Delete):
            targets = unpacked(list(node.targets))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in MUTATORS):
            targets = [node.func.value]
        flat = targets
        line = getattr(node, "lineno", 0)
        found.extend((line, f) for t in flat if (f := _round_field(t)) is not None)
    return found


def test_the_scan_sees_a_write() -> None:
    tree = ast.parse("rnd.threshold, rnd.min_updates = 1, 2\nself.round.state = 'x'\n"
                     "del rnd.committed[k]\nnode.coordinator.round.contributors.pop(d)\n"
                     "cfg.threshold = 3\n")
    assert [f for _, f in _writes(tree)] == ["threshold", "min_updates", "state", "committed",
                                             "contributors"]


def test_only_the_table_writes_round_state() -> None:
    offenders = [f"{p.relative_to(PACKAGE.parent)}:{line} writes {field}"
                 for p in _modules() for line, field in _writes(ast.parse(p.read_text()))]
    assert offenders == []


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


@pytest.mark.parametrize("name", ["table.py", "engine.py"])
def test_the_engine_and_table_do_no_io(name: str) -> None:
    imported = _imports(PACKAGE / "rounds" / name)
    assert not {m for m in imported if m.split(".")[0] in {
        "asyncio", "sqlite3", "socket", "threading", "time", "aiomqtt", "aiocoap"}}
    assert not {m for m in imported if m.startswith(("fog_appliance.store",
                                                     "fog_appliance.support.dbthread",
                                                     "fog_appliance.intake"))}


def test_rounds_and_coordinator_do_not_import_the_intake() -> None:
    paths = sorted((PACKAGE / "rounds").glob("*.py"))
    assert {str(p.name): m for p in paths for m in _imports(p)
            if m.startswith("fog_appliance.intake")} == {}


def test_the_intake_admit_path_uses_the_port_only() -> None:
    tree = ast.parse((PACKAGE / "intake" / "service.py").read_text())
    used = {fn.name: {ast.unparse(n) for n in ast.walk(fn) if isinstance(n, ast.Attribute)}
            for fn in ast.walk(tree) if isinstance(fn, ast.AsyncFunctionDef)
            and fn.name in {"submit_update", "_committed_before"}}
    assert set(used) == {"submit_update", "_committed_before"}
    for name, attrs in used.items():
        assert not {a for a in attrs if a.startswith("self._coord")}, name
    assert "self._rounds.admit" in used["submit_update"]
    assert "self._rounds.committed_here" in used["_committed_before"]

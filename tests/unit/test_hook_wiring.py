"""Explicit wiring (issue 15): what other parts contribute to the coordinator and the intake
is one frozen value each (``CloseHooks``, ``IntakeHooks``), built in ``app.py`` and passed
in; no module reaches into the coordinator or the intake and sets an attribute. Checked on
the source, so a later change that sets a hook from outside fails here."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

import fog_appliance
from fog_appliance.intake.hooks import IntakeHooks
from fog_appliance.rounds.hooks import CloseHooks
from tests.source_rules import assigned

PACKAGE = Path(fog_appliance.__file__).parent
CONSUMERS = {PACKAGE / "rounds" / "coordinator.py", PACKAGE / "intake" / "service.py",
             PACKAGE / "intake" / "mqtt.py"}
"""The consumers set their own hooks (``self._hooks`` / ``self.hooks``), nobody else."""
HOOK_NAMES = {"round_gate", "upstream", "awaited_upstream", "mixer", "gate", "update_gate",
              "placer", "hello_gate", "hooks", "_hooks", "blob_source"}
"""Today's hook attributes, and the names the hooks had when they were set from outside."""
RECEIVERS = {"coordinator", "_coord", "coord", "intake", "_intake", "mqtt"}
"""How the code names the coordinator, the intake and its MQTT adapter (``node.coordinator``,
``self._coord``, ``node.mqtt``)."""


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(node: ast.expr) -> str:
    return node.attr if isinstance(node, ast.Attribute) else \
        node.id if isinstance(node, ast.Name) else ""


def _outside_writes(tree: ast.AST, consumer: bool) -> list[tuple[int, str]]:
    """(line, target) of every assignment (or ``setattr``) that sets a hook from outside:
    a hook-named attribute of anything but ``self`` (of ``self`` too, outside a consumer),
    or any attribute of the coordinator or the intake."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id == "setattr" and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant)):
            attr = str(node.args[1].value)
            if attr in HOOK_NAMES or _name(node.args[0]) in RECEIVERS:
                found.append((node.lineno, ast.unparse(node)))
            continue
        flat = assigned(node)
        for t in flat:
            if not isinstance(t, ast.Attribute):
                continue
            owner = ast.unparse(t.value)
            hooky = t.attr in HOOK_NAMES and (owner != "self" or not consumer)
            if hooky or _name(t.value) in RECEIVERS:
                found.append((node.lineno, ast.unparse(t)))
    return found


def test_the_scan_sees_a_write_from_outside() -> None:
    src = ("node.coordinator.mixer = f\n"
           "self._intake.placer = g\n"
           "coordinator.anything_new = h\n"
           "link.hooks = x\n"
           "setattr(node.intake, 'hello_gate', y)\n"
           "self.gate = z\n")
    assert len(_outside_writes(ast.parse(src), consumer=False)) == 6
    # a consumer sets its own hooks; reading them or calling connect() is no write
    assert _outside_writes(ast.parse("self._hooks = h\nself.hooks = h\n"), consumer=True) == []
    assert _outside_writes(ast.parse("node.coordinator.connect(CloseHooks(mixer=m))\n"
                                     "x = node.intake.hooks.redirect\n"), consumer=False) == []


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_sets_a_hook_from_outside(path: Path) -> None:
    writes = _outside_writes(ast.parse(path.read_text()), consumer=path in CONSUMERS)
    assert not writes, f"{path.relative_to(PACKAGE)} sets hooks from outside: {writes}"


def test_the_coordinator_is_connected_once_in_the_composition_root() -> None:
    calls = [(p.relative_to(PACKAGE).as_posix(), n.lineno) for p in _modules()
             for n in ast.walk(ast.parse(p.read_text()))
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and n.func.attr == "connect" and _name(n.func.value) in RECEIVERS]
    assert [p for p, _ in calls] == ["app.py"], calls


@pytest.mark.parametrize("hooks", [CloseHooks, IntakeHooks])
def test_hooks_are_frozen_values_named_for_what_they_do(hooks: type) -> None:
    assert hooks.__dataclass_params__.frozen  # type: ignore[attr-defined]
    fields = [f.name for f in dataclasses.fields(hooks)]
    assert not [f for f in fields if "gate" in f], fields  # no four different "gate"s
    with pytest.raises(dataclasses.FrozenInstanceError):
        hooks().__setattr__(fields[0], None)

"""The default configuration as commented YAML (``fog-appliance config --defaults``), and
the field docstrings it is commented with (the admin API shows them too)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import textwrap
import typing
from typing import Any

import yaml

from fog_appliance.config.loader import _plain
from fog_appliance.config.schema import FogConfig


def dump_defaults() -> str:
    """The default configuration as commented YAML."""
    lines: list[str] = []
    _dump(FogConfig(), lines, 0)
    return "\n".join(lines) + "\n"


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string literal after each field) of a dataclass."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = typing.cast(ast.ClassDef, tree.body[0]).body
    docs: dict[str, str] = {}
    for stmt, nxt in itertools.pairwise(body):
        if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


def _dump(obj: Any, lines: list[str], depth: int) -> None:
    docs = field_docs(type(obj))
    pad = "  " * depth
    for f in dataclasses.fields(obj):
        if f.metadata.get("internal"):
            continue
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            lines.append(f"{pad}{f.name}:")
            _dump(value, lines, depth + 1)
            continue
        if f.name in docs:
            lines.append(f"{pad}# {docs[f.name]}")
        text = yaml.safe_dump(_plain(value), default_flow_style=True).split("\n...")[0].strip()
        lines.append(f"{pad}{f.name}: {text}")

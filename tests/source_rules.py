"""Reading the package's source for rules the tests hold (who writes round state, who sets
a hook): the targets an assignment statement writes."""

from __future__ import annotations

import ast


def assigned(node: ast.AST) -> list[ast.expr]:
    """What ``node`` assigns to (``a = b``, ``a += b``, ``a: T = b``; tuples unpacked), or []
    if it is no assignment statement."""
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, ast.AugAssign | ast.AnnAssign):
        targets = [node.target]
    return unpacked(targets)


def unpacked(targets: list[ast.expr]) -> list[ast.expr]:
    flat: list[ast.expr] = []
    for t in targets:
        flat.extend(t.elts if isinstance(t, ast.Tuple) else [t])
    return flat

"""Power cuts at flash writes, for tests (host simulation only; a board's flash is the
hardware boundary faked here).

``FOG_SIM_FLASH_CUT=<n>`` makes the process SIGKILL itself at the n-th change to the
board's flash (the current directory): a write to a file (half of its bytes written
first: a torn write), a rename, a removal or a new directory. ``--firmware`` files outside
the flash directory are not counted. Every change is counted in the order the firmware
makes it, so a seeded list of n cuts anywhere: during a download, at the switch, at the
loader's trial count. ``FOG_SIM_FLASH_CUT=-1`` cuts nothing and prints every change
(``flash op <n>: <what>``), for a test to choose its cut points from.
"""

from __future__ import annotations

import builtins
import os
import signal
import sys
from typing import Any

_real_open = builtins.open
_state = {"n": 0, "cut": 0, "root": ""}


def _ours(path: Any) -> bool:
    try:
        p = os.path.abspath(os.fspath(path))
    except TypeError:
        return False
    return p.startswith(_state["root"])


def _tick(what: str) -> bool:
    _state["n"] += 1
    if _state["cut"] < 0:
        print(f"flash op {_state['n']}: {what}", flush=True)
    elif _state["n"] == _state["cut"]:
        print(f"power cut at flash op {_state['n']} ({what})", flush=True)
        return True
    return False


def _kill() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class _File:
    def __init__(self, f: Any, name: str) -> None:
        self._f = f
        self._name = name

    def write(self, data: Any) -> int:
        if _tick(f"write {self._name}"):
            half = bytes(data)[: len(data) // 2] if not isinstance(data, str) else data[
                : len(data) // 2]
            self._f.write(half)
            self._f.flush()
            _kill()
        return int(self._f.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> _File:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()


def _open(file: Any, mode: str = "r", *args: Any, **kw: Any) -> Any:
    f = _real_open(file, mode, *args, **kw)
    if any(c in mode for c in "wax+") and _ours(file):
        return _File(f, os.path.basename(os.fspath(file)))
    return f


def _wrap(name: str) -> None:
    real = getattr(os, name)

    def op(path: Any, *args: Any, **kw: Any) -> Any:
        if _ours(path) and _tick(f"{name} {os.path.basename(os.fspath(path))}"):
            _kill()
        return real(path, *args, **kw)

    setattr(os, name, op)


def install(cut: int) -> None:
    """Count changes under the current directory; SIGKILL at change ``cut``."""
    _state["cut"] = cut
    _state["root"] = os.getcwd().rstrip("/") + "/"
    builtins.open = _open
    for name in ("rename", "remove", "mkdir"):
        _wrap(name)

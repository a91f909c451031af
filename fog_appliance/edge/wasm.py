"""Run MicroPython code on the official MicroPython WebAssembly port, under Node.

The port is the npm package ``@micropython/micropython-webassembly-pyscript``, pinned in
``edge_firmware/wasm-test/package.json`` (``npm ci`` there installs it; CI does that in
``scripts/setup test``). ``run_plan`` copies host folders into the port's virtual
filesystem, runs a list of Python sources one top-level call each with the GC heap set to
``heap`` bytes, and reads back what the code wrote to ``/out`` plus the heap total after
each step.

The port grows its heap instead of collecting garbage inside a call (it can only scan for
roots between calls from JavaScript), so a step that needs more than ``heap`` bytes —
live objects and that call's garbage together — shows as a heap total above the initial
one (:attr:`WasmResult.grown`). That is a stricter cap than on a board, whose GC runs
whenever the heap fills.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fog_appliance.edge import EdgeToolError

PACKAGE = "@micropython/micropython-webassembly-pyscript"


def harness_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "edge_firmware" / "wasm-test"


def node_binary() -> str | None:
    return shutil.which("node")


def port_installed() -> bool:
    return (harness_dir() / "node_modules" / PACKAGE / "micropython.mjs").is_file()


@dataclass(frozen=True, slots=True)
class WasmStep:
    step: int
    total: int
    """GC heap size (plus what the port could still grow by) at the end of the step."""
    alloc: int
    """Bytes allocated at the end of the step (live objects and uncollected garbage)."""
    ms: int
    calls: int = 1
    """Top-level calls the step took (a ``{"call": ...}`` step: usually more than one)."""
    live: int = 0
    """A ``{"call": ...}`` step: the most bytes live after one of its calls' collection."""


@dataclass(frozen=True, slots=True)
class WasmResult:
    heap: int
    base: int
    """The heap total before the first step."""
    steps: list[WasmStep]
    error: str | None
    stdout: str
    ms: int
    version: str
    out: Path

    @property
    def grown(self) -> list[int]:
        """Steps after which the heap was larger than ``heap`` bytes."""
        return [s.step for s in self.steps if s.total > self.base]

    def read_json(self, name: str) -> object:
        return json.loads((self.out / name).read_text(encoding="utf-8"))


def run_plan(plan: Sequence[str | dict[str, str]], puts: dict[Path, str], out: Path, *,
             heap: int = 65536, timeout: float = 600.0, net: bool = False) -> WasmResult:
    """Run ``plan`` on the port: Python sources, one top-level call each, or
    ``{"call": "module.function"}``: that function called again and again while it
    returns true, with a collection after each call. ``puts`` maps host folders to VFS
    paths.
    ``net``: real blocking TCP sockets as the JS module ``jsnet`` (wasm-test/netbridge.mjs;
    wasm-test/jssocket.py is the socket module over it)."""
    node = node_binary()
    if node is None:
        raise EdgeToolError("node is not installed (apt-get install nodejs): it runs the "
                            "MicroPython WebAssembly port")
    if not port_installed():
        raise EdgeToolError(f"{PACKAGE} is not installed: run `npm ci` in {harness_dir()}")
    out.mkdir(parents=True, exist_ok=True)
    plan_path = out / "plan.json"
    plan_path.write_text(json.dumps(plan), encoding="utf-8")
    argv = [node, str(harness_dir() / "run.mjs"), "--heap", str(heap), "--plan",
            str(plan_path), "--out", str(out)]
    for host, vdir in puts.items():
        argv += ["--put", f"{host}:{vdir}"]
    if net:
        argv.append("--net")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              cwd=harness_dir(), check=False)
    except subprocess.TimeoutExpired:
        raise EdgeToolError(f"the MicroPython WebAssembly run took over {timeout:.0f} s"
                            ) from None
    result_path = out / "result.json"
    if not result_path.exists():
        raise EdgeToolError(f"the WebAssembly harness failed (exit {proc.returncode}): "
                            f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
    r = json.loads(result_path.read_text(encoding="utf-8"))
    steps = [WasmStep(int(s["step"]), int(s["total"]), int(s["alloc"]), int(s["ms"]),
                      int(s.get("calls", 1)), int(s.get("live", 0))) for s in r["steps"]]
    return WasmResult(int(r["heap"]), int(r["base"]), steps, r["error"], r["stdout"],
                      int(r["ms"]), str(r["version"]), out)

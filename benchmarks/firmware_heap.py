"""The smallest heap the whole firmware needs, by model size (MicroPython, WebAssembly port).

    python benchmarks/firmware_heap.py                # MLP 64-h-10, h = 2 8 16 32 64 96 128
    python benchmarks/firmware_heap.py --hidden 32    # one model

For each model, a binary search (to 1 KB) for the smallest fixed heap in which the run of
``tests/integration/test_firmware_wasm.py::BOARD_PLAN`` completes without the heap growing:
boot, connect, the pending update of a reset resent, then three accepted rounds (two with
a new model blob fetched over MQTT, one after a wake on the model the board has), training,
delta, encoding, write-ahead and MQTT included, with the real umqtt.simple against a
scripted broker. The heap the harness's stand-ins take (sockets, ``machine``, ``network``,
umqtt.simple: in C or frozen on a board) is measured first and left out of the figure.
Needs node and ``npm ci`` in edge_firmware/wasm-test. Prints a Markdown table; asserts
nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fog_appliance.model.spec import ModelSpec
from tests.integration.test_firmware_wasm import board_run, fits

HIDDEN = (2, 8, 16, 32, 64, 96, 128)


def min_heap(spec: ModelSpec, lo: int = 32, hi: int = 1024) -> int:
    """The smallest heap in KB (the harness's own bytes left out) for the whole run."""
    with tempfile.TemporaryDirectory() as d:
        n = 0
        while hi - lo > 1:
            mid = (lo + hi) // 2
            n += 1
            if fits(board_run(Path(d) / f"r{n}", spec, mid * 1024)):
                hi = mid
            else:
                lo = mid
    return hi


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--hidden", type=int, nargs="*", default=list(HIDDEN),
                    help="hidden layer widths h of the MLP 64-h-10 (default: %(default)s)")
    args = ap.parse_args()
    print("| model (MLP 64-h-10) | parameters | min heap KB |\n|---|---:|---:|", flush=True)
    for h in args.hidden:
        s = ModelSpec("mlp", 64, (h,), 10)
        note = " (default)" if h == 32 else ""
        print(f"| 64-{h}-10{note} | {s.num_params:,} | {min_heap(s)} |", flush=True)


if __name__ == "__main__":
    main()

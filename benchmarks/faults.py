"""The faults of docs/reliability.md, each run against real processes, and their figures.

    .venv/bin/python benchmarks/faults.py [--runs 1] [--only NAME ...] [--json FILE]

Every scenario (``tests/faults/scenarios.py``, the same code the fault suite asserts on)
starts a real Mosquitto, a real fog node process and real ``FLClient`` edges on loopback,
injects its fault mid-burst, recovers, and reads the store. Printed per scenario and run:
updates sent, acknowledged (edges told ``accepted``), stored, counted (by the published
aggregate), lost, double, resends answered ``accepted, duplicate``, whether the published
model is exactly the aggregate of the stored updates, the time from the end of the fault to
the next acceptance, and whether the node was up at the end, as a Markdown table (one row
per scenario, summed over runs). The disk scenarios mount a small tmpfs: root, or passwordless sudo.
About 10 s per scenario and run; exit status 1 if any run broke a promise.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.faults.rig import Figures  # noqa: E402
from tests.faults.scenarios import SCENARIOS  # noqa: E402

HEADER = ("| fault | runs | updates | acknowledged | stored | counted | lost | double | "
          "resent on reconnect | answered duplicate | model exact | time to recover (s) | "
          "node up |")


def summary(figures: list[Figures]) -> str:
    """One Markdown row per scenario, summed over its runs (recovery: min-max)."""
    by: dict[str, list[Figures]] = {}
    for f in figures:
        by.setdefault(f.scenario, []).append(f)
    lines = [HEADER, "|" + "---|" * (HEADER.count("|") - 1)]
    for name, fs in by.items():
        rec = [f.recover_s for f in fs if f.recover_s is not None]
        span = f"{min(rec):.2f}-{max(rec):.2f}" if rec else "-"
        lines.append(f"| {name} | {len(fs)} | {sum(f.updates for f in fs)} | "
                     f"{sum(f.acknowledged for f in fs)} | {sum(f.stored for f in fs)} | "
                     f"{sum(f.counted for f in fs)} | {sum(f.lost for f in fs)} | "
                     f"{sum(f.double for f in fs)} | "
                     f"{sum(f.resent_on_reconnect for f in fs)} | "
                     f"{sum(f.duplicates_answered for f in fs)} | "
                     f"{'yes' if all(f.exact for f in fs) else 'NO'} | {span} | "
                     f"{'yes' if all(f.node_up for f in fs) else 'NO'} |")
    return "\n".join(lines)


async def run(names: list[str], runs: int) -> list[Figures]:
    out: list[Figures] = []
    for name in names:
        for i in range(runs):
            with tempfile.TemporaryDirectory(prefix=f"fault-{name}-") as tmp:
                try:
                    f = await SCENARIOS[name](Path(tmp))
                except Exception as exc:  # a scenario that could not finish is a result too
                    f = Figures(scenario=name, updates=0, acknowledged=0, stored=0,
                                counted=0, lost=0, double=0, duplicates_answered=0,
                                rejected=0, resent_on_reconnect=0, exact=False,
                                recover_s=None, node_up=False,
                                notes=[f"did not finish: {type(exc).__name__}: {exc}"])
                f.notes.insert(0, f"run {i + 1}")
                out.append(f)
                print(f"{name} run {i + 1}: {'ok' if f.ok else 'NOT OK'} {f.notes}",
                      flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    figures = asyncio.run(run(args.only or list(SCENARIOS), args.runs))
    print(summary(figures))
    if args.json:
        args.json.write_text(json.dumps([dataclasses.asdict(f) for f in figures], indent=2))
    sys.exit(0 if all(f.ok for f in figures) else 1)


if __name__ == "__main__":
    main()

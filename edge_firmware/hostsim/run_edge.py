"""Run the unchanged device firmware on CPython as if it were a board.

``python edge_firmware/hostsim/run_edge.py --flash DIR`` makes DIR the board's filesystem
(config.json, replay.bin, and the state the firmware writes; with ``--firmware DIR`` the
board's loader and app slots, docs/firmware.md "Updates over the air"), puts the fakes of this
directory (``machine``, ``network``; ``umqtt.simple`` is micropython-lib's own, over
CPython sockets) and the firmware's own directory on ``sys.path``, and runs ``boot.py``
then ``main.py`` like MicroPython does.
Deep sleep and reset (``machine.DeepSleep`` / ``machine.Reset``) drop every connection,
forget the firmware's RAM (its modules are imported afresh) and boot again, keeping only
what is on the flash directory. The Wi-Fi network named in config.json is "in range".
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import runpy
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIRMWARE = HERE.parent / "device"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flash", required=True, help="directory playing the board's filesystem")
    p.add_argument("--firmware", default=str(FIRMWARE), help="the device files to run")
    p.add_argument("--wakes", type=int, default=0, help="stop after N boots (0: never)")
    p.add_argument("--sleep-scale", type=float, default=0.01,
                   help="deep sleep lasts ms x scale (default 0.01: 60 s -> 0.6 s)")
    p.add_argument("--imu", action="store_true", help="attach a simulated MPU6050 at 0x68")
    p.add_argument("--imu-hang-at", type=int, default=0, metavar="N",
                   help="the simulated MPU6050's N-th data read never returns (once)")
    p.add_argument("--no-wifi", action="store_true", help="no access point in range")
    p.add_argument("--battery-mv", type=int,
                   help="battery voltage at the ADC pin of config.json's edge.battery")
    p.add_argument("--free-heap", type=int, default=100_000,
                   help="what gc.mem_free() reports (CPython has no such call)")
    args = p.parse_args(argv)
    firmware = str(Path(args.firmware).resolve())
    sys.path[:0] = [str(HERE), firmware]
    sys.dont_write_bytecode = True  # the flash holds what the firmware writes, nothing else
    os.chdir(args.flash)
    flash = os.getcwd()
    if os.environ.get("FOG_SIM_FLASH_CUT"):
        import flashcut

        flashcut.install(int(os.environ["FOG_SIM_FLASH_CUT"]))
    import machine
    import network
    from umqtt import simple

    gc.mem_free = lambda: args.free_heap  # type: ignore[attr-defined]
    if args.battery_mv is not None:
        try:
            batt = json.loads(Path("config.json").read_text())["edge"]["battery"]
            machine.adc_microvolts[batt["pin"]] = int(args.battery_mv * 1000 / batt.get(
                "divider", 2.0))
        except (OSError, ValueError, KeyError, TypeError):
            pass
    if args.imu:
        from fakeimu import FakeMPU6050

        machine.i2c_devices[0x68] = FakeMPU6050(hang_at=args.imu_hang_at)
    if not args.no_wifi:
        try:
            wifi = json.loads(Path("config.json").read_text()).get("wifi") or {}
            network.networks[wifi["ssid"]] = wifi.get("password", "")
        except (OSError, ValueError, KeyError, AttributeError):
            pass
    wakes = 0
    while True:
        wakes += 1
        for name, mod in list(sys.modules.items()):
            where = getattr(mod, "__file__", None) or ""
            if where.startswith((firmware, flash + os.sep)):  # the app slots are on flash
                del sys.modules[name]
        print(f"--- boot {wakes} (reset cause {machine.reset_cause()})", flush=True)
        try:
            runpy.run_path(os.path.join(firmware, "boot.py"), run_name="__main__")
            runpy.run_path(os.path.join(firmware, "main.py"), run_name="__main__")
        except machine.DeepSleep as sleep:
            machine.stop_watchdog()
            simple.power_down()
            print(f"--- deep sleep {sleep.ms} ms", flush=True)
            time.sleep(sleep.ms / 1000 * args.sleep_scale)
        except machine.Reset:
            machine.stop_watchdog()
            simple.power_down()
            print("--- reset", flush=True)
        else:
            print("--- main.py returned: the board sits at the REPL", flush=True)
            return 0
        if args.wakes and wakes >= args.wakes:
            return 0


if __name__ == "__main__":
    sys.exit(main())

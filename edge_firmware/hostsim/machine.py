"""A fake ``machine`` module for running the firmware under CPython (host simulation).

Hardware is the one thing the host cannot have: pins, the ADC, I2C, the clock, deep sleep
and reset are simulated here, with just enough behaviour for the firmware's code paths.
``deepsleep`` and ``reset`` raise :class:`DeepSleep` / :class:`Reset` (BaseException, so
firmware ``except Exception`` blocks do not swallow them); the host runner catches them
and boots the firmware again, as the chip would.

:class:`WDT` is the hardware watchdog, simulated with the process's real-time interval
timer (``SIGALRM``, no thread): when the firmware stops feeding it for ``timeout`` ms, the
signal interrupts whatever the firmware is doing, a blocking socket read included, and
raises :class:`Reset` there, as the chip's reset would. It cannot be stopped once
started; deep sleep and reset stop it (the runner calls :func:`stop_watchdog`).
"""

from __future__ import annotations

import signal
from typing import Any, ClassVar, Protocol

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

state = {"reset_cause": PWRON_RESET, "frequency": 240_000_000}
pin_log: list[tuple[int, int]] = []
"""(pin id, value) of every output write, oldest first."""
adc_microvolts: dict[int, int] = {}
"""Simulated voltage per ADC pin, in microvolts."""
i2c_devices: dict[int, I2CDevice] = {}
"""Simulated I2C bus: address -> device."""


class DeepSleep(BaseException):
    def __init__(self, ms: int) -> None:
        super().__init__(ms)
        self.ms = ms


class Reset(BaseException):
    pass


def deepsleep(ms: int = 0) -> None:
    state["reset_cause"] = DEEPSLEEP_RESET
    raise DeepSleep(ms)


def reset() -> None:
    state["reset_cause"] = HARD_RESET
    raise Reset()


class WDT:
    def __init__(self, id: int = 0, timeout: int = 5000) -> None:
        if timeout < 1:
            raise ValueError("timeout must be positive")
        self.timeout = timeout
        signal.signal(signal.SIGALRM, _bark)
        self.feed()

    def feed(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, self.timeout / 1000)


def _bark(signum: int, frame: object) -> None:
    stop_watchdog()
    state["reset_cause"] = WDT_RESET
    print("--- watchdog: not fed in time", flush=True)
    raise Reset()


def stop_watchdog() -> None:
    signal.setitimer(signal.ITIMER_REAL, 0)


def reset_cause() -> int:
    return state["reset_cause"]


def freq(hz: int | None = None) -> int:
    if hz is not None:
        state["frequency"] = hz
    return state["frequency"]


def unique_id() -> bytes:
    return b"\x24\x0a\xc4\x00\x00\x01"


class Pin:
    IN = 1
    OUT = 3
    PULL_UP = 1
    PULL_DOWN = 2

    levels: ClassVar[dict[int, int]] = {}
    """Input level per pin id (default 1: a pulled-up button not pressed)."""

    def __init__(self, pid: int, mode: int = IN, pull: int | None = None) -> None:
        if not 0 <= pid < 49:
            raise ValueError("invalid pin")
        self.id = pid
        self.mode = mode
        self._value = 0

    def value(self, v: int | None = None) -> int | None:
        if v is None:
            return self._value if self.mode == Pin.OUT else Pin.levels.get(self.id, 1)
        self._value = 1 if v else 0
        pin_log.append((self.id, self._value))
        return None

    def on(self) -> None:
        self.value(1)

    def off(self) -> None:
        self.value(0)


class ADC:
    ATTN_0DB = 0
    ATTN_11DB = 3

    def __init__(self, pin: Pin) -> None:
        self.pin = pin

    def atten(self, a: int) -> None:
        self._atten = a

    def read_uv(self) -> int:
        if self.pin.id not in adc_microvolts:
            raise OSError(19, "ENODEV")
        return adc_microvolts[self.pin.id]


class I2CDevice(Protocol):
    def read(self, reg: int, n: int) -> bytes: ...

    def write(self, reg: int, data: bytes) -> None: ...


class I2C:
    def __init__(self, bus: int = 0, *, scl: Pin | None = None, sda: Pin | None = None,
                 freq: int = 400_000) -> None:
        self.bus = bus

    def _dev(self, addr: int) -> I2CDevice:
        if addr not in i2c_devices:
            raise OSError(19, "ENODEV")  # what the ESP32 port raises for a NACK
        return i2c_devices[addr]

    def scan(self) -> list[int]:
        return sorted(i2c_devices)

    def readfrom_mem(self, addr: int, reg: int, n: int) -> bytes:
        return self._dev(addr).read(reg, n)

    def readfrom_mem_into(self, addr: int, reg: int, buf: Any) -> None:
        data = self._dev(addr).read(reg, len(buf))
        buf[:] = data

    def writeto_mem(self, addr: int, reg: int, data: bytes) -> None:
        self._dev(addr).write(reg, bytes(data))

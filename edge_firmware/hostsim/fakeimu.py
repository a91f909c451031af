"""A register-level MPU6050 for the simulated I2C bus (a true hardware boundary).

Registers the driver uses: WHO_AM_I (0x75), PWR_MGMT_1 (0x6B), ACCEL_CONFIG (0x1C),
GYRO_CONFIG (0x1B) and the 14 data bytes from ACCEL_XOUT_H (0x3B): big-endian signed
accel x/y/z, temperature, gyro x/y/z. ``samples`` are raw counts served in turn.
``hang_at``: the data read with that number (1 = the first) never returns, once: a bus
held low by a glitching sensor, which only the watchdog gets the board out of.
"""

from __future__ import annotations

import struct
import time


class FakeMPU6050:
    def __init__(self, samples: list[tuple[int, int, int, int, int, int, int]] | None = None,
                 who_am_i: int = 0x68, hang_at: int = 0) -> None:
        self.regs = bytearray(128)
        self.regs[0x75] = who_am_i
        self.regs[0x6B] = 0x40  # asleep after power-on, as the datasheet says
        self.samples = samples or [(16384, 0, 0, 0, 131, -131, 262)]
        self.reads = 0
        self.writes: list[tuple[int, bytes]] = []
        self.hang_at = hang_at

    @property
    def awake(self) -> bool:
        return not self.regs[0x6B] & 0x40

    def read(self, reg: int, n: int) -> bytes:
        if reg == 0x3B and n == 14:
            if not self.awake:
                return bytes(14)  # a sleeping MPU6050 reports zeros
            s = self.samples[self.reads % len(self.samples)]
            self.reads += 1
            if self.reads == self.hang_at:
                self.hang_at = 0
                while True:  # the bus is stuck
                    time.sleep(1)
            return struct.pack(">7h", *s)
        return bytes(self.regs[reg:reg + n])

    def write(self, reg: int, data: bytes) -> None:
        self.writes.append((reg, data))
        self.regs[reg:reg + len(data)] = data

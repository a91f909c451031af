"""A register-level MPU6050 for the simulated I2C bus (a true hardware boundary).

Registers the driver uses: WHO_AM_I (0x75), PWR_MGMT_1 (0x6B), ACCEL_CONFIG (0x1C),
GYRO_CONFIG (0x1B) and the 14 data bytes from ACCEL_XOUT_H (0x3B): big-endian signed
accel x/y/z, temperature, gyro x/y/z. ``samples`` are raw counts served in turn.
"""

from __future__ import annotations

import struct


class FakeMPU6050:
    def __init__(self, samples: list[tuple[int, int, int, int, int, int, int]] | None = None,
                 who_am_i: int = 0x68) -> None:
        self.regs = bytearray(128)
        self.regs[0x75] = who_am_i
        self.regs[0x6B] = 0x40  # asleep after power-on, as the datasheet says
        self.samples = samples or [(16384, 0, 0, 0, 131, -131, 262)]
        self.reads = 0
        self.writes: list[tuple[int, bytes]] = []

    @property
    def awake(self) -> bool:
        return not self.regs[0x6B] & 0x40

    def read(self, reg: int, n: int) -> bytes:
        if reg == 0x3B and n == 14:
            if not self.awake:
                return bytes(14)  # a sleeping MPU6050 reports zeros
            s = self.samples[self.reads % len(self.samples)]
            self.reads += 1
            return struct.pack(">7h", *s)
        return bytes(self.regs[reg:reg + n])

    def write(self, reg: int, data: bytes) -> None:
        self.writes.append((reg, data))
        self.regs[reg:reg + len(data)] = data

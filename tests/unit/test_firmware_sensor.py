"""Where examples come from (edge_firmware/device/sensor.py): the replay file the host
tooling writes, and the MPU6050 driver over a register-level fake I2C device (the I2C bus
is a true hardware boundary)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from fog_appliance.edge.replay import encode_replay, write_replay
from tests.firmware_support import firmware

sensor = firmware("sensor")
rt = firmware("rt")
machine = firmware("machine")
fakeimu = firmware("fakeimu")


@pytest.fixture(autouse=True)
def _no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sensor, "sleep_ms", lambda ms: None)
    machine.i2c_devices.clear()


def test_replay_reads_what_the_host_wrote_and_cycles(tmp_path: Path) -> None:
    x = np.arange(15, dtype=np.float32).reshape(3, 5) / 4
    y = np.array([2, 0, 1])
    path = write_replay(tmp_path / "replay.bin", x, y)
    src = sensor.Replay(str(path), 5)
    buf = rt.zeros(5)
    got = []
    for _ in range(4):
        label = src.example(buf)
        got.append((list(buf), label))
    src.close()
    assert src.count == 3
    assert got[:3] == [(x[i].tolist(), int(y[i])) for i in range(3)]
    assert got[3] == got[0]


def test_replay_refusals(tmp_path: Path) -> None:
    with pytest.raises(sensor.SensorError, match="not found"):
        sensor.Replay(str(tmp_path / "none.bin"), 4)
    p = tmp_path / "r.bin"
    p.write_bytes(b"JUNK" + bytes(20))
    with pytest.raises(sensor.SensorError, match="not a replay"):
        sensor.Replay(str(p), 4)
    p.write_bytes(encode_replay(np.zeros((2, 3)), np.array([0, 1])))
    with pytest.raises(sensor.SensorError, match="3 features"):
        sensor.Replay(str(p), 4)
    p.write_bytes(encode_replay(np.zeros((2, 4)), np.array([0, 1]))[:-6])
    src = sensor.Replay(str(p), 4)
    src.example(rt.zeros(4))
    with pytest.raises(sensor.SensorError, match="truncated"):
        src.example(rt.zeros(4))
    src.close()


def test_encode_replay_checks_its_input() -> None:
    with pytest.raises(ValueError):
        encode_replay(np.zeros((2, 3)), np.array([0]))
    with pytest.raises(ValueError):
        encode_replay(np.zeros((2, 3)), np.array([0, -1]))
    assert encode_replay(np.zeros((0, 3)), np.zeros(0, dtype=int)) == b"FOGR" + struct.pack(
        "<II", 3, 0)


def test_mpu6050_wakes_the_chip_and_scales_its_readings() -> None:
    imu = fakeimu.FakeMPU6050([(16384, -8192, 4096, 999, 131, -262, 655)])
    machine.i2c_devices[0x68] = imu
    bus = machine.I2C(0, scl=machine.Pin(22), sda=machine.Pin(21))
    drv = sensor.MPU6050(bus)
    assert imu.awake
    assert (0x1C, b"\x00") in imu.writes and (0x1B, b"\x00") in imu.writes
    out = rt.zeros(8)
    drv.read(out, 2)
    assert list(out) == [0.0, 0.0, 1.0, -0.5, 0.25, 1.0, -2.0, 5.0]
    drv.sleep()
    assert not imu.awake


def test_mpu6050_absent_or_another_chip() -> None:
    bus = machine.I2C(0)
    with pytest.raises(sensor.SensorError, match="no MPU6050 answers"):
        sensor.MPU6050(bus)
    machine.i2c_devices[0x68] = fakeimu.FakeMPU6050(who_am_i=0x12)
    with pytest.raises(sensor.SensorError, match="WHO_AM_I 0x12"):
        sensor.MPU6050(bus)
    machine.i2c_devices[0x68] = fakeimu.FakeMPU6050(who_am_i=0x70)  # MPU6500: compatible
    sensor.MPU6050(bus)


def test_window_features_are_consecutive_readings_with_a_button_label() -> None:
    samples = [(i * 8192, 0, 0, 0, 0, 0, i * 131) for i in range(1, 4)]
    machine.i2c_devices[0x68] = fakeimu.FakeMPU6050(samples)
    src = sensor.open_source({"kind": "mpu6050", "label_pin": 0}, 14)
    machine.Pin.levels[0] = 1
    x = rt.zeros(14)
    assert src.example(x) == 0
    assert list(x) == [0.5, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 2, 1.5, 0]
    machine.Pin.levels[0] = 0  # button held: class 1
    assert src.example(x) == 1
    fixed = sensor.open_source({"kind": "mpu6050", "label": 3}, 6)
    assert fixed.example(rt.zeros(6)) == 3


def test_unknown_sensor_kind() -> None:
    with pytest.raises(sensor.SensorError, match="sensor kind"):
        sensor.open_source({"kind": "thermometer"}, 4)

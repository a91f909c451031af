# Where training examples come from, behind one small interface:
#     source.example(x) -> label   fills array('f') x (input_dim features) in place
#     source.count                 examples per pass (None: endless, e.g. a live sensor)
# Replay reads examples recorded in a file (bench tests, CI); Window turns a live
# accelerometer/gyro (MPU6050 over I2C) into feature vectors, labelled by a button or a
# fixed class.
import struct

from rt import const, floats_from, sleep_ms

_MAGIC = b"FOGR"
_MPU_ADDR = const(0x68)
_WHO_AM_I = const(0x75)
_PWR_MGMT_1 = const(0x6B)
_GYRO_CONFIG = const(0x1B)
_ACCEL_CONFIG = const(0x1C)
_ACCEL_XOUT_H = const(0x3B)
# WHO_AM_I of the MPU6050 and of the register-compatible MPU6500/9250/9255.
_KNOWN_IDS = (0x68, 0x70, 0x71, 0x73)


class SensorError(Exception):
    pass


class Replay:
    # File: b"FOGR", u32 input_dim, u32 count, then count records of input_dim float32
    # and a u32 label, all little-endian (fog_appliance.edge.replay writes it).
    def __init__(self, path, input_dim):
        try:
            self.f = open(path, "rb")
        except OSError:
            raise SensorError("replay file %s not found" % path)
        head = self.f.read(12)
        problem = None
        if len(head) != 12 or head[0:4] != _MAGIC:
            problem = "%s is not a replay file" % path
        else:
            dim, self.count = struct.unpack_from("<II", head, 4)
            if dim != input_dim:
                problem = "%s has %d features per example, the model takes %d" % (
                    path, dim, input_dim)
        if problem:
            self.f.close()
            raise SensorError(problem)
        self.dim = dim
        self.label = bytearray(4)
        self.pos = 0

    def rewind(self):
        self.f.seek(12)
        self.pos = 0

    def example(self, x):
        if self.pos >= self.count:
            self.rewind()
        if self.f.readinto(x) != 4 * self.dim or self.f.readinto(self.label) != 4:
            raise SensorError("replay file is truncated")
        self.pos += 1
        return struct.unpack("<I", self.label)[0]

    def close(self):
        self.f.close()


class MPU6050:
    # InvenSense MPU6050 over I2C: acceleration in g (+-2 g), rotation in deg/s (+-250).
    def __init__(self, i2c, addr=_MPU_ADDR):
        self.i2c = i2c
        self.addr = addr
        try:
            who = i2c.readfrom_mem(addr, _WHO_AM_I, 1)[0]
        except OSError:
            raise SensorError("no MPU6050 answers at I2C address 0x%02x" % addr)
        if who not in _KNOWN_IDS:
            raise SensorError("device at 0x%02x is not an MPU6050 (WHO_AM_I 0x%02x)"
                              % (addr, who))
        i2c.writeto_mem(addr, _PWR_MGMT_1, b"\x01")  # wake, clock from gyro X PLL
        i2c.writeto_mem(addr, _ACCEL_CONFIG, b"\x00")
        i2c.writeto_mem(addr, _GYRO_CONFIG, b"\x00")
        self.buf = bytearray(14)

    def read(self, out, at=0):
        # Writes ax, ay, az, gx, gy, gz into out[at:at + 6].
        self.i2c.readfrom_mem_into(self.addr, _ACCEL_XOUT_H, self.buf)
        ax, ay, az, _temp, gx, gy, gz = struct.unpack(">hhhhhhh", self.buf)
        out[at] = ax / 16384.0
        out[at + 1] = ay / 16384.0
        out[at + 2] = az / 16384.0
        out[at + 3] = gx / 131.0
        out[at + 4] = gy / 131.0
        out[at + 5] = gz / 131.0

    def sleep(self):
        self.i2c.writeto_mem(self.addr, _PWR_MGMT_1, b"\x40")


class Window:
    # input_dim features = consecutive 6-axis readings, period_ms apart, flattened
    # (the last reading is cut if input_dim is not a multiple of 6).
    def __init__(self, imu, input_dim, period_ms=20, label=None):
        self.imu = imu
        self.dim = input_dim
        self.period_ms = period_ms
        self.label = label or (lambda: 0)
        self.count = None
        self.tmp = floats_from(bytearray(24))

    def example(self, x):
        pos = 0
        while pos < self.dim:
            self.imu.read(self.tmp)
            for i in range(min(6, self.dim - pos)):
                x[pos + i] = self.tmp[i]
            pos += 6
            sleep_ms(self.period_ms)
        return self.label()


def button_label(pin, active_low=True):
    # Class 1 while the button is held, else class 0.
    return lambda: 1 if (pin.value() == 0) == active_low else 0


def open_source(conf, input_dim):
    # conf: the "sensor" object of config.json's "edge" section.
    kind = conf.get("kind", "replay")
    if kind == "replay":
        return Replay(conf.get("path", "replay.bin"), input_dim)
    if kind == "mpu6050":
        from machine import I2C, Pin

        i2c = I2C(conf.get("i2c", 0), scl=Pin(conf.get("scl", 22)), sda=Pin(conf.get("sda", 21)),
                  freq=400000)
        imu = MPU6050(i2c, conf.get("addr", _MPU_ADDR))
        label = None
        if "label_pin" in conf:
            label = button_label(Pin(conf["label_pin"], Pin.IN, Pin.PULL_UP),
                                 conf.get("label_active_low", True))
        elif "label" in conf:
            fixed = int(conf["label"])
            label = lambda: fixed  # noqa: E731
        return Window(imu, input_dim, conf.get("period_ms", 20), label)
    raise SensorError("sensor kind %r is not replay or mpu6050" % kind)

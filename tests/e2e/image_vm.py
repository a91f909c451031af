"""Boot the built SD-card image under qemu-system-aarch64 and drive it as an admin would:
over SSH and the broker's ports, forwarded to loopback only. Shared by the image boot tests
(``-M virt``: test_image_boot.py; ``-M raspi3b``: test_image_raspi.py).

The pieces compose: :func:`prepare_card` copies the image and puts a ``fog_config.yaml``
on its boot partition (mtools, no mounts); a :class:`Machine` says how QEMU runs it;
:func:`boot` starts QEMU (paused, so links can be set first) and :func:`wait_for_ssh` /
:func:`wait_for_node` wait for the node; :func:`shutdown` powers it off. A test that reboots
the same card (A/B updates) calls :func:`boot` again with the same :class:`Card`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

import fog_appliance
from fog_appliance.broker import free_port

REPO = Path(__file__).resolve().parents[2]
IMAGE = Path(os.environ.get("FOG_IMAGE_FILE") or
             REPO / "dist" / f"fog-appliance-{fog_appliance.__version__}-arm64.img.xz")
"""The image to boot: the build's output, or FOG_IMAGE_FILE (.img or .img.xz)."""
TOOLS = ("qemu-system-aarch64", "mcopy", "sfdisk", "xz", "ssh", "ssh-keygen")
BOOT_TIMEOUT_S = float(os.environ.get("FOG_IMAGE_BOOT_TIMEOUT", "900"))
NODE_ID = "ci-fog"
DEVICE = "ci-edge"


def skip_unless_available() -> None:
    """Skip (fail in CI) when the image is not built or a tool is missing."""
    missing = [t for t in TOOLS if shutil.which(t) is None
               and not Path("/usr/sbin", t).exists() and not Path("/sbin", t).exists()]
    why = (f"{IMAGE} is not built (image/build.sh debian)" if not IMAGE.exists()
           else f"missing tools: {', '.join(missing)}" if missing else None)
    if why is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"image boot test cannot run in CI: {why}")
    pytest.skip(why)


def tool(name: str) -> str:
    for cand in (shutil.which(name), f"/usr/sbin/{name}", f"/sbin/{name}"):
        if cand and Path(cand).exists():
            return cand
    raise AssertionError(f"{name} not found")


# ---------------------------------------------------------------------------- the card


@dataclass
class Card:
    """A writable copy of the image with a boot config on it, and what boots it."""

    img: Path
    boot_offset: int
    root_part_bytes: int
    """Root slot A's partition."""
    key: Path
    cmdline: str
    kernel: Path
    initrd: Path
    config_txt: str
    data_part_bytes: int = 0
    prepare_s: float = 0.0

    def read_boot(self, name: str) -> bytes:
        return boot_read(self.img, self.boot_offset, name)


def partitions(img: Path) -> list[dict[str, Any]]:
    out = subprocess.run([tool("sfdisk"), "--json", str(img)], capture_output=True, text=True,
                         check=True).stdout
    parts: list[dict[str, Any]] = json.loads(out)["partitiontable"]["partitions"]
    return parts


def boot_read(img: Path, offset: int, name: str) -> bytes:
    return subprocess.run(["mcopy", "-n", "-i", f"{img}@@{offset}", f"::{name}", "-"],
                          capture_output=True, check=True).stdout


def boot_write(img: Path, offset: int, name: str, data: bytes, tmp: Path) -> None:
    src = tmp / name
    src.write_bytes(data)
    subprocess.run(["mcopy", "-o", "-i", f"{img}@@{offset}", str(src), f"::{name}"],
                   check=True, capture_output=True)


def next_power_of_two(n: int) -> int:
    return 1 << max(n - 1, 1).bit_length()


def prepare_card(tmp: Path, *, grow: Callable[[int], int],
                 boot_config: dict[str, Any] | None = None) -> Card:
    """Decompress the image into ``tmp``, resize it to ``grow(size)`` bytes (the first boot
    grows the root to the card), put a boot config on it naming the node, an SSH key and a
    device, and take out kernel, initrd and kernel command line."""
    t0 = time.monotonic()
    img = tmp / "disk.img"
    if IMAGE.suffix == ".xz":
        with img.open("wb") as out:
            subprocess.run(["xz", "-dc", str(IMAGE)], stdout=out, check=True)
    else:
        shutil.copyfile(IMAGE, img)
    parts = partitions(img)
    boot = next(p for p in parts if p["type"] == "c")
    root = next(p for p in parts if p["type"] == "83")  # slot A (partition 2)
    data = parts[-1]  # the data partition: the first boot grows it to the card
    size = img.stat().st_size
    new_size = grow(size)
    assert new_size >= size, (new_size, size)
    with img.open("r+b") as f:
        f.truncate(new_size)
    off = int(boot["start"]) * 512
    config_txt = boot_read(img, off, "config.txt").decode()
    kernel_name = re.search(r"^kernel=(\S+)", config_txt, re.M)
    initrd_name = re.search(r"^initramfs (\S+)", config_txt, re.M)
    assert kernel_name and initrd_name, f"config.txt names no kernel/initramfs:\n{config_txt}"
    kernel = tmp / "vmlinuz"
    initrd = tmp / "initrd.img"
    kernel.write_bytes(boot_read(img, off, kernel_name.group(1)))
    initrd.write_bytes(boot_read(img, off, initrd_name.group(1)))
    cmdline = boot_read(img, off, "cmdline.txt").decode().strip()
    assert "root=PARTUUID=464f4721-02" in cmdline.split(), cmdline

    key = tmp / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    pub = key.with_suffix(".pub").read_text().strip()
    config = boot_config if boot_config is not None else {
        "fog_node": {"id": NODE_ID, "region": "qemu"},
        "rounds": {"deadline_s": 60, "min_updates": 1},
        "appliance": {"provision_devices": [DEVICE]},
    }
    config.setdefault("appliance", {})["ssh_authorized_keys"] = [pub]
    boot_write(img, off, "fog_config.yaml", yaml.safe_dump(config).encode(), tmp)
    return Card(img=img, boot_offset=off, root_part_bytes=int(root["size"]) * 512, key=key,
                cmdline=cmdline, kernel=kernel, initrd=initrd, config_txt=config_txt,
                data_part_bytes=int(data["size"]) * 512, prepare_s=time.monotonic() - t0)


# ------------------------------------------------------------------------- the machine


@dataclass(frozen=True)
class Machine:
    """How QEMU runs a card: the machine's own arguments (without kernel, network and
    serial), the NIC model, and which serial port is the console."""

    args: tuple[str, ...]
    nic: str
    cmdline: Callable[[Card], str]
    drive: tuple[str, ...] = ("-drive", "if=none,file={img},format=raw,id=hd",
                              "-device", "virtio-blk-pci,drive=hd")
    dtb: Callable[[Card, Path], Path | None] = lambda card, tmp: None
    console_serial: int = 0
    """Index of the serial port the kernel's console is on (raspi3b: 1, the mini UART)."""


VIRT = Machine(
    args=("-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "1536",
          "-accel", "tcg,thread=multi"),
    nic="virtio-net-pci",
    # The Pi's consoles (ttyS1, tty0) become the virt machine's PL011 UART.
    cmdline=lambda card: " ".join(
        [w for w in card.cmdline.split() if not w.startswith("console=")]
        + ["console=ttyAMA0,115200"]),
)


def _raspi_dtb(card: Card, tmp: Path) -> Path:
    dtb = tmp / "bcm2837-rpi-3-b.dtb"
    dtb.write_bytes(card.read_boot("bcm2837-rpi-3-b.dtb"))
    return dtb


RASPI3B = Machine(
    # The board is fixed: 4 Cortex-A53, 1 GiB; the card is an SD card (power-of-two size).
    args=("-M", "raspi3b", "-accel", "tcg,thread=multi"),
    nic="usb-net",
    cmdline=lambda card: card.cmdline,  # as on a Pi: console=ttyS1 (mini UART) tty0
    drive=("-drive", "if=sd,file={img},format=raw"),
    dtb=_raspi_dtb,
    console_serial=1,
)


@dataclass
class Vm:
    workdir: Path
    card: Card
    machine: Machine
    ports: dict[str, int]
    proc: subprocess.Popen[bytes] | None = None
    t0: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def console(self) -> Path:
        return self.workdir / "console.log"

    @property
    def monitor_path(self) -> Path:
        return self.workdir / "monitor.sock"

    @property
    def key(self) -> Path:
        return self.card.key

    @property
    def root_part_bytes(self) -> int:
        return self.card.root_part_bytes

    def ssh(self, command: str, *, check: bool = True, timeout: float = 120
            ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["ssh", "-i", str(self.key), "-p", str(self.ports["ssh"]),
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
             "fog-admin@127.0.0.1", command],
            capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"ssh {command!r} exited {done.returncode}: "
                                 f"{done.stdout}{done.stderr}")
        return done

    def monitor(self, command: str) -> str:
        """One HMP command on QEMU's monitor (e.g. ``set_link n0 off``, ``cont``)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect(str(self.monitor_path))
            buf = b""
            while not buf.endswith(b"(qemu) "):
                buf += s.recv(4096)
            s.sendall(command.encode() + b"\n")
            buf = b""
            while not buf.endswith(b"(qemu) "):
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
        return buf.decode(errors="replace")

    def console_text(self) -> str:
        try:
            return self.console.read_text(errors="replace")
        except OSError:
            return ""

    def console_tail(self, lines: int = 60) -> str:
        text = self.console_text()
        return "\n".join(text.splitlines()[-lines:]) if text else "(no console log)"

    def wait_for_console(self, pattern: str, timeout: float) -> re.Match[str]:
        """Wait until the serial console shows ``pattern`` (a regex)."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            self.check_running()
            m = rx.search(self.console_text())
            if m:
                return m
            time.sleep(2)
        raise AssertionError(f"the console did not show {pattern!r} within {timeout:.0f} s\n"
                             + self.console_tail())

    def check_running(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise AssertionError(f"qemu exited ({self.proc.returncode}): {err}\n"
                                 + self.console_tail())


def boot(tmp: Path, card: Card, machine: Machine, *, extra_cmdline: str = "",
         before_start: Callable[[Vm], None] | None = None) -> Vm:
    """Start QEMU on the card (paused; ``before_start`` may set links through the monitor,
    then it runs), its NIC on QEMU's user network with the node's ports forwarded to
    127.0.0.1 only."""
    ports = {"ssh": free_port(), "mqtt": free_port(), "mqtts": free_port(),
             "coap": free_port(socket.SOCK_DGRAM)}
    # Not restrict=on: libslirp then drops every UDP datagram from the guest but DHCP and
    # TFTP, the CoAP answers through the UDP forward included.
    fwd = ",".join([f"hostfwd=tcp:127.0.0.1:{ports['ssh']}-:22",
                    f"hostfwd=tcp:127.0.0.1:{ports['mqtt']}-:1883",
                    f"hostfwd=tcp:127.0.0.1:{ports['mqtts']}-:8883",
                    f"hostfwd=udp:127.0.0.1:{ports['coap']}-:5683"])
    vm = Vm(tmp, card, machine, ports)
    vm.console.unlink(missing_ok=True)
    # A QEMU that was killed (a power cut) leaves its socket: wait for the new one.
    vm.monitor_path.unlink(missing_ok=True)
    serial: list[str] = []
    for i in range(machine.console_serial + 1):
        serial += ["-serial", f"file:{vm.console}" if i == machine.console_serial else "null"]
    cmdline = machine.cmdline(card) + (f" {extra_cmdline}" if extra_cmdline else "")
    dtb = machine.dtb(card, tmp)
    drive = [a.format(img=card.img) for a in machine.drive]
    cmd = ["qemu-system-aarch64", *machine.args, "-display", "none", "-S",
           "-monitor", f"unix:{vm.monitor_path},server=on,wait=off", *serial,
           "-kernel", str(card.kernel), "-initrd", str(card.initrd), "-append", cmdline,
           *(["-dtb", str(dtb)] if dtb else []), *drive,
           "-netdev", f"user,id=n0,{fwd}", "-device", f"{machine.nic},netdev=n0",
           "-no-reboot"]
    vm.t0 = time.monotonic()
    vm.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not vm.monitor_path.exists():
            vm.check_running()
            assert time.monotonic() < deadline, "QEMU's monitor socket did not appear"
            time.sleep(0.2)
        if before_start is not None:
            before_start(vm)
        vm.monitor("cont")
    except BaseException:
        shutdown(vm)
        raise
    return vm


def wait_for_ssh(vm: Vm) -> None:
    while time.monotonic() - vm.t0 < BOOT_TIMEOUT_S:
        vm.check_running()
        if vm.ssh("true", check=False, timeout=30).returncode == 0:
            vm.timings["ssh_s"] = time.monotonic() - vm.t0
            return
        time.sleep(5)
    raise AssertionError(f"no SSH within {BOOT_TIMEOUT_S:.0f} s\n" + vm.console_tail())


def wait_for_node(vm: Vm) -> None:
    """fog-appliance.service is Type=notify: 'active' means it told systemd READY=1."""
    deadline = time.monotonic() + 600
    state = ""
    while time.monotonic() < deadline:
        state = vm.ssh("systemctl is-active fog-appliance.service", check=False).stdout
        if state.strip() in ("active", "failed"):
            break
        time.sleep(5)
    if state.strip() != "active":
        log = vm.ssh("sudo journalctl -b -u fog-firstboot -u fog-appliance --no-pager "
                     "| tail -n 60", check=False).stdout
        raise AssertionError(f"fog-appliance.service is {state.strip()!r}:\n{log}")
    vm.timings["ready_s"] = time.monotonic() - vm.t0


def shutdown(vm: Vm) -> None:
    if vm.proc is None:
        return
    if vm.proc.poll() is None:
        if vm.ssh("sudo systemctl poweroff", check=False, timeout=30).returncode != 0:
            pass  # not reachable: killed below
        try:
            vm.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            vm.proc.kill()
            vm.proc.wait()
    if vm.proc.stderr:
        vm.proc.stderr.close()


@contextmanager
def running(vm: Vm) -> Iterator[Vm]:
    """Shut the VM down however the block ends; print the console's tail on a failure."""
    try:
        yield vm
    except BaseException:
        print("---- console (tail) ----\n" + vm.console_tail())
        raise
    finally:
        shutdown(vm)


# ----------------------------------------------------------------- checks from the host


def failed_units(vm: Vm) -> str:
    return vm.ssh("systemctl list-units --failed --plain --no-legend").stdout.strip()


def fsck_journal(vm: Vm) -> str:
    """The initramfs's check of the root file system, as fog-fsck-log.service put it in
    the journal."""
    return vm.ssh("sudo journalctl -b -t fsck-root --no-pager -o cat").stdout


def bundle(vm: Vm, device: str) -> dict[str, Any]:
    out = vm.ssh(f"sudo cat /var/lib/fog-appliance/devices/{device}.json").stdout
    data: dict[str, Any] = json.loads(out)
    return data


def mqtt_connect(port: int, user: str, password: str, ca_pem: str | None = None,
                 tmp: Path | None = None) -> int:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{user}-{time.monotonic_ns()}")
    client.username_pw_set(user, password)
    if ca_pem is not None:
        assert tmp is not None
        (tmp / "ca.pem").write_text(ca_pem)
        client.tls_set(ca_certs=str(tmp / "ca.pem"), cert_reqs=ssl.CERT_REQUIRED)
    done = threading.Event()
    codes: list[int] = []

    def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        codes.append(rc.value)
        done.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port, keepalive=20)
    client.loop_start()
    try:
        assert done.wait(60), "no CONNACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return codes[0]

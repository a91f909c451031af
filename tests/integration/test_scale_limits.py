"""What 1,000s of edges need of the broker's process limits (issue 19): a private Mosquitto
gets the hard open-files limit whatever soft limit its owner runs with, and holds more
clients than that soft limit; the appliance's Mosquitto unit raises it too. Real broker."""

from __future__ import annotations

import asyncio
import configparser
import resource
from pathlib import Path

import psutil
import pytest

from fog_appliance.broker import BrokerFiles, PrivateBroker, hash_password, render_acl

REPO = Path(__file__).resolve().parents[2]
DROP_IN = REPO / "image/common/overlay/usr/lib/systemd/system/mosquitto.service.d/" \
    "fog-appliance.conf"

LOW_SOFT = 64
CLIENTS = 160


def _soft_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open files line in /proc/PID/limits")


async def _connect(host: str, port: int, user: str, password: str
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An MQTT 3.1.1 CONNECT; returns once the broker's CONNACK (accepted) arrives."""
    def s(x: str) -> bytes:
        return len(x).to_bytes(2, "big") + x.encode()

    body = s("MQTT") + bytes([4, 0xC2]) + (60).to_bytes(2, "big") + s(user) + s(user) \
        + s(password)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(bytes([0x10, len(body)]) + body)
    connack = await reader.readexactly(4)
    assert connack == b"\x20\x02\x00\x00", connack
    return reader, writer


@pytest.mark.mosquitto
async def test_private_broker_takes_the_hard_limit_and_more_clients(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2 * CLIENTS:
        pytest.skip(f"the hard open-files limit ({hard}) is too low for this test")
    files = BrokerFiles(tmp_path / "broker")
    files.root.mkdir()
    users = [f"d{i:03d}" for i in range(CLIENTS)]
    files.passwd.write_text("".join(f"{u}:{hash_password('pw-' + u)}\n" for u in users))
    files.acl.write_text(render_acl("t1", users))
    broker = PrivateBroker(files)
    resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_SOFT, hard))
    try:
        await broker.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    conns: list[asyncio.StreamWriter] = []
    try:
        pid = broker.running_pid
        assert pid is not None
        assert _soft_limit(pid) == (hard if hard != resource.RLIM_INFINITY else _soft_limit(pid))
        async with asyncio.timeout(60):
            for u in users:  # more clients than the owner's soft limit: each is one fd
                conns.append((await _connect(broker.host, broker.port, u, "pw-" + u))[1])
        assert psutil.Process(pid).num_fds() > CLIENTS > LOW_SOFT
    finally:
        for w in conns:
            w.close()
        broker.stop()


def test_appliance_mosquitto_unit_raises_the_open_files_limit() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(DROP_IN.read_text())
    limit = unit.get("Service", "LimitNOFILE", fallback="")
    assert limit, "the Mosquitto drop-in sets no LimitNOFILE: systemd's soft 1024 applies"
    soft = int(limit.split(":")[0])
    assert soft >= 20_000, f"LimitNOFILE={limit} holds fewer than 10,000 edges with margin"

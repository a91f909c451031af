"""sd_notify over a real Unix datagram socket, as systemd's side of it would see it."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fog_appliance.node import sdnotify


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(2)
    yield s, str(path)
    s.close()


def test_notify_sends_the_state_as_one_datagram(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    assert sdnotify.notify("READY=1\nSTATUS=serving", {"NOTIFY_SOCKET": path})
    assert sock.recv(4096) == b"READY=1\nSTATUS=serving"


def test_notify_abstract_namespace() -> None:
    name = f"fog-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        s.settimeout(2)
        assert sdnotify.notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name})
        assert s.recv(64) == b"WATCHDOG=1"


@pytest.mark.parametrize("value", ["", "relative/path", "vsock:2:1234"])
def test_notify_without_a_usable_socket_is_a_no_op(value: str) -> None:
    assert not sdnotify.notify("READY=1", {"NOTIFY_SOCKET": value} if value else {})


def test_notify_to_a_vanished_socket_returns_false(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    assert not sdnotify.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert "systemd was not told 'READY=1'" in caplog.text


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"WATCHDOG_USEC": "30000000"}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "-5"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "me"}, None),
])
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert sdnotify.watchdog_interval(env) == expected


class Ticks:
    """A stand-in for asyncio.sleep that stops the loop after ``n`` periods."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.periods: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.periods.append(seconds)
        if len(self.periods) >= self.n:
            raise asyncio.CancelledError
        await asyncio.sleep(0)


async def test_watchdog_pings_while_healthy() -> None:
    sent: list[str] = []
    checks = 0

    async def healthy() -> None:
        nonlocal checks
        checks += 1

    ticks = Ticks(3)
    with pytest.raises(asyncio.CancelledError):
        await sdnotify.watchdog(30.0, healthy, send=lambda s: sent.append(s) is None,
                                sleep=ticks)
    assert sent == ["WATCHDOG=1"] * 3
    assert checks == 3
    assert ticks.periods == [10.0] * 3


async def test_watchdog_skips_the_ping_when_the_check_hangs_or_fails(
        caplog: pytest.LogCaptureFixture) -> None:
    sent: list[str] = []
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.Event().wait()  # hangs past the period
        if calls == 2:
            raise RuntimeError("database thread gone")

    with pytest.raises(asyncio.CancelledError):
        await sdnotify.watchdog(0.03, flaky, send=lambda s: sent.append(s) is None,
                                sleep=Ticks(3))
    assert sent == ["WATCHDOG=1"]  # only the third, healthy check pinged
    assert "health check took longer" in caplog.text
    assert "database thread gone" in caplog.text


async def test_watchdog_against_a_real_socket(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener

    async def healthy() -> None:
        return None

    with pytest.raises(asyncio.CancelledError):
        await sdnotify.watchdog(
            3.0, healthy, send=lambda s: sdnotify.notify(s, {"NOTIFY_SOCKET": path}),
            sleep=Ticks(2))
    assert [sock.recv(64), sock.recv(64)] == [b"WATCHDOG=1", b"WATCHDOG=1"]

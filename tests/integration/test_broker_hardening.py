"""The broker every config of the project writes (one generator, ``broker/conf.py``), against a
real Mosquitto: client ids bound to user names (issue 13, item 1) and packets bounded by
the frame limit (issue 12, item 7)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest

from fog_appliance.app import FogNode
from fog_appliance.appliance.mosquitto import render_system_conf
from fog_appliance.appliance.tls import TlsFiles
from fog_appliance.broker import (
    BrokerFiles,
    BrokerLimits,
    PrivateBroker,
    broker_limits,
    fog_username,
    hash_password,
    render_acl,
    render_conf,
    render_passwd,
)
from fog_appliance.config import FogConfig, replace
from fog_appliance.protocol import topics
from fog_appliance.support.secretfile import write_atomic
from tests.conftest import add_device, make_config

pytestmark = pytest.mark.mosquitto

FRAME_LIMIT = 64 * 1024


def _settings(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and not line.startswith("listener"):
            key, _, value = line.partition(" ")
            out.setdefault(key, value)
    return out


def _listener_blocks(text: str) -> list[str]:
    return text.split("\nlistener ")[1:]


def test_private_and_system_broker_share_one_generator(tmp_path: Path) -> None:
    cfg = replace(FogConfig(), {
        "fog_node.data_dir": str(tmp_path),
        "edge_interface.max_frame_bytes": 2 * 1024 * 1024,
    })
    ei = cfg.edge_interface
    limits = broker_limits(ei.max_frame_bytes, ei.mqtt_blob_max_bytes)
    private = _settings(render_conf(BrokerFiles(tmp_path / "broker"), "127.0.0.1", 1999,
                                    limits=limits))
    system = _settings(render_system_conf(cfg, TlsFiles(tmp_path / "tls")))
    shared = ("use_username_as_clientid", "max_queued_messages", "max_queued_bytes",
              "max_inflight_messages", "max_packet_size",
              "allow_anonymous", "per_listener_settings")
    assert {k: private[k] for k in shared} == {k: system[k] for k in shared}
    assert private["use_username_as_clientid"] == "true"
    assert int(private["max_packet_size"]) == 2 * 1024 * 1024 + 64 * 1024
    assert 0 < int(private["max_queued_bytes"]) <= 64 * 1024 * 1024
    # A listener setting in Mosquitto 2.0: it must be in every listener's block.
    system_text = render_system_conf(cfg, TlsFiles(tmp_path / "tls"))
    assert len(_listener_blocks(system_text)) == 2
    assert all("\nuse_username_as_clientid true" in b for b in _listener_blocks(system_text))


@pytest.fixture
async def small_node(tmp_path: Path) -> AsyncIterator[FogNode]:
    cfg = make_config(tmp_path)
    cfg = replace(cfg, {
        "edge_interface.max_frame_bytes": FRAME_LIMIT,
        "edge_interface.mqtt_blob_max_bytes": 0,
    })
    n = FogNode(cfg)
    async with n.running():
        yield n


async def test_broker_refuses_a_packet_over_the_frame_limit(small_node: FogNode) -> None:
    node = small_node
    dev = await add_device(node, "big1")
    host, port = node.mqtt.s.host, node.mqtt.s.port
    fog = node.cfg.fog_node.id
    async with aiomqtt.Client(host, port, username=dev.mqtt_username,
                              password=dev.mqtt_password, identifier="big1") as c:
        await c.publish(topics.hello(fog, "big1"), b"x" * FRAME_LIMIT, qos=1)  # fits
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(host, port, username=dev.mqtt_username,
                                  password=dev.mqtt_password, identifier="big1",
                                  timeout=10) as c:
            await c.publish(topics.up(fog, "big1"), b"x" * (FRAME_LIMIT + 128 * 1024), qos=1)
            await asyncio.sleep(5)  # the broker cuts the connection at once
            await c.publish(topics.hello(fog, "big1"), b"after", qos=1)


async def test_a_device_cannot_take_over_the_fogs_or_another_devices_session(
        node: FogNode) -> None:
    a = await add_device(node, "devA")
    b = await add_device(node, "devB")
    host, port = node.mqtt.s.host, node.mqtt.s.port
    fog = node.cfg.fog_node.id
    assert node.mqtt.s.client_id == fog_username(fog)
    connects = node.mqtt.connects
    async with aiomqtt.Client(host, port, username=b.mqtt_username, password=b.mqtt_password,
                              identifier="devB") as victim:
        # A, with its own credentials, claims the fog's client ids (today's and the old
        # one) and B's.
        for stolen in (fog_username(fog), f"fog-{fog}-intake", "devB"):
            async with aiomqtt.Client(host, port, username=a.mqtt_username,
                                      password=a.mqtt_password, identifier=stolen,
                                      clean_session=False) as thief:
                await thief.publish(topics.hello(fog, "devA"), b"{}", qos=1)
                await asyncio.sleep(0.5)
        # B was not kicked off: its QoS 1 publish still gets its PUBACK.
        await victim.publish(topics.hello(fog, "devB"), b"still here", qos=1)
    # Nor was the fog: same connection, no reconnect.
    assert node.mqtt.connected.is_set()
    assert node.mqtt.connects == connects


async def _queued_for_offline_subscriber(root: Path, limits: BrokerLimits, n: int,
                                         size: int) -> int:
    """Publish ``n`` QoS 1 messages of ``size`` bytes while a persistent subscriber is
    offline; count how many the broker kept for it."""
    files = BrokerFiles(root)
    files.root.mkdir(parents=True)
    write_atomic(files.passwd, render_passwd([("fog-q", hash_password("fpw")),
                                              ("dev1", hash_password("dpw"))]))
    write_atomic(files.acl, render_acl("q", ["dev1"]))
    broker = PrivateBroker(files, limits=limits)
    await broker.start()
    try:
        sub = {"hostname": broker.host, "port": broker.port, "username": "fog-q",
               "password": "fpw", "identifier": "fog-q", "clean_session": False}
        async with aiomqtt.Client(**sub) as c:  # type: ignore[arg-type]
            await c.subscribe(topics.up("q", "+"), qos=1)
        async with aiomqtt.Client(broker.host, broker.port, username="dev1", password="dpw",
                                  identifier="dev1") as dev:
            for _ in range(n):
                await dev.publish(topics.up("q", "dev1"), b"u" * size, qos=1)
        got = 0
        async with aiomqtt.Client(**sub) as c:  # type: ignore[arg-type]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(3):
                    async for _ in c.messages:
                        got += 1
        return got
    finally:
        broker.stop()


async def test_max_queued_bytes_bounds_what_waits_for_an_offline_fog(tmp_path: Path) -> None:
    """40 × 4 MiB for an offline fog took Mosquitto from 8 to 172 MiB: the queue of one
    client is now bounded in bytes (here scaled down: 20 × 256 KiB against 1 MiB)."""
    small = BrokerLimits(max_packet=512 * 1024, max_queued_bytes=1024 * 1024)
    kept = await _queued_for_offline_subscriber(tmp_path / "a", small, 20, 256 * 1024)
    assert 1 <= kept <= 5
    # The same backlog under a bound that holds it all is delivered in full.
    roomy = BrokerLimits(max_packet=512 * 1024, max_queued_bytes=64 * 1024 * 1024)
    assert await _queued_for_offline_subscriber(tmp_path / "b", roomy, 20, 256 * 1024) == 20

"""Hypothesis-generated garbage against a running node: every transport, thousands of
inputs. The node answers each with a specific rejection, stays up, and the update it had
accepted before is still there, unchanged and counted once."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fog_appliance.app import FogNode
from fog_appliance.client import DeviceCredentials
from fog_appliance.errors import Reason, RejectedError
from fog_appliance.protocol import topics
from fog_appliance.protocol.frame import encode_update
from tests.conftest import HAVE_MOSQUITTO, make_config


@dataclass
class Live:
    node: FogNode
    loop: asyncio.AbstractEventLoop
    creds: DeviceCredentials
    frame: bytes

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    cfg = make_config(tmp_path_factory.mktemp("garbage"), mqtt=HAVE_MOSQUITTO, threshold=1000)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def main() -> None:
        node = FogNode(cfg)
        async with node.running():
            holder["node"] = node
            holder["stop"] = asyncio.Event()
            ready.set()
            await holder["stop"].wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(30), "node did not start"
    node: FogNode = holder["node"]

    def call(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(30)

    creds = DeviceCredentials.from_dict(call(node.provision("g1")))
    frame = encode_update(device_id="g1", key=creds.key, model_version=1, round=1, seq=1,
                          num_samples=7, local_steps=1,
                          tensors=[np.full(s, 0.25, np.float32) for s in node.coordinator.shapes])
    live = Live(node, loop, creds, frame)
    accepted = live.call(node.intake.submit_update(frame, "coap"))
    assert not accepted.duplicate
    yield live
    loop.call_soon_threadsafe(holder["stop"].set)
    thread.join(30)
    loop.close()


def assert_intact(live: Live) -> None:
    rows = live.call(live.node.db.run(lambda: list(live.node.store.round_updates(1))))
    assert [(r.device_id, r.seq, r.frame) for r in rows] == [("g1", 1, live.frame)]
    assert live.node.coordinator.round.count == 1


@settings(max_examples=2500, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.binary(max_size=3000))
def test_intake_garbage(live: Live, data: bytes) -> None:
    with pytest.raises(RejectedError):
        live.call(live.node.intake.submit_update(data, "coap"))


@settings(max_examples=500, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.binary(max_size=1500))
def test_hello_garbage(live: Live, data: bytes) -> None:
    with pytest.raises(RejectedError):
        live.call(live.node.intake.submit_hello(data, "coap"))


@settings(max_examples=600, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(datagram=st.binary(max_size=1200))
def test_coap_datagram_garbage(live: Live, datagram: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(datagram, ("127.0.0.1", live.node.coap_port or 0))


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(payload=st.binary(max_size=900))
def test_coap_post_garbage(live: Live, payload: bytes) -> None:
    from tests.coap_raw import coap_post

    resp = live.call(coap_post(live.node.coap_port or 0, "/update", payload))
    assert resp.code.class_ == 4, resp
    assert resp.payload.split(b":")[0].decode() in {r.value for r in Reason}


@pytest.mark.mosquitto
def test_mqtt_garbage_is_counted(live: Live) -> None:
    node = live.node
    fog = node.cfg.fog_node.id
    before = sum(node.intake.counters.rejected.values())
    rng = np.random.default_rng(7)  # seeded random payloads: publishing is slow for hypothesis
    msgs = [rng.bytes(int(rng.integers(0, 2000))) for _ in range(300)]
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="g1-garbage")
    c.username_pw_set(live.creds.mqtt_username, live.creds.mqtt_password)
    c.connect(node.mqtt.s.host, node.mqtt.s.port)
    c.loop_start()
    try:
        for m in msgs:
            c.publish(topics.up(fog, "g1"), m, qos=1).wait_for_publish(10)
            c.publish(topics.hello(fog, "g1"), m, qos=1).wait_for_publish(10)
    finally:
        c.loop_stop()
        c.disconnect()
    deadline = live.loop.time() + 30

    async def settled() -> int:
        while sum(node.intake.counters.rejected.values()) < before + 600:
            if live.loop.time() > deadline:
                break
            await asyncio.sleep(0.05)
        return sum(node.intake.counters.rejected.values())

    assert live.call(settled()) == before + 600


def test_node_is_intact_after_all_that(live: Live) -> None:
    assert_intact(live)
    still = live.call(live.node.intake.submit_update(live.frame, "coap"))
    assert still.duplicate

"""The firmware's side of issue 13 items 8 and 11 (edge_firmware/device/msgauth.py): the
real device code (Edge, Uplink, umqtt.simple over CPython sockets, edge_firmware/hostsim)
against a real Mosquitto with the fog's auth files. The test plays both the fog (signing
with the device key, as fog_appliance does) and a host on the path that injects messages
into the device's subscriptions (unsigned, signed with another key, or replayed): both
publish with the fog's broker user, which is what an injector on a plain link can do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fog_appliance.broker import fog_password
from fog_appliance.devices.provisioning import broker_files
from fog_appliance.protocol import downlink, topics
from fog_appliance.protocol.messages import ModelAnnouncement, down_message
from tests.firmware_support import firmware
from tests.integration.test_firmware_mqtt import FogClient

pytestmark = [pytest.mark.mosquitto, pytest.mark.usefixtures("fast_retries")]


def _announcement(round_id: int, sha: str) -> bytes:
    return ModelAnnouncement("lab", round_id, round_id, sha, 100,
                             {"kind": "softmax", "input_dim": 8, "hidden": [],
                              "num_classes": 3}, {"lr": 0.1}).to_json()


def _hellos(f: FogClient) -> list[int]:
    return [json.loads(p[:-32])["ctr"] for t, p in f.got if t == topics.hello("lab", "esp-1")]


def test_the_firmware_drops_forged_and_replayed_messages(fog: Any, tmp_path: Path) -> None:
    cfg, conf, broker = fog
    settings, flashstate, edgeloop, board = (firmware(m) for m in (
        "settings", "flashstate", "edgeloop", "board"))
    conf = settings.validate(dict(conf, edge={"wait_s": 5, "io_timeout_s": 5,
                                              "watchdog_s": 0}))
    key = conf["key_bytes"]
    (tmp_path / "flash").mkdir()
    st = flashstate.State(str(tmp_path / "flash") + "/")
    f = FogClient(broker.port, fog_password(broker_files(cfg)))
    edge = edgeloop.Edge(conf, st, board.Board(conf["edge"]), None)
    down = topics.down("lab", "esp-1")
    genuine = _announcement(4, "ab" * 32)
    digest = downlink.announcement_digest(genuine)
    try:
        f.publish(topics.model("lab"), genuine, retain=True)
        edge.connect()
        edge.hello()
        assert edge.link.wait(lambda: len(_hellos(f)) == 1, 5000)
        ctr = _hellos(f)[0]
        # the on-path host: a welcome and a redirect it made up, one signed with another key
        redirect = down_message("redirect", host="127.0.0.1", port=1884, fog_id="evil",
                                transport="mqtt", ctr=ctr)
        for payload in (down_message("welcome", device="esp-1", ctr=ctr, announcement="0" * 64,
                                     role="offload"),
                        redirect, downlink.sign(redirect, b"k" * 32)):
            f.publish(down, payload)
        assert edge.link.wait(lambda: edge.auth.dropped == 3, 5000)
        edge.service()
        assert edge.redirect_to is None and st.redirect is None and st.role is None
        assert edge.auth.named is None and edge.auth.answered == 0
        # the fog's own welcome, echoing the hello's counter: taken
        welcome = downlink.signed_down("welcome", key, device="esp-1", fog="lab", ctr=ctr,
                                       model_version=4, round=4, sha256="ab" * 32,
                                       announcement=digest, last_seq=0, role="train")
        f.publish(down, welcome)
        assert edge.link.wait(edge.has_control, 5000)
        edge.service()
        assert edge.auth.named == digest and edge.auth.answered == ctr
        assert edge.new_round() is not None  # the announcement the welcome names
        # the same welcome again (replayed): dropped
        f.publish(down, welcome)
        assert edge.link.wait(edge.has_control, 5000)
        edge.service()
        assert edge.auth.dropped == 4
        # a retained model announcement of the on-path host's: the board asks the fog once
        forged = _announcement(5, "cd" * 32)
        f.publish(topics.model("lab"), forged, retain=True)
        assert edge.link.wait(lambda: edge.link.announcement_sha != digest, 5000)
        assert edge.new_round() is None
        assert edge.link.wait(lambda: len(_hellos(f)) == 2, 5000)
        ctr2 = _hellos(f)[1]
        assert ctr2 > ctr
        f.publish(down, downlink.signed_down("welcome", key, device="esp-1", fog="lab",
                                             ctr=ctr2, model_version=4, round=4,
                                             sha256="ab" * 32, announcement=digest,
                                             last_seq=0, role="train"))
        assert edge.link.wait(edge.has_control, 5000)
        edge.service()
        assert edge.auth.dropped == 5  # the announcement no welcome names
        assert edge.new_round() is None and edge.new_round() is None
        edge.link.wait(lambda: False, 300)
        assert len(_hellos(f)) == 2  # asked once, not in a loop
    finally:
        if edge.link is not None:
            edge.link.close()
        f.close()

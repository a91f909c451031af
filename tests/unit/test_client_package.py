"""The edge client as its own small package: it imports none of the node's heavy
dependencies, persists its sequence counter durably (fsync, rename, fsync of the directory)
so a crash between write and rename keeps the old state, refuses what it cannot use with a
ClientError, and takes its retry delays from ``fog_appliance.support.backoff``.

The only fault injection here is at the OS boundary: ``os.replace`` made to kill the process
(a power cut between write and rename) and ``os.fsync`` / ``os.replace`` wrapped to record
the order of the calls (they still run)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fog_appliance.client import (
    TRANSPORTS,
    ClientError,
    DeviceCredentials,
    FLClient,
    GlobalModel,
    transport_name,
)
from fog_appliance.model.spec import ModelSpec

HEAVY = ("onnxruntime", "onnx", "scipy", "dp_accounting", "psutil", "sqlite_utils",
         "textual", "flwr", "sklearn", "matplotlib")

CONF = {"device_id": "d1", "fog_id": "f", "key": "11" * 32,
        "mqtt": {"host": "127.0.0.1", "port": 1, "username": "d1", "password": "pw"},
        "coap": {"host": "127.0.0.1", "port": 1}}
SPEC = ModelSpec("softmax", 4, (), 3)
MODEL = GlobalModel(1, 1, [np.zeros(s, np.float32) for s in SPEC.shapes], SPEC, {}, "00")


def encode_one(client: FLClient) -> int:
    seq, _ = client.encode([np.zeros(s, np.float32) for s in SPEC.shapes], num_samples=1,
                           local_steps=1, model=MODEL)
    return seq


def test_the_client_imports_none_of_the_nodes_heavy_dependencies() -> None:
    """In a fresh interpreter where importing any of them fails (as on an edge that has
    only the client's dependencies), the package and both transports import, and an FLClient
    is built for each transport; none of them is in ``sys.modules`` afterwards."""
    script = textwrap.dedent(f"""
        import importlib.abc, sys
        HEAVY = {HEAVY!r}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in HEAVY:
                    raise ImportError(f"{{name}} is not installed on this edge")
                return None
        sys.meta_path.insert(0, Block())
        import fog_appliance.client as c
        import fog_appliance.client.coap, fog_appliance.client.mqtt
        creds = c.DeviceCredentials.from_dict({CONF!r})
        for t in ("mqtt", "coap"):
            c.FLClient(creds, transport=t)
        print(sorted(m for m in sys.modules if m.split(".")[0] in HEAVY))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_coap_edge_needs_no_mqtt_library() -> None:
    """A CoAP-only edge (no aiomqtt, no paho installed) imports the package and runs a
    CoAP client; asking for MQTT there is a ClientError that names the missing library."""
    script = textwrap.dedent(f"""
        import asyncio, importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("aiomqtt", "paho"):
                    raise ImportError(f"{{name}} is not installed on this edge")
                return None
        sys.meta_path.insert(0, Block())
        import fog_appliance.client as c
        creds = c.DeviceCredentials.from_dict({CONF!r})
        async def main():
            async with c.FLClient(creds, transport="coap", timeout=1):
                pass
        asyncio.run(main())
        try:
            c.FLClient(creds, transport="mqtt")
        except c.ClientError as exc:
            print("mqtt:", exc)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("mqtt: the MQTT transport needs aiomqtt, which this edge "
                                  "lacks (aiomqtt is not installed on this edge); install it "
                                  "or use transport='coap'")


def test_the_sequence_state_is_fsynced_before_and_after_the_rename(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        calls.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    client = FLClient(DeviceCredentials.from_dict(CONF), transport="coap",
                      state_path=tmp_path / "d1.state")
    assert encode_one(client) == 1
    assert calls == ["fsync file", "rename", "fsync dir"]
    assert json.loads((tmp_path / "d1.state").read_text()) == {"seq": 1}


def test_a_crash_between_write_and_rename_keeps_the_old_state(tmp_path: Path) -> None:
    state = tmp_path / "d1.state"
    state.write_text(json.dumps({"seq": 41}))
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).parents[2])!r})
        from tests.unit.test_client_package import CONF, encode_one
        from fog_appliance.client import DeviceCredentials, FLClient
        client = FLClient(DeviceCredentials.from_dict(CONF), transport="coap",
                          state_path={str(state)!r})
        def power_cut(src, dst):
            os._exit(17)
        os.replace = power_cut
        encode_one(client)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 17, out.stderr
    assert json.loads(state.read_text()) == {"seq": 41}  # the old state, whole
    # the next run reads the old state (and the leftover temporary file does not matter)
    client = FLClient(DeviceCredentials.from_dict(CONF), transport="coap", state_path=state)
    assert client.seq == 41
    assert encode_one(client) == 42
    assert json.loads(state.read_text()) == {"seq": 42}


def test_a_state_that_cannot_be_written_is_a_client_error_and_uses_no_number(
        tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("")
    client = FLClient(DeviceCredentials.from_dict(CONF), transport="coap",
                      state_path=tmp_path / "not-a-dir" / "d1.state")
    with pytest.raises(ClientError, match="cannot persist the sequence number"):
        encode_one(client)
    assert client.seq == 0


@pytest.mark.parametrize("text", ["{", '{"seq": "7"}', '{"seq": -1}', '{"seq": true}', "[]"])
def test_an_unusable_state_file_is_refused(tmp_path: Path, text: str) -> None:
    (tmp_path / "d1.state").write_text(text)
    with pytest.raises(ClientError, match=r"d1\.state"):
        FLClient(DeviceCredentials.from_dict(CONF), transport="coap",
                 state_path=tmp_path / "d1.state")


def test_an_unknown_transport_is_refused() -> None:
    """On main any name but "mqtt" meant CoAP, silently."""
    with pytest.raises(ClientError, match="unknown transport 'http'"):
        FLClient(DeviceCredentials.from_dict(CONF), transport="http")  # type: ignore[arg-type]
    with pytest.raises(ClientError, match="unknown transport 'MQTT'"):
        transport_name("MQTT")
    assert [transport_name(t) for t in TRANSPORTS] == ["mqtt", "coap"]


def test_retry_delays_come_from_backoff() -> None:
    """Following a redirect waits 0.25 s doubling to 2 s between attempts (± 10 % jitter),
    sending an update 0.25 s doubling to 5 s: both from ``backoff_delays``."""
    from fog_appliance.client import flclient

    follow = [next(d) for d in [flclient.follow_delays()] for _ in range(5)]
    for got, want in zip(follow, [0.25, 0.5, 1.0, 2.0, 2.0], strict=True):
        assert want * 0.9 <= got <= want * 1.1
    sends = flclient.send_delays()
    for want in [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]:
        assert want * 0.9 <= next(sends) <= want * 1.1

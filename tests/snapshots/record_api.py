"""Record what a real fog node's admin API answers, for the console's snapshot tests.

    PYTHONPATH=. python3 tests/snapshots/record_api.py

Starts a node on loopback (CoAP, temporary store), provisions edges, runs three rounds with
real signed updates, records accuracies as an evaluator would, revokes one edge (after its
hello on 12% battery placed it as offload), runs a few inference requests, and saves
every answer the console reads to ``tests/fixtures/console/api.json``. Every section is the
node's own (privacy with a DP budget, so that page has something to draw).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from fog_appliance.config import replace

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "console" / "api.json"
READS = ["/api/status", "/api/edges", "/api/rounds?limit=100", "/api/models",
         "/api/settings", "/api/events?tail=200", "/api/sections/resources",
         "/api/sections/inference", "/api/sections/privacy", "/api/sections/cache",
         "/api/problems"]


async def record(out: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from fog_appliance.app import FogNode
    from tests.admin_support import node_config, send_update
    from textual_ui.client import AdminClient, Endpoint

    with tempfile.TemporaryDirectory() as tmp:
        cfg = node_config(Path(tmp) / "var", threshold=3)
        cfg = replace(cfg, {
            "privacy.dp_epsilon": 8.0,
            "aggregation.clip_norm": 1.0,
            "aggregation.weighting": "uniform",
        })
        node = FogNode(cfg)
        async with node.running():
            assert node.admin is not None and node.admin.socket is not None
            async with AdminClient(Endpoint(socket=node.admin.socket), actor="console") as api:
                confs = [(await api.provision(f"press-{i:02d}"))["config"] for i in range(5)]
                for rnd in range(3):
                    for i, conf in enumerate(confs[:3]):
                        await send_update(conf, Path(tmp), battery=95 - 15 * i,
                                          rng_seed=10 * rnd + i)
                    await node.coordinator.wait_closed()
                    await asyncio.sleep(0.2)
                    version = node.coordinator.model.version
                    await api.record_metrics(version, {"accuracy": 0.52 + 0.11 * rnd})
                await send_update(confs[3], Path(tmp), battery=12)
                await api.revoke("press-04")
                # valve-05's board has another device's key: every update is rejected
                wrong = {**(await api.provision("valve-05"))["config"], "key": confs[0]["key"]}
                await send_wrongly_signed(wrong, Path(tmp), 3)
                # rejections are stored with the next committed batch
                await send_update(confs[1], Path(tmp), battery=80, rng_seed=99)
                await api.provision("door-06")  # never seen
                # the inference service's own engine answers a few requests (rate, latency)
                import numpy as np

                engine = node.serving.inference
                assert engine is not None
                for _ in range(24):
                    await engine.infer(np.zeros((2, node.serving.spec.input_dim), np.float32))
                await asyncio.sleep(cfg.resources.sample_interval_s + 0.5)  # gauges drawn
                answers = {path: await api.get(path) for path in READS}
    text = json.dumps(answers, indent=1, sort_keys=True) + "\n"
    await asyncio.to_thread(out.write_text, text)
    print(f"recorded {len(answers)} answers in {out}")


async def send_wrongly_signed(conf: dict[str, Any], state_dir: Path, n: int) -> None:
    """``n`` updates from a board that holds the wrong key (no hello: it would be refused
    before the update, as from a sender the node cannot tell)."""
    import numpy as np

    from fog_appliance.client import ClientError, DeviceCredentials, FLClient, GlobalModel
    from fog_appliance.model.spec import ModelSpec
    from fog_appliance.protocol.messages import ModelAnnouncement

    async with FLClient(DeviceCredentials.from_dict(conf), transport="coap",
                        state_path=state_dir / "wrong.state", timeout=10.0) as client:
        # Such a board cannot verify the fog's welcome, so FLClient.model() would refuse
        # to use any model: it sends what it has regardless, for the round announced.
        ann = ModelAnnouncement.from_json(await coap_get(client.creds, "/model?meta"))
        spec = ModelSpec.from_dict(ann.spec)
        model = GlobalModel(ann.version, ann.round,
                            [np.zeros(s, np.float32) for s in spec.shapes], spec,
                            dict(ann.config), ann.sha256)
        for _ in range(n):
            delta = [np.zeros(w.shape, np.float32) for w in model.weights]
            with contextlib.suppress(ClientError):
                await client.send_update(delta, num_samples=10, local_steps=5, model=model)


async def coap_get(creds: Any, path: str) -> bytes:
    """The payload of a CoAP GET to the device's fog node (unauthenticated, as a board
    with the wrong key would read it)."""
    import aiocoap

    ctx = await aiocoap.Context.create_client_context(transports=["udp6"])
    try:
        req = aiocoap.Message(code=aiocoap.GET,
                              uri=f"coap://{creds.coap_host}:{creds.coap_port}{path}")
        async with asyncio.timeout(10):
            resp = await ctx.request(req).response
        return bytes(resp.payload)
    finally:
        await ctx.shutdown()


if __name__ == "__main__":
    asyncio.run(record(OUT))

"""Shared helpers of the cache, inference and resources tests (issue 5)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from fog_appliance.model.spec import ModelSpec
from fog_appliance.protocol.messages import ModelAnnouncement
from fog_appliance.protocol.model_blob import encode_model, sha256_hex
from fog_appliance.resources.policy import Sample
from fog_appliance.rounds.coordinator import CurrentModel
from fog_appliance.store import ModelRow, Store

SPEC = ModelSpec("mlp", 8, (6,), 3)
GB = 1024**3


def weights(version: int, spec: ModelSpec = SPEC) -> list[np.ndarray]:
    """Distinct, deterministic weights for each version (biases non-zero too)."""
    rng = np.random.default_rng(version)
    return [rng.standard_normal(s).astype(np.float32) for s in spec.shapes]


def blob(version: int, spec: ModelSpec = SPEC) -> bytes:
    return encode_model(version, weights(version, spec))


def row(version: int, spec: ModelSpec = SPEC, provenance: str = "regional") -> ModelRow:
    b = blob(version, spec)
    return ModelRow(version, version - 1 or None, time.time(), sha256_hex(b), spec.to_dict(), b,
                    len(b), provenance, {"updates": version})


def current(version: int, round_id: int | None = None, spec: ModelSpec = SPEC) -> CurrentModel:
    """What the coordinator announces for ``version``."""
    b = blob(version, spec)
    sha = sha256_hex(b)
    rid = round_id if round_id is not None else version
    ann = ModelAnnouncement("fog-t", version, rid, sha, len(b), spec.to_dict(), {"lr": 0.1})
    return CurrentModel(version, rid, weights(version, spec), b, sha, ann)


def open_store(tmp_path: Path, versions: range | list[int] = range(1, 2),
               spec: ModelSpec = SPEC) -> Store:
    store = Store.open(tmp_path / "fog.db", synchronous="normal")
    for v in versions:
        store.put_model(row(v, spec))
    return store


def sample(cpu: float = 10.0, memory: float = 30.0, temperature: float | None = None,
           disk_free: int = 100 * GB, store_bytes: int = 10 * 1024**2) -> Sample:
    return Sample(ts=time.time(), cpu_percent=cpu, memory_percent=memory,
                  memory_available=4 * GB, temperature_c=temperature, disk_free=disk_free,
                  disk_total=200 * GB, store_bytes=store_bytes)


async def serve_coap(resources: dict[tuple[str, ...], Any]) -> tuple[Any, str]:
    """A real aiocoap server on a free loopback port with ``resources``; (context, base URI)."""
    import socket

    import aiocoap.resource

    from fog_appliance.broker import free_port
    from fog_appliance.intake.coap import start_server

    site = aiocoap.resource.Site()
    for path, res in resources.items():
        site.add_resource(list(path), res)
    port = free_port(socket.SOCK_DGRAM)
    ctx = await start_server(site, "127.0.0.1", port)
    return ctx, f"coap://127.0.0.1:{port}"

"""``fog-appliance simulate``: simulated edges against a node that already runs (to try the
appliance, or to drive the console in tests), with honest, slow, wrongly keyed and offline
boards.

Devices ``<prefix>-01`` … are provisioned in the node's store as ``fog-appliance provision``
does (the running node picks them up within a second), or reused if they are registered.
Each trains a softmax/MLP on its own slice of a synthetic data set shaped like the node's
model (class centres in ``model.input_dim`` dimensions) and sends one signed update per
round over CoAP or MQTT, through the public :class:`~fog_appliance.client.FLClient`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fog_appliance.client import (
    ClientError,
    DeviceCredentials,
    FLClient,
    TransportName,
    transport_name,
)
from fog_appliance.config import FogConfig
from fog_appliance.demo.edges import SimulatedEdge
from fog_appliance.devices.provisioning import device_config_path, provision
from fog_appliance.errors import ConfigError, ProvisioningError
from fog_appliance.store import Store
from fog_appliance.support.backoff import backoff_delays

KINDS = ("honest", "slow", "bad-key", "offline")


@dataclass(frozen=True, slots=True)
class SimOptions:
    edges: int = 8
    bad_keys: int = 0
    """Boards that sign with a key that is not theirs: every update is rejected
    (``bad_signature``), as after flashing one device's config onto another."""
    slow: int = 0
    slow_delay_s: float = 20.0
    offline: int = 0
    """Provisioned, never switched on (the console shows them "never seen", then silent)."""
    prefix: str = "sim"
    transport: str = "auto"
    duration_s: float | None = None
    seed: int = 0

    def check(self) -> None:
        special = self.bad_keys + self.slow + self.offline
        if not 1 <= self.edges <= 500:
            raise ConfigError("--edges", "edges", f"expected 1 to 500 edges, got {self.edges}")
        if min(self.bad_keys, self.slow, self.offline) < 0 or special > self.edges:
            raise ConfigError("--edges", "edges", f"--bad-keys, --slow and --offline "
                              f"({special}) must be at most --edges ({self.edges})")
        if self.slow_delay_s < 0 or (self.duration_s is not None and self.duration_s <= 0):
            raise ConfigError("--slow-delay", "simulate", "delays and --duration must be "
                              "positive")


def plan(opts: SimOptions) -> list[tuple[str, str]]:
    """(device id, kind) for every edge: the special ones last, in the order of KINDS."""
    kinds = (["honest"] * (opts.edges - opts.slow - opts.bad_keys - opts.offline)
             + ["slow"] * opts.slow + ["bad-key"] * opts.bad_keys + ["offline"] * opts.offline)
    width = max(2, len(str(opts.edges)))
    return [(f"{opts.prefix}-{i + 1:0{width}d}", kind) for i, kind in enumerate(kinds)]


def synthetic_data(input_dim: int, num_classes: int, n: int, seed: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points around ``num_classes`` fixed class centres (the same centres for every
    edge: seed 0), each edge with its own points and a skewed label mix."""
    centres = np.random.default_rng(0).normal(0.0, 1.0, (num_classes, input_dim))
    rng = np.random.default_rng(1000 + seed)
    mix = rng.dirichlet(np.full(num_classes, 0.5))
    y = rng.choice(num_classes, size=n, p=mix).astype(np.int64)
    x = (centres[y] + rng.normal(0.0, 0.6, (n, input_dim))).astype(np.float32)
    return x, y


def credentials(cfg: FogConfig, store: Store, device_id: str) -> dict[str, Any]:
    """The device's config: provisioned now, or read back if it is registered already."""
    try:
        conf, _ = provision(cfg, store, device_id)
        return conf
    except ProvisioningError as exc:
        if "already" not in str(exc):
            raise
    dev = store.device(device_id)
    if dev is not None and dev.revoked:
        raise ProvisioningError(f"device {device_id} is revoked; use another --prefix")
    path = device_config_path(cfg, device_id)
    try:
        conf = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ProvisioningError(f"device {device_id} is registered but its config {path} "
                                f"cannot be read ({exc}); use another --prefix") from None
    return dict(conf)


def transport_for(cfg: FogConfig, wanted: str) -> TransportName:
    """``wanted``, or for ``auto`` CoAP if the node serves it, else MQTT (ClientError for a
    name that is no transport)."""
    if wanted != "auto":
        return transport_name(wanted)
    return "coap" if cfg.coap.enabled else "mqtt"


async def run_simulation(cfg: FogConfig, store: Store, opts: SimOptions, state_dir: Path,
                         say: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
    """Run the edges until ``duration_s`` passes or the task is cancelled; their tallies."""
    opts.check()
    transport = transport_for(cfg, opts.transport)
    edges: dict[str, tuple[str, SimulatedEdge | None]] = {}
    async with contextlib.AsyncExitStack() as stack:
        for i, (device_id, kind) in enumerate(plan(opts)):
            conf = await asyncio.to_thread(credentials, cfg, store, device_id)
            if kind == "offline":
                edges[device_id] = (kind, None)
                continue
            if kind == "bad-key":
                conf = {**conf, "key": secrets.token_hex(len(bytes.fromhex(conf["key"])))}
            client = await stack.enter_async_context(FLClient(
                DeviceCredentials.from_dict(conf), transport=transport,
                state_path=state_dir / f"{device_id}.state", timeout=30.0))
            x, y = synthetic_data(cfg.model.input_dim, cfg.model.num_classes, 200,
                                  opts.seed * 1000 + i)
            edges[device_id] = (kind, SimulatedEdge(
                client, x, y, seed=opts.seed * 1000 + i, battery=90 - (7 * i) % 60,
                delay_s=opts.slow_delay_s if kind == "slow" else 0.0, fw=f"sim-{kind}"))
        await asyncio.gather(*(known(e.client) for kind, e in edges.values()
                               if e is not None and kind != "bad-key"))
        say(f"{len(edges)} simulated edges on fog node {cfg.fog_node.id} over {transport}: "
            + ", ".join(f"{n} {k}" for k in KINDS
                        if (n := sum(1 for kd, _ in edges.values() if kd == k))))
        tasks = [asyncio.create_task(e.run(), name=f"sim-{d}")
                 for d, (_, e) in edges.items() if e is not None]
        try:
            if tasks:
                await asyncio.wait(tasks, timeout=opts.duration_s,
                                   return_when=asyncio.FIRST_EXCEPTION)
            elif opts.duration_s:
                await asyncio.sleep(opts.duration_s)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for t in tasks:
            if t.done() and not t.cancelled() and t.exception() is not None:
                say(f"{t.get_name()} stopped: {t.exception()}")
    return {d: {"kind": kind, "sent": e.sent if e else 0, "accepted": e.accepted if e else 0,
                "rejected": e.rejected if e else 0,
                "reasons": ({**e.reasons, **{f"dropped {k}": n
                                             for k, n in e.client.dropped.items()}}
                            if e else {})}
            for d, (kind, e) in edges.items()}


async def known(client: FLClient, timeout_s: float = 60.0, attempt_s: float = 3.0) -> None:
    """Wait until the running node knows a just provisioned device (it rereads its
    registry every second): its hello is welcomed. Over MQTT a hello the node refuses (not
    provisioned yet) gets no answer at all, so each try waits ``attempt_s`` at most; tries
    are 0.5 s apart at first, backing off to 3 s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    delays = backoff_delays(0.5, 1.5, 3.0)
    while True:
        try:
            async with asyncio.timeout(attempt_s):
                await client.hello(can_train=True, fw="sim", wait=True)
            return
        except (ClientError, TimeoutError) as exc:
            if loop.time() > deadline:
                why = str(exc) or f"no answer within {attempt_s:g} s"
                raise ClientError(f"{client.creds.device_id}: the node does not take its "
                                  f"hello after {timeout_s:.0f} s: {why}") from None
            await asyncio.sleep(next(delays))


def summary(tallies: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'edge':<12} {'kind':<8} {'sent':>5} {'accepted':>8}  rejected"]
    for d, t in tallies.items():
        why = ", ".join(f"{r} {n}" for r, n in sorted(t["reasons"].items()))
        lines.append(f"{d:<12} {t['kind']:<8} {t['sent']:>5} {t['accepted']:>8}  "
                     f"{t['rejected']}{f' ({why})' if why else ''}")
    return "\n".join(lines)

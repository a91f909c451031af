"""The admin API's actions. Each one validates its input, changes the node through its
parts (never around them), and records an event saying who asked for what
(``kind="admin"``). A refused action raises :class:`~fog_appliance.errors.ActionError`
and changes nothing.
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fog_appliance.admin import settings
from fog_appliance.devices.provisioning import provision, revoke
from fog_appliance.errors import (
    ActionError,
    ModelNotFoundError,
    ModelRefused,
    ProtocolError,
    ProvisioningError,
    ServiceError,
)
from fog_appliance.store import admin_queries as q

if TYPE_CHECKING:
    from fog_appliance.node.view import NodeView

MAX_DEADLINE_S = 7 * 24 * 3600.0
ROLES = ("train", "offload")


def flash_command(device_id: str, port: str = "/dev/ttyUSB0") -> str:
    """The exact command that flashes a provisioned board from any shell: with the node's
    config file (``--config``, as the node was started with it or ``$FOG_APPLIANCE_CONFIG``);
    a node on the defaults has its data under its working directory, so the command starts
    there."""
    from fog_appliance.config import ENV_CONFIG_PATH

    cmd = f"fog-appliance edge flash --port {port} --device {shlex.quote(device_id)}"
    config = os.environ.get(ENV_CONFIG_PATH)
    if config:
        return f"{cmd} --config {shlex.quote(str(Path(config).resolve()))}"
    return f"cd {shlex.quote(os.getcwd())} && {cmd}"


async def log_action(node: NodeView, message: str, data: dict[str, Any],
                     level: str = "info", actor: str = "admin") -> None:
    await node.db.run(node.store.add_event, "admin", level, message,
                      {"actor": actor, **data})


async def close_round(node: NodeView, actor: str) -> dict[str, Any]:
    rnd = node.coordinator.round
    if not node.coordinator.close_now():
        raise ActionError(409, f"round {rnd.id} is {rnd.state.value} with {rnd.count} "
                          "updates; a round can be closed once it has at least one")
    await log_action(node, f"round {rnd.id} closed now by {actor} with {rnd.count} of "
                     f"{rnd.threshold} updates", {"round": rnd.id, "count": rnd.count}, actor=actor)
    return {"round": rnd.id, "closing": True, "count": rnd.count}


def _int(body: dict[str, Any], key: str, lo: int, hi: int) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ActionError(400, f"{key} must be an integer from {lo} to {hi}, got {v!r}")
    return v


async def retune_round(node: NodeView, body: dict[str, Any], actor: str) -> dict[str, Any]:
    """Change the open round: ``threshold``, ``min_updates``, ``deadline_in_s``."""
    unknown = set(body) - {"threshold", "min_updates", "deadline_in_s"}
    if unknown or not body:
        raise ActionError(400, "expected some of threshold, min_updates, deadline_in_s"
                          + (f"; unknown: {', '.join(sorted(unknown))}" if unknown else ""))
    threshold = _int(body, "threshold", 1, 100_000)
    min_updates = _int(body, "min_updates", 1, 100_000)
    deadline_at = None
    if "deadline_in_s" in body:
        d = body["deadline_in_s"]
        if (isinstance(d, bool) or not isinstance(d, int | float) or not math.isfinite(d)
                or not 0 < d <= MAX_DEADLINE_S):
            raise ActionError(400, f"deadline_in_s must be a number of seconds in "
                              f"(0, {MAX_DEADLINE_S:.0f}], got {d!r}")
        deadline_at = time.time() + float(d)
    rid = node.coordinator.round.id
    node.coordinator.retune_round(threshold=threshold, min_updates=min_updates,
                                  deadline_at=deadline_at)
    await log_action(node, f"round {rid} changed by {actor}: " + ", ".join(
        f"{k}={v}" for k, v in sorted(body.items())), {"round": rid, **body}, actor=actor)
    return {"round": rid, "changed": body}


async def change_settings(node: NodeView, body: dict[str, Any], actor: str) -> dict[str, Any]:
    """Persist new settings and make them govern the node at once: rounds opened from now
    on are sized by them, the open round is retuned where it can be, and the resource
    manager admits work by the new caps. ``applied`` says, per saved field, from when it
    governs (and why not at once, if not)."""
    from fog_appliance.admin.live import apply_live  # the node's parts: only when saving

    cfg, saved = settings.save(node.cfg, body)  # a new config; apply_live tells the parts
    node.use_config(cfg)
    co = node.coordinator
    policy = apply_live(node)
    rnd = co.round
    notes: list[str] = []
    applied = {name: "applied now" for name in body}
    if "edge_interface.aggregation_threshold" in body and policy.threshold != \
            cfg.edge_interface.aggregation_threshold:
        applied["edge_interface.aggregation_threshold"] = (
            f"saved, but rounds hold {policy.threshold} updates: the asynchronous "
            "strategy's buffer_size sizes them")
    if "rounds.min_updates" in body and policy.min_updates != cfg.rounds.min_updates:
        applied["rounds.min_updates"] = (
            f"saved; rounds need at least {policy.min_updates} (raised by the aggregation "
            "rule or privacy.k_min)")
    round_fields = [n for n in body if n.startswith(("edge_interface.", "rounds."))]
    if rnd.state.value in ("open", "collecting"):
        threshold = policy.threshold
        if threshold > co.capacity:
            for n in round_fields:
                applied[n] = f"applies from round {rnd.id + 1}; round {rnd.id} was opened " \
                             f"for at most {co.capacity} updates"
            notes.append(f"the threshold {threshold} applies from round {rnd.id + 1}")
            threshold = rnd.threshold
        min_updates = min(policy.min_updates, threshold)
        new_deadline = "rounds.deadline_s" in body
        try:
            co.retune_round(threshold=threshold, min_updates=min_updates,
                            deadline_at=rnd.opened_at + cfg.rounds.deadline_s
                            if new_deadline else None,
                            deadline_s=cfg.rounds.deadline_s if new_deadline else None)
        except ActionError as exc:
            notes.append(f"the open round keeps its values: {exc}")
            for n in round_fields:
                applied[n] = f"applies from round {rnd.id + 1}: {exc}"
    elif round_fields:
        notes.append(f"round {rnd.id} is {rnd.state.value}; the values apply from the next")
        for n in round_fields:
            applied[n] = f"applies from round {rnd.id + 1} (round {rnd.id} is " \
                         f"{rnd.state.value})"
    await log_action(node, f"settings changed by {actor}: " + ", ".join(
        f"{k}={v}" for k, v in sorted(body.items())), {"changes": body, "notes": notes,
                                                         "applied": applied}, actor=actor)
    return {"saved": saved, "settings": settings.describe(cfg), "notes": notes,
            "applied": applied, "restart_needed": []}


async def provision_edge(node: NodeView, body: dict[str, Any], actor: str) -> dict[str, Any]:
    device_id = body.get("id")
    role = body.get("role", "train")
    if not isinstance(device_id, str):
        raise ActionError(400, "id (the new device's id) is required")
    if role not in ROLES:
        raise ActionError(400, f"role must be one of {', '.join(ROLES)}, got {role!r}")
    try:
        conf, path = await node.db.run(provision, node.cfg, node.store, device_id, role=role,
                                       coap_port=node.coap_port)
    except ProvisioningError as exc:
        raise ActionError(409 if "already" in str(exc) else 400, str(exc)) from None
    await node.device_known(conf)
    await log_action(node, f"device {device_id} provisioned by {actor} as {role}",
                     {"device": device_id, "role": role}, actor=actor)
    return {"device": device_id, "role": role, "config": conf, "config_path": str(path),
            "flash_command": flash_command(device_id)}


async def revoke_edge(node: NodeView, device_id: str, actor: str,
                      body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Revoke a device; with ``{"drop_updates": true}`` also take its updates out of the
    open round (a device whose key was stolen may have sent poisoned ones)."""
    body = body or {}
    unknown = set(body) - {"drop_updates"}
    drop = body.get("drop_updates", False)
    if unknown or not isinstance(drop, bool):
        raise ActionError(400, "the body may only hold drop_updates (true or false)")
    try:
        await node.db.run(revoke, node.cfg, node.store, device_id)
    except ProvisioningError as exc:
        if not (drop and "already revoked" in str(exc)):
            raise ActionError(404 if "not registered" in str(exc) else 409, str(exc)) from None
    await node.db.run(node.registry.load, node.store, force=True)
    dropped = await node.coordinator.drop_device_updates(device_id) if drop else 0
    rid = node.coordinator.round.id
    result: dict[str, Any] = {"device": device_id, "state": "revoked",
                              "dropped_updates": dropped, "round": rid}
    if node.peers is not None:  # a device handed over to a peer is revoked there too
        result["peers"] = await node.peers.propagate_revocation(device_id)
    await log_action(node, f"device {device_id} revoked by {actor}" + (
        f"; {dropped} update(s) dropped from round {rid}" if drop else ""), dict(result),
        level="warning", actor=actor)
    return result


async def evict_model(node: NodeView, version: int, actor: str) -> dict[str, Any]:
    """Drop an old version's blob from the store *and* the model cache. The cache's pins
    (current, previous, upcoming) are the rule: the previous version is what a rollback and
    an edge one round behind need."""
    if version in node.serving.cache.pinned:
        raise ActionError(409, f"model version {version} is the current, previous or upcoming "
                          "version; it stays cached (only older versions can be evicted)")
    freed = await node.db.run(q.evict_model, node.store, version)
    # RAM and the cache's disk index (the blob is gone already); a version the cache never
    # held is not an error
    with contextlib.suppress(ModelNotFoundError):
        node.serving.cache.evict(version)
    await node.serving.cache.flush()
    await log_action(node, f"model version {version} evicted by {actor} ({freed} bytes freed)",
                     {"version": version, "bytes": freed}, actor=actor)
    return {"version": version, "evicted": True, "bytes_freed": freed}


async def rollback_model(node: NodeView, version: int, actor: str) -> dict[str, Any]:
    """Publish the weights of an earlier ``version`` as the next model version (a new
    version, so every edge and the cache see a change); the open round is superseded. The
    stored blob must still exist and pass the same check as any adopted model."""
    import numpy as np

    from fog_appliance.model.spec import ModelSpec
    from fog_appliance.protocol.model_blob import decode_model

    coord = node.coordinator
    current = coord.model.version
    if version == current:
        raise ActionError(409, f"model {version} is the current model already")
    row = await node.db.run(node.store.model, version)
    if row is None:
        raise ActionError(404, f"model {version} was never published here")
    if row.blob is None:
        raise ActionError(409, f"model {version} has no stored blob any more (dropped to keep "
                          "cache.disk_budget_mb); choose a version whose blob is stored")
    if ModelSpec.from_dict(row.spec) != coord.spec:
        raise ActionError(409, f"model {version} has another architecture ({row.spec})")
    try:
        weights = [np.array(t) for t in decode_model(row.blob, coord.shapes).tensors]
        model = await coord.adopt(weights, "rollback", {"rolled_back_to": version,
                                                        "rolled_back_from": current},
                                  source="rollback")
    except ProtocolError as exc:
        raise ActionError(409, f"model {version}'s blob is unreadable: {exc}") from None
    except ModelRefused as exc:
        raise ActionError(409, f"model {version} was refused: {exc}; model {current} "
                          "stays") from None
    except ServiceError as exc:
        raise ActionError(409, str(exc)) from None
    await log_action(node, f"model rolled back to version {version} by {actor}: published as "
                     f"version {model.version}", {"version": model.version,
                                                  "rolled_back_to": version,
                                                  "rolled_back_from": current},
                     level="warning", actor=actor)
    return {"version": model.version, "rolled_back_to": version, "rolled_back_from": current,
            "sha256": model.sha256}


async def record_metrics(node: NodeView, version: int, body: dict[str, Any], actor: str
                         ) -> dict[str, Any]:
    """An evaluator reports a model's metrics (``accuracy`` in [0, 1], ``loss`` ≥ 0, …)."""
    if not body or not all(isinstance(k, str) and isinstance(v, int | float)
                           and not isinstance(v, bool) and math.isfinite(v)
                           for k, v in body.items()):
        raise ActionError(400, "expected a JSON object of metric names to finite numbers")
    if "accuracy" in body and not 0.0 <= body["accuracy"] <= 1.0:
        raise ActionError(400, f"accuracy must be in [0, 1], got {body['accuracy']!r}")
    merged = await node.db.run(q.record_model_metrics, node.store, version,
                               {k: float(v) for k, v in body.items()})
    await log_action(node, f"metrics of model {version} recorded by {actor}: " + ", ".join(
        f"{k}={v:.4g}" for k, v in sorted(body.items())), {"version": version, **body},
        actor=actor)
    return {"version": version, "metrics": merged}

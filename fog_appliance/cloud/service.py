"""Starting the cloud tier inside a running fog node (called from ``app.py``).

Builds the :class:`~fog_appliance.cloud.link.CloudLink`, serves the local cloud API on
loopback with its bearer token, watches the SuperLink, and — with
``cloud_interface.manage_supernode`` — runs ``flower-supernode`` as a supervised child.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fog_appliance.broker import free_port
from fog_appliance.cloud.api import cloud_api
from fog_appliance.cloud.link import CloudLink
from fog_appliance.cloud.supernode import (
    SupernodeSidecar,
    flower_home,
    supernode_argv,
    supernode_env,
    token_path,
)
from fog_appliance.support.localhttp import read_or_create_token, serve_app

if TYPE_CHECKING:
    from fog_appliance.node.view import NodeView

log = logging.getLogger(__name__)


async def attach_cloud(node: NodeView, epsilon: Callable[[], float | None]) -> CloudLink:
    """The link, built and started before the coordinator starts (no round can close
    before ``app.py`` has passed its hooks on); ``epsilon`` is the DP ε spent so far."""
    link = CloudLink(node.cfg, node.coordinator, node.store, node.db, node.intake,
                     epsilon=epsilon)
    await link.start()
    return link


async def serve_cloud(node: NodeView, link: CloudLink, stack: contextlib.AsyncExitStack,
                      tg: asyncio.TaskGroup) -> None:
    """Serve the local cloud API, watch the SuperLink, supervise the SuperNode if asked."""
    cfg = node.cfg
    ci = cfg.cloud_interface
    token = read_or_create_token(token_path(cfg))
    runner, port = await serve_app(cloud_api(link, token), ci.api_bind, ci.api_port)
    stack.push_async_callback(runner.cleanup)
    host = f"[{ci.api_bind}]" if ":" in ci.api_bind else ci.api_bind
    api_url = f"http://{host}:{port}"
    status: dict[str, Any] = {"cloud_api": api_url, "cloud_server": ci.server_url}
    node.spawn(tg, link.watch(), "cloud-watch")
    if ci.manage_supernode:
        runtime_port = ci.supernode_port or free_port()
        sidecar = SupernodeSidecar(supernode_argv(cfg, api_url, runtime_port),
                                   supernode_env(cfg, os.environ),
                                   flower_home(cfg) / "supernode.log")
        node.spawn(tg, sidecar.run(), "flower-supernode")
        status["supernode_runtime_port"] = runtime_port
        link.sidecar = sidecar
    node.extra_status.update(status)
    log.info("cloud tier: SuperLink %s, local cloud API %s%s", ci.server_url, api_url,
             ", flower-supernode supervised" if ci.manage_supernode else "")

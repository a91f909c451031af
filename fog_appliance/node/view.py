"""What the parts that serve or watch a running node see of it.

The admin API, the cloud and peer services, the appliance-update API, the monitor and the
demo are handed a :class:`NodeView`, never the composition root (``app.py``): so none of
them imports ``app.py`` (which builds them), and the import graph has no circle. Every
member is read-only here; what changes the node goes through its named methods
(``provision``, ``revoke``, ``spawn``) or through the part itself (the coordinator's
``retune_round``, the store's queries).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from aiohttp import web

    from fog_appliance.admin.sections import SectionProvider
    from fog_appliance.cloud.link import CloudLink
    from fog_appliance.config import FogConfig
    from fog_appliance.devices.registry import Registry
    from fog_appliance.intake.committer import Committer
    from fog_appliance.intake.mqtt import MqttIntake
    from fog_appliance.intake.service import Intake
    from fog_appliance.node.serving import Serving
    from fog_appliance.privacy.proxy import PrivacyProxy
    from fog_appliance.rounds.coordinator import Coordinator
    from fog_appliance.store import Store
    from fog_appliance.support.dbthread import DbThread


class PeersPart(Protocol):
    """What the node's other parts use of the peers service (``peers/``)."""

    def status(self) -> dict[str, Any]: ...

    async def propagate_revocation(self, device_id: str) -> dict[str, str]: ...


class NodeView(Protocol):
    """A running fog node, as the parts it serves see it (``app.FogNode`` is one)."""

    @property
    def cfg(self) -> FogConfig: ...
    @property
    def started_at(self) -> float: ...
    @property
    def ready(self) -> asyncio.Event: ...
    @property
    def store(self) -> Store: ...
    @property
    def db(self) -> DbThread: ...
    @property
    def registry(self) -> Registry: ...
    @property
    def coordinator(self) -> Coordinator: ...
    @property
    def committer(self) -> Committer: ...
    @property
    def intake(self) -> Intake: ...
    @property
    def serving(self) -> Serving: ...
    @property
    def privacy(self) -> PrivacyProxy: ...
    @property
    def mqtt(self) -> MqttIntake | None: ...
    @property
    def mqtt_address(self) -> str | None: ...
    @property
    def coap_port(self) -> int | None: ...
    @property
    def cloud(self) -> CloudLink | None: ...
    @property
    def peers(self) -> PeersPart | None: ...
    @property
    def admin_sections(self) -> dict[str, SectionProvider]:
        """Parts contribute their admin API / console section here (admin/sections.py)."""
    @property
    def admin_subapps(self) -> dict[str, Callable[[], web.Application]]:
        """Parts mount aiohttp sub-applications on the admin API (prefix -> factory)."""
    @property
    def extra_status(self) -> dict[str, Any]:
        """Addresses the federation parts add to ``node.json``."""

    def status(self) -> dict[str, Any]: ...

    def use_config(self, cfg: FogConfig) -> None:
        """Settings saved while the node runs: ``cfg`` (frozen, checked) is its config from
        now on (``admin/live.apply_live`` then tells the parts that keep their own)."""

    def spawn(self, tg: asyncio.TaskGroup, coro: Coroutine[Any, Any, None], name: str
              ) -> None:
        """Run ``coro`` as one of the node's named tasks (stopped with the node)."""

    async def provision(self, device_id: str, role: str = "train") -> dict[str, Any]: ...

    async def device_known(self, conf: dict[str, Any]) -> None: ...

    async def revoke(self, device_id: str) -> None: ...


class RunnableNode(NodeView, Protocol):
    """A node that can also be started: what the demo is given to build."""

    def running(self) -> contextlib.AbstractAsyncContextManager[Any]: ...


NodeFactory = Callable[["FogConfig"], RunnableNode]
"""Builds a node from its config (``app.FogNode``): handed down by the CLI."""

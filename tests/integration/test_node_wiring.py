"""A real fog node with every hook contributor (privacy, resources, cloud link, peers) hands
each contribution to its consumer as a value: the coordinator's ``CloseHooks`` and the
intake's ``IntakeHooks`` are the parts' own bound methods (issue 15, explicit wiring;
``tests/unit/test_hook_wiring.py`` holds that nothing sets them from outside). The SuperLink
and the peer are loopback ports nobody listens on: only the wiring is looked at here, the
hooks' behaviour is in test_cloud_api, test_peers_loopback and test_offload_node."""

from __future__ import annotations

from pathlib import Path

from cloud_support import fog_config

from fog_appliance.app import FogNode
from fog_appliance.broker import free_port


async def test_every_hook_is_the_contributing_parts_own(tmp_path: Path) -> None:
    cfg = fog_config(tmp_path, "wired", cloud=f"127.0.0.1:{free_port()}",
                     peers=[("other", f"http://127.0.0.1:{free_port()}")],
                     peer_port=free_port())
    async with FogNode(cfg).running() as node:
        assert node.cloud is not None and node.peers is not None
        close, intake = node.coordinator.hooks, node.intake.hooks
        assert close.release is node.privacy
        assert close.wait_for_room == node.serving.resources.wait_for_round
        assert close.cloud_waiting == node.cloud.cloud_waiting
        assert close.upstream_item == node.cloud.outbox_item
        assert close.mix_next_model == node.peers.mix_next_model
        assert intake.disk_guard == node.serving.resources.refuse_update_if_disk_full
        assert intake.placement == node.serving.resources.place
        assert intake.redirect == node.peers.redirect_for
        assert node.cloud.intake is node.intake


async def test_a_node_without_cloud_or_peers_has_only_its_own_hooks(tmp_path: Path) -> None:
    async with FogNode(fog_config(tmp_path, "alone")).running() as node:
        close, intake = node.coordinator.hooks, node.intake.hooks
        assert close.release is node.privacy and close.wait_for_room is not None
        assert (close.cloud_waiting, close.upstream_item, close.mix_next_model) == (None,) * 3
        assert intake.placement is not None and intake.redirect is None

"""A port the node binds at start (``coap.port: 0`` picks a free one) is runtime state, not
config: the node's config keeps 0, and the node tells the parts that need the real port
(device configs written while it runs, ``node.json``). Real node on loopback."""

from __future__ import annotations

import json
from pathlib import Path

from fog_appliance.config import replace
from tests.admin_support import node_config, running_node, send_update


async def test_a_bound_port_is_not_written_back_into_the_config(tmp_path: Path) -> None:
    cfg = replace(node_config(tmp_path / "var"), {"coap.port": 0})
    async with running_node(cfg) as (node, api):
        assert node.coap_port and node.coap_port > 0
        assert node.cfg.coap.port == 0, "the bound port was written into the config"
        conf = (await api.provision("press-1"))["config"]
        assert conf["coap"]["port"] == node.coap_port
        assert json.loads(node.status_path.read_text())["coap_port"] == node.coap_port
        assert await send_update(conf, tmp_path)  # the edge reaches the node on it

"""Settings saved while the node runs govern it at once (``PATCH /api/settings``): every
round opened from now on is sized by them, and the resource manager admits work by the new
caps. The open round is retuned by ``actions.change_settings``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fog_appliance.aggregation.factory import round_policy
from fog_appliance.node.serving import limits_from

if TYPE_CHECKING:
    from fog_appliance.node.view import NodeView
    from fog_appliance.rounds import RoundPolicy


def apply_live(node: NodeView) -> RoundPolicy:
    """Make the node's (just saved) settings govern it; returns the round policy now in
    force (the aggregation rule or ``privacy.k_min`` may raise the minimum; an asynchronous
    strategy's buffer size replaces the threshold).

    ``node.cfg`` is the new (frozen) config; the parts that read live settings from a
    config of their own are handed it here: the coordinator opens the next rounds with its
    ``rounds.deadline_s``."""
    node.coordinator.use_config(node.cfg)
    policy = round_policy(node.cfg, node.coordinator.strategy)
    node.coordinator.set_policy(policy)
    node.serving.resources.set_limits(limits_from(node.cfg))
    return policy

"""Firmware over the air for the edges (issue 18): releases, staged rollouts, the chunk
server. ``rollout.py`` is the pure state machine, ``releases.py`` the stored releases,
``service.py`` the part of the running node. See docs/firmware.md "Rolling out firmware"."""

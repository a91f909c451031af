"""The node's collector settings (``support/gctune.py``)."""

from __future__ import annotations

import gc
import weakref

from fog_appliance.support import gctune


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_settle_frees_start_up_garbage_before_freezing_the_rest() -> None:
    kept = _Node()
    garbage = _Node()
    dead = weakref.ref(garbage)
    del garbage
    try:
        gctune.settle()
        # Freezing alone would have kept the unreachable cycle for the node's life.
        assert dead() is None
        assert gc.get_freeze_count() > 0
        assert kept.me is kept
    finally:
        gc.unfreeze()

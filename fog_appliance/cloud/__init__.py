"""The cloud tier: the fog node as a Flower SuperNode, its ClientApp shim, the outbox.

``link.py`` is the fog's side (adopt global models, answer with regional aggregates),
``api.py`` the local HTTP API the shim calls, ``wire.py`` their message format (no I/O),
``clientapp.py`` the Flower ClientApp shim, ``supernode.py`` the ``flower-supernode``
sidecar. Nothing here imports Flower except ``clientapp.py``: the fog service itself does
not load it. See docs/cloud.md.
"""

"""Fog-to-fog collaboration: load hints, edge redirects (migration), gossip averaging.

``hints.py`` and ``gossip.py`` are pure (the redirect rule, the averaging); ``service.py``
runs the exchange and plugs into the intake and the coordinator; ``api.py`` is the HTTP
sub-application peers call. See docs/peers.md.
"""

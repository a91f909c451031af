"""The privacy proxy: per-update clipping (``clipping``), central DP noise (``noise``) with
an accountant (``accountant``), the release decision with the k-minimum (``policy``), the
running node's ledger persisted in the store (``proxy``), and the only constructor of
what goes upstream (``upstream.build_upstream_release``). All but ``proxy`` are pure.

Import the submodules directly; this package imports nothing so that the aggregation code
can use ``clipping`` without pulling in the store.
"""

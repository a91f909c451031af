"""Wire formats of fog-appliance: update frames, model blobs, JSON messages, topics.

Nothing in this package does I/O; see docs/protocol.md for every byte.
"""

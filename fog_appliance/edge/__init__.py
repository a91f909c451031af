"""Host tooling for the MicroPython edge firmware in ``edge_firmware/device``: compile it
with mpy-cross (``build``), bundle it with a device's config (``bundle``), flash it with
esptool and mpremote (``flash``), run it on the MicroPython WebAssembly port (``wasm``),
and write replay files of recorded examples for bench tests (``replay``)."""

from __future__ import annotations

from fog_appliance.errors import FogError


class EdgeToolError(FogError):
    """A firmware build, bundle or flash step failed; nothing further was done."""

"""Host tooling for the MicroPython edge firmware in ``edge_firmware/device``: compile it
with mpy-cross, bundle it with a device's config, flash it with esptool and mpremote,
and write replay files of recorded examples for bench tests."""

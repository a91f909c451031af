"""The one marker of the tests that need the real RAUC (the image layer's set-up installs
rauc and squashfs-tools: `scripts/setup test --image`)."""

from __future__ import annotations

import shutil

import pytest

needs_rauc = pytest.mark.skipif(shutil.which("rauc") is None or shutil.which("mksquashfs")
                                is None, reason="rauc and squashfs-tools are not installed")

"""The firmware's model blob reader (edge_firmware/device/modelblob.py) against the golden
blob and the fog's encoder, and its refusals."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fog_appliance.model.spec import ModelSpec
from fog_appliance.protocol.model_blob import encode_model
from tests.firmware_support import FIXTURES, firmware, golden

mb = firmware("modelblob")
tr = firmware("trainer")
SPEC = ModelSpec("mlp", 6, (4,), 3)


def test_golden_blob() -> None:
    g = golden()
    blob = (FIXTURES / "model_v3.bin").read_bytes()
    version, w = mb.parse(blob, tr.shapes(g["spec"]), hashlib.sha256(blob).hexdigest())
    assert version == 3
    want = g["cases"]["model_v3"]["tensors"]
    assert [list(t) for t in w] == [np.asarray(t, np.float32).reshape(-1).tolist()
                                    for t in want]


def test_file_and_memory_readers_agree(tmp_path: Path) -> None:
    w = SPEC.init_weights(4)
    blob = encode_model(7, w)
    path = tmp_path / "model.bin"
    path.write_bytes(blob)
    sha = hashlib.sha256(blob).hexdigest()
    assert mb.file_sha256(str(path)) == sha
    a = mb.parse(blob, SPEC.shapes, sha)
    b = mb.load(str(path), SPEC.shapes, sha)
    assert a[0] == b[0] == 7
    for x, y, ref in zip(a[1], b[1], w, strict=True):
        assert list(x) == list(y) == ref.reshape(-1).tolist()


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda b: b[:-4], "bytes"),
    (lambda b: b + b"\0\0\0\0", "bytes"),
    (lambda b: b"XXXX" + b[4:], "magic"),
    (lambda b: b[:4] + b"\x02" + b[5:], "format"),
    (lambda b: b[:6] + b"\x03" + b[7:], "tensors"),
    (lambda b: b[:16] + b"\x05" + b[17:], "shapes"),
])
def test_malformed_blobs_are_refused(mutate: object, message: str, tmp_path: Path) -> None:
    bad = mutate(encode_model(2, SPEC.init_weights(0)))  # type: ignore[operator]
    with pytest.raises(mb.BlobError, match=message):
        mb.parse(bad, SPEC.shapes)
    p = tmp_path / "m.bin"
    p.write_bytes(bad)
    with pytest.raises(mb.BlobError):
        mb.load(str(p), SPEC.shapes)


def test_a_blob_that_is_not_the_announced_one_is_refused() -> None:
    blob = encode_model(2, SPEC.init_weights(0))
    with pytest.raises(mb.BlobError, match="sha256"):
        mb.parse(blob, SPEC.shapes, "0" * 64)


@given(st.binary(max_size=200))
@settings(deadline=None)
def test_garbage_raises_blob_error_only(data: bytes) -> None:
    with contextlib.suppress(mb.BlobError):
        mb.parse(data, SPEC.shapes)


def test_one_tensor_is_read_back_from_a_stored_model(tmp_path: Path) -> None:
    from array import array

    spec = ModelSpec("mlp", 5, (4,), 3)
    w = spec.init_weights(4)
    path = tmp_path / "model.bin"
    path.write_bytes(encode_model(9, w))
    for t, want in enumerate(w):
        buf = array("f", bytes(4 * want.size))
        mb.read_tensor(str(path), spec.shapes, t, buf)
        assert list(buf) == [float(v) for v in want.reshape(-1)]
    path.write_bytes(encode_model(9, w)[:-4])
    with pytest.raises(mb.BlobError, match="truncated"):
        mb.read_tensor(str(path), spec.shapes, len(w) - 1, array("f", bytes(12)))

"""Mosquitto auth files, backoff delays, and the numpy model's gradients."""

from __future__ import annotations

import base64
import hashlib
import random
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fog_appliance.broker import BrokerFiles, hash_password, render_acl, render_conf
from fog_appliance.model.numpy_model import gradients, train_local
from fog_appliance.model.spec import ModelSpec
from fog_appliance.support.backoff import backoff_delays


def test_password_hash_is_mosquitto_pbkdf2() -> None:
    h = hash_password("s3cret", salt=b"0123456789ab")
    _, alg, it, salt, digest = h.split("$")
    assert (alg, it) == ("7", "101")
    want = hashlib.pbkdf2_hmac("sha512", b"s3cret", base64.b64decode(salt), 101)
    assert base64.b64decode(digest) == want


@pytest.mark.mosquitto
def test_hash_matches_mosquitto_passwd_format(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "u", "s3cret"], check=True)
    theirs = pw.read_text().strip().split(":", 1)[1]
    _, _alg, _it, salt, _ = theirs.split("$")
    assert hash_password("s3cret", base64.b64decode(salt)) == theirs


def test_acl_confines_devices() -> None:
    acl = render_acl("F", ["d1", "d2"])
    blocks = acl.split("\n\n")
    assert blocks[0] == "user fog-F\ntopic readwrite fog/F/#"
    d1 = next(b for b in blocks if b.startswith("user d1"))
    assert "topic write fog/F/up/d1" in d1 and "d2" not in d1 and "readwrite" not in d1


def test_conf_raises_queue_limits(tmp_path: Path) -> None:
    conf = render_conf(BrokerFiles(tmp_path), "127.0.0.1", 1999)
    assert "allow_anonymous false" in conf and "listener 1999 127.0.0.1" in conf
    assert "max_queued_messages 100000" in conf and "persistence true" in conf


def test_backoff_grows_and_caps() -> None:
    d = backoff_delays(0.5, 2.0, 4.0, jitter=0.0)
    assert [next(d) for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    j = backoff_delays(1.0, 2.0, 8.0, jitter=0.1, rng=random.Random(3))
    for want, got in zip([1, 2, 4, 8, 8], j, strict=False):
        assert want * 0.9 <= got <= want * 1.1


@pytest.mark.parametrize("kind", ["softmax", "mlp"])
def test_gradients_match_finite_differences(kind: str) -> None:
    spec = ModelSpec(kind, 5, (4,), 3)  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    w = [t.astype(np.float64) for t in spec.init_weights(1)]
    x = rng.standard_normal((7, 5))
    y = rng.integers(0, 3, 7)
    _, grads = gradients(spec, w, x, y)
    eps = 1e-5
    for ti in range(len(w)):
        idx = tuple(rng.integers(0, s) for s in w[ti].shape)
        w[ti][idx] += eps
        up, _ = gradients(spec, w, x, y)
        w[ti][idx] -= 2 * eps
        down, _ = gradients(spec, w, x, y)
        w[ti][idx] += eps
        assert grads[ti][idx] == pytest.approx((up - down) / (2 * eps), rel=1e-3, abs=1e-6)


def test_local_training_lowers_loss_and_fedprox_pulls_back() -> None:
    spec = ModelSpec("softmax", 4, (), 2)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    w0 = spec.init_weights(0)
    plain = train_local(spec, w0, x, y, epochs=5, lr=0.5, batch_size=8)
    prox = train_local(spec, w0, x, y, epochs=5, lr=0.5, batch_size=8, mu=1.0)
    loss0, _ = gradients(spec, w0, x, y)
    assert plain.loss < loss0
    assert plain.local_steps == 40 and plain.num_samples == 64
    norm = lambda r: sum(float(np.sum(d * d)) for d in r.delta)  # noqa: E731
    assert norm(prox) < norm(plain)

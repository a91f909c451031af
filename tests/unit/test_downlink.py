"""Signed fog → edge messages and hello counters (docs/protocol.md "Signed down messages"):
the fog's signer, the firmware's verifier (edge_firmware/device/msgauth.py) and the golden
file agree; a bad, missing or foreign tag is refused; answers must echo a fresh hello."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fog_appliance.errors import AuthError, ProtocolError, RejectedError
from fog_appliance.protocol import downlink
from fog_appliance.protocol.messages import Hello, decode_hello
from tests.firmware_support import FIXTURES, firmware

msgauth = firmware("msgauth")
flashstate = firmware("flashstate")
GOLDEN = json.loads((FIXTURES / "golden.json").read_text())
KEY = bytes.fromhex((FIXTURES / "golden_key.hex").read_text().strip())


def test_golden_welcome_verifies_on_both_sides() -> None:
    case = GOLDEN["cases"]["down_welcome"]
    buf = (FIXTURES / case["file"]).read_bytes()
    want = {k: v for k, v in case.items() if k != "file"}
    assert downlink.verify_down(buf, KEY) == want
    assert msgauth.open_down(KEY, buf) == want
    assert msgauth.sign(KEY, buf[:-32]) == buf  # the firmware computes the same tag
    assert downlink.signed_down("welcome", KEY, **{k: v for k, v in want.items()
                                                    if k != "type"}) == buf


@pytest.mark.parametrize("mutate", [
    lambda b: b[:-32],                                  # no tag
    lambda b: b[:-1] + bytes([b[-1] ^ 1]),              # wrong tag
    lambda b: b.replace(b'"welcome"', b'"redirect"'),  # another type under the same tag
    lambda b: b"x" * 5000,                              # over the size limit
])
def test_tampered_down_messages_are_refused(mutate: object) -> None:
    buf = (FIXTURES / "down_welcome.bin").read_bytes()
    bad = mutate(buf)  # type: ignore[operator]
    with pytest.raises(RejectedError):
        downlink.verify_down(bad, KEY)
    with pytest.raises(ValueError):
        msgauth.open_down(KEY, bad)


def test_another_devices_key_or_another_message_kind_does_not_verify() -> None:
    buf = (FIXTURES / "down_welcome.bin").read_bytes()
    with pytest.raises(AuthError):
        downlink.verify_down(buf, bytes(32))
    # a hello is JSON + HMAC(key, JSON): the domain separator keeps it from passing as a
    # down message, even one whose JSON has a type
    hello_like = b'{"type":"welcome","id":"golden-dev"}'
    import hashlib
    import hmac
    forged = hello_like + hmac.new(KEY, hello_like, hashlib.sha256).digest()
    with pytest.raises(AuthError):
        downlink.verify_down(forged, KEY)
    with pytest.raises(ValueError):
        msgauth.open_down(KEY, forged)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_down_garbage_is_refused_cleanly(data: bytes) -> None:
    with contextlib.suppress(RejectedError):
        downlink.verify_down(data, KEY)
    with contextlib.suppress(ValueError):
        msgauth.open_down(KEY, data)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["type", "ctr", "x", "announcement"]),
                       st.one_of(st.integers(), st.text(max_size=8), st.none(), st.booleans()),
                       max_size=4))
def test_signed_garbage_json_is_parsed_or_refused_cleanly(obj: dict[str, object]) -> None:
    body = json.dumps(obj).encode()
    buf = downlink.sign(body, KEY)
    try:
        got = downlink.verify_down(buf, KEY)
    except ProtocolError:
        with pytest.raises(ValueError):
            msgauth.open_down(KEY, buf)
    else:
        assert msgauth.open_down(KEY, buf) == got == obj


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=-(2**64), max_value=2**64))
def test_hello_counter_is_bounded(ctr: int) -> None:
    body = json.dumps({"id": "golden-dev", "ctr": ctr}, separators=(",", ":")).encode()
    payload = body + __import__("hmac").new(KEY, body, "sha256").digest()
    try:
        h = decode_hello(payload, lambda _d: KEY)
    except ProtocolError:
        assert not 0 <= ctr < 2**53
    else:
        assert h.ctr == ctr


class _Auth:
    def __init__(self, tmp: Path) -> None:
        self.st = flashstate.State(str(tmp) + "/")
        self.auth = msgauth.Auth(KEY, self.st)


def test_hello_counter_survives_resets_and_writes_flash_once_per_block(tmp_path: Path) -> None:
    a = _Auth(tmp_path).auth
    sent = [a.next_hello() for _ in range(100)]
    assert sent == list(range(1, 101))
    saved = json.loads((tmp_path / "state.json").read_text())["hello_block"]
    assert saved == 128  # two blocks reserved: two writes for 100 hellos
    b = _Auth(tmp_path).auth  # a reset
    assert b.next_hello() > max(sent)


def test_answers_must_echo_a_fresh_hello(tmp_path: Path) -> None:
    a = _Auth(tmp_path).auth
    c1, c2 = a.next_hello(), a.next_hello()
    assert not a.answer_ok({"type": "welcome", "ctr": c2 + 1})  # a hello never sent
    assert a.answer_ok({"type": "welcome", "ctr": c2, "announcement": "aa"})
    assert not a.answer_ok({"type": "welcome", "ctr": c1})  # older than the last taken
    assert not a.answer_ok({"type": "redirect", "ctr": c2})  # replayed
    assert not a.answer_ok({"type": "welcome"})
    assert a.answered == c2 and a.named == "aa" and a.dropped == 4


def test_an_announcement_is_used_only_if_a_welcome_names_it(tmp_path: Path) -> None:
    a = _Auth(tmp_path).auth
    assert a.announcement("forged") is None  # ask: say hello
    ctr = a.next_hello()
    assert a.announcement("forged") is False  # waiting for the answer
    assert a.answer_ok({"type": "welcome", "ctr": ctr, "announcement": "real"})
    assert a.dropped == 1 and a.announcement("forged") is False  # refused for good
    assert a.announcement("real") is True


def test_a_welcome_to_the_boot_hello_naming_another_announcement_asks_again(
        tmp_path: Path) -> None:
    a = _Auth(tmp_path).auth
    boot = a.next_hello()  # sent before the announcement arrived
    assert a.announcement("new") is False
    assert a.answer_ok({"type": "welcome", "ctr": boot, "announcement": "old"})
    assert a.dropped == 0 and a.announcement("new") is None  # a fresh hello decides


def test_an_offer_must_echo_the_hello_welcomed_last_in_this_boot(tmp_path: Path) -> None:
    """Regression (issue 18, both halves together): the board took an offer whose ``ctr``
    equalled ``Auth.answered``, which at boot is the top of the reserved counter block. A
    boot whose last welcomed hello used that very counter left an offer (a QoS 1 message
    queued for the board's session) that the next boot took before any welcome of its own.
    edgeloop.py now takes an offer only if ``ctr == auth.welcomed > 0``."""
    a = _Auth(tmp_path).auth
    sent = [a.next_hello() for _ in range(64)]  # the block's last counter: 64
    assert a.answer_ok({"type": "welcome", "ctr": sent[-1]})
    assert a.welcomed == 64
    b = _Auth(tmp_path).auth  # a reset: no welcome taken in this boot yet
    assert b.answered == 64 and b.welcomed == 0  # an offer echoing 64 is not taken
    ctr = b.next_hello()
    assert b.welcomed == 0  # sent, not welcomed yet
    assert not b.answer_ok({"type": "welcome", "ctr": 64})  # of the boot before
    assert b.welcomed == 0
    assert b.answer_ok({"type": "welcome", "ctr": ctr})
    assert b.welcomed == ctr
    ctr2 = b.next_hello()
    assert b.answer_ok({"type": "redirect", "ctr": ctr2})  # a redirect is not a welcome
    assert b.welcomed == 0


def test_replayed_hello_refusal_moves_the_counter_up(tmp_path: Path) -> None:
    a = _Auth(tmp_path).auth
    ctr = a.next_hello()
    assert not a.replayed({"reason": "replayed_hello", "ctr": ctr + 5, "last_hello": 900})
    assert a.replayed({"reason": "replayed_hello", "ctr": ctr, "last_hello": 900})
    assert a.next_hello() == 901


def test_hello_golden_has_a_counter() -> None:
    h = decode_hello((FIXTURES / "hello.bin").read_bytes(), lambda _d: KEY)
    assert h == Hello("golden-dev", "esp32-0.1", 81920, 87, True, 240, 3, 65)


_VALUES = st.one_of(st.integers(min_value=-5, max_value=2**60), st.text(max_size=4), st.none(),
                    st.booleans(), st.floats(allow_nan=True))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["ctr", "reason", "last_hello",
                                                  "announcement"]), _VALUES, max_size=4),
                max_size=6))
def test_firmware_answer_checks_take_any_verified_json(msgs: list[dict[str, object]]) -> None:
    """Whatever a (verified) message holds, the firmware's checks decide without raising,
    and the hello counter never goes down."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        a = _Auth(Path(tmp)).auth
        a.next_hello()
        for m in msgs:
            before = a.st.hello_ctr
            a.answer_ok({"type": "welcome", **m})
            a.replayed({"type": "rejected", "hello": True, **m})
            assert a.st.hello_ctr >= before
            a.announcement(str(m.get("announcement")))


def test_an_answer_to_a_hello_of_before_the_reset_is_stale(tmp_path: Path) -> None:
    # A welcome (and so a firmware offer, which echoes the welcomed hello) recorded before
    # a reset is a replay after it: the counter of every hello of this boot is above it.
    a = _Auth(tmp_path).auth
    old = a.next_hello()
    b = _Auth(tmp_path).auth  # a reset
    assert not b.answer_ok({"type": "welcome", "ctr": old})
    assert b.answer_ok({"type": "welcome", "ctr": b.next_hello()})

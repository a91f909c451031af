"""The pure parts of fog-to-fog: load hints, the redirect rule, gossip averaging, and the
handed-over device record."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fog_appliance.errors import PeerError, ProtocolError
from fog_appliance.peers.api import parse_device
from fog_appliance.peers.gossip import mix
from fog_appliance.peers.hints import LoadHint, choose_peer, redirect_message
from fog_appliance.protocol.messages import Redirect, parse_redirect


def hint(fog: str, edges: int, max_edges: int = 10, cpu: float = 10.0, ts: float = 100.0,
         queue: int = 0, mqtt: bool = True, coap: bool = True) -> LoadHint:
    return LoadHint(fog, ts, edges, max_edges, cpu, queue, 3, 50, None,
                    "10.0.0.2" if mqtt else None, 1883 if mqtt else None,
                    "10.0.0.2" if coap else None, 5683 if coap else None)


def test_hint_round_trip() -> None:
    h = hint("b", 3)
    assert LoadHint.from_dict(h.to_dict()) == h
    assert LoadHint.from_dict({k: v for k, v in h.to_dict().items()
                               if k in ("fog_id", "ts", "edges", "max_edges", "cpu",
                                        "queue", "model_version")}).mqtt_port is None


@pytest.mark.parametrize(("change", "message"), [
    ({"edges": "3"}, "wrong type"), ({"edges": True}, "wrong type"),
    ({"cpu": float("nan")}, "not finite"), ({"extra": 1}, "unknown"),
    ({"edges": -1}, "negative"), ({"mqtt_port": 70000}, "not a port"),
    ({"cloud": 1}, "wrong type"),
])
def test_bad_hints_are_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(PeerError, match=message):
        LoadHint.from_dict({**hint("b", 1).to_dict(), **change})


def test_incomplete_or_non_object_hints_are_refused() -> None:
    with pytest.raises(PeerError, match="lacks"):
        LoadHint.from_dict({"fog_id": "b"})
    with pytest.raises(PeerError, match="object"):
        LoadHint.from_dict([1])


@given(st.dictionaries(st.text(max_size=12), st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=4)), max_size=14))
def test_garbage_hints_only_raise_peer_error(obj: dict[str, object]) -> None:
    with contextlib.suppress(PeerError):
        LoadHint.from_dict(obj)


def test_the_peer_with_most_room_wins_ties_by_cpu_then_queue_then_id() -> None:
    hints = [hint("b", 5), hint("c", 2, cpu=90), hint("d", 2, cpu=20), hint("e", 9)]
    assert choose_peer(hints, "mqtt", 100.0, 30.0).fog_id == "d"  # type: ignore[union-attr]
    tied = [hint("x", 2, queue=5), hint("w", 2, queue=5), hint("v", 2, queue=9)]
    assert choose_peer(tied, "mqtt", 100.0, 30.0).fog_id == "w"  # type: ignore[union-attr]


def test_no_room_stale_or_unreachable_peers_get_nobody() -> None:
    assert choose_peer([hint("b", 10)], "mqtt", 100.0, 30.0) is None
    assert choose_peer([hint("b", 1, ts=50.0)], "mqtt", 100.0, 30.0) is None
    assert choose_peer([hint("b", 1, mqtt=False)], "mqtt", 100.0, 30.0) is None
    assert choose_peer([hint("b", 1, mqtt=False)], "coap", 100.0, 30.0) is not None
    assert choose_peer([], "mqtt", 100.0, 30.0) is None


def test_edges_already_sent_count_against_a_peers_room() -> None:
    hints = [hint("b", 8), hint("c", 7)]
    assert choose_peer(hints, "mqtt", 100.0, 30.0, {"c": 2}).fog_id == "b"  # type: ignore[union-attr]
    assert choose_peer(hints, "mqtt", 100.0, 30.0, {"b": 2, "c": 3}) is None


def test_redirect_message_names_the_peer_and_its_address() -> None:
    msg = redirect_message(hint("b", 1), "mqtt", "10.0.0.2")
    assert msg == {"type": "redirect", "host": "10.0.0.2", "port": 1883, "fog_id": "b",
                   "transport": "mqtt", "coap_host": "10.0.0.2", "coap_port": 5683}
    assert redirect_message(hint("b", 1), "coap", "10.0.0.2")["port"] == 5683
    with pytest.raises(PeerError):
        redirect_message(hint("b", 1, coap=False), "coap", "10.0.0.2")


def test_the_redirect_host_is_the_configured_one_not_the_hints() -> None:
    msg = redirect_message(hint("b", 1), "mqtt", "fog-b.site")  # the hint says 10.0.0.2
    assert msg["host"] == msg["coap_host"] == "fog-b.site"


@given(st.lists(st.one_of(st.just(0.0), st.floats(1e-3, 1e4)), min_size=1, max_size=4),
       st.integers(0, 2**32 - 1))
def test_gossip_mix_is_numpys_weighted_average(weights: list[float], seed: int) -> None:
    if sum(weights) <= 0:
        weights[0] = 1.0
    rng = np.random.default_rng(seed)
    models = [[rng.standard_normal((3, 2)).astype(np.float32),
               rng.standard_normal(2).astype(np.float32)] for _ in weights]
    got = mix(models[0], weights[0], list(zip(models[1:], weights[1:], strict=True)))
    for i in range(2):
        expected = np.average(np.stack([m[i] for m in models]), axis=0, weights=weights)
        np.testing.assert_allclose(got[i], expected, rtol=1e-5, atol=1e-6)
        assert got[i].dtype == np.float32


def test_gossip_mix_refuses_bad_weights_and_shapes() -> None:
    own = [np.zeros(2, np.float32)]
    with pytest.raises(ValueError, match="weights"):
        mix(own, 0.0, [])
    with pytest.raises(ValueError, match="weights"):
        mix(own, 1.0, [(own, -1.0)])
    with pytest.raises(ValueError, match="weights"):
        mix(own, float("nan"), [(own, 1.0)])
    with pytest.raises(ValueError, match="shapes"):
        mix(own, 1.0, [([np.zeros(3, np.float32)], 1.0)])


GOOD_DEVICE = {"device_id": "edge-7", "key": "ab" * 32, "role": "train", "from": "a",
               "mqtt_password_hash": "$7$101$c2FsdA==$aGFzaA=="}


def test_a_handed_over_device_record_is_parsed() -> None:
    dev = parse_device(GOOD_DEVICE)
    assert dev.id == "edge-7" and dev.key == bytes.fromhex("ab" * 32)
    assert dev.info == {"handed_over_by": "a"}


@pytest.mark.parametrize(("change", "message"), [
    ({"device_id": "fog-x"}, "device_id"), ({"device_id": "a/b"}, "device_id"),
    ({"device_id": 7}, "device_id"), ({"key": "ab"}, "key"), ({"key": "zz" * 32}, "key"),
    ({"mqtt_password_hash": "plain"}, "hash"), ({"role": "admin"}, "role"),
])
def test_bad_device_records_are_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_device({**GOOD_DEVICE, **change})


@given(st.one_of(st.none(), st.integers(), st.lists(st.integers()), st.dictionaries(
    st.sampled_from(list(GOOD_DEVICE)), st.one_of(st.text(max_size=70), st.integers()))))
def test_garbage_device_records_only_raise_value_error(obj: object) -> None:
    with contextlib.suppress(ValueError):
        parse_device(obj)


def test_a_redirect_parses_back_from_the_message_the_node_sends() -> None:
    r = parse_redirect(redirect_message(hint("hall-c", 1), "mqtt", "10.0.0.2"))
    assert r == Redirect("hall-c", "10.0.0.2", 1883, "10.0.0.2", 5683)
    assert parse_redirect({"type": "redirect", "fog_id": "b", "host": "h", "port": 5683}) \
        == Redirect("b", "h", 5683)


@pytest.mark.parametrize("change", [
    {"fog_id": "a/b"}, {"fog_id": "#"}, {"fog_id": ""}, {"fog_id": 3}, {"host": ""},
    {"host": None}, {"port": 0}, {"port": 65536}, {"port": True}, {"port": "1883"},
    {"coap_port": 0}, {"coap_host": None}, {"host": "h" * 254},
])
def test_malformed_redirects_are_refused(change: dict[str, object]) -> None:
    msg = {**redirect_message(hint("b", 1), "mqtt", "10.0.0.2"), **change}
    with pytest.raises(ProtocolError):
        parse_redirect(msg)


@given(st.dictionaries(st.sampled_from(["fog_id", "host", "port", "coap_host", "coap_port",
                                        "type"]),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=9))))
def test_garbage_redirects_only_raise_protocol_error(msg: dict[str, object]) -> None:
    with contextlib.suppress(ProtocolError):
        parse_redirect(msg)

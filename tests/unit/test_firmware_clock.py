"""The clock before TLS (edge_firmware/device/clock.py): NTP is asked at power-on (the RTC
reads 2000) when the broker is reached over TLS, and only then. ``ntptime`` is hostsim's
fake (NTP is a network boundary; CPython cannot set the host's clock)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.firmware_support import firmware

clock = firmware("clock")
ntptime = firmware("ntptime")

PEM = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"


@pytest.fixture(autouse=True)
def _ntp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clock, "sleep_ms", lambda ms: None)
    ntptime.calls.clear()
    ntptime.answers = True


def _conf(ca: str | None, **edge: Any) -> dict[str, Any]:
    return {"mqtt": {"ca": ca}, "edge": edge}


def test_a_power_on_clock_is_set_by_ntp_before_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    years = iter([2000, 2026, 2026])
    monkeypatch.setattr(clock, "year", lambda: next(years))
    assert clock.ensure(_conf(PEM, ntp_host="ntp.lan")) is True
    assert ntptime.calls == ["ntp.lan"]


def test_no_ntp_without_tls_or_with_a_set_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clock, "year", lambda: 2000)
    assert clock.ensure(_conf(None)) is False
    monkeypatch.setattr(clock, "year", lambda: 2027)
    assert clock.ensure(_conf(PEM)) is False
    assert ntptime.calls == []


def test_no_ntp_answer_is_a_clear_bounded_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clock, "year", lambda: 2000)
    ntptime.answers = False
    with pytest.raises(clock.ClockError, match=r"clock reads 2000 and NTP pool\.ntp\.org"):
        clock.ensure(_conf(PEM), attempts=2)
    assert ntptime.calls == ["pool.ntp.org"] * 2


def test_the_uplink_sets_the_clock_before_its_tls_handshake(
        monkeypatch: pytest.MonkeyPatch) -> None:
    uplink = firmware("uplink")
    monkeypatch.setattr(clock, "year", lambda: 2000)
    monkeypatch.setattr(uplink, "sleep_ms", lambda ms: None)
    ntptime.answers = False
    conf = {"device_id": "esp-1", "mqtt": {"ca": PEM}, "edge": {"ntp_host": "ntp.lan"},
            "topics": {"up": "u", "hello": "h", "down": "d", "model": "m", "model_blob": "b"}}
    link = uplink.Uplink(conf, "127.0.0.1", 1, io_timeout=1)
    with pytest.raises(uplink.LinkDown, match="unreachable after 1 attempts"):
        link.connect(attempts=1)
    assert ntptime.calls and set(ntptime.calls) == {"ntp.lan"}

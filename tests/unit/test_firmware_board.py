"""The board layer (edge_firmware/device/board.py, wifi.py) over the fake ``machine`` and
``network`` modules: blink codes, the halt that is not a crash loop, the back-off, the
battery reading, Wi-Fi retries."""

from __future__ import annotations

import socket
import time

import pytest

from tests.firmware_support import firmware

board = firmware("board")
wifi = firmware("wifi")
machine = firmware("machine")
network = firmware("network")
fs = firmware("flashstate")
watchdog = firmware("watchdog")


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(board, "sleep_ms", lambda ms: None)
    monkeypatch.setattr(wifi, "sleep_ms", lambda ms: None)
    machine.pin_log.clear()
    machine.adc_microvolts.clear()


def pulses(pin: int) -> int:
    return sum(1 for p, v in machine.pin_log if p == pin and v == 1)


@pytest.mark.parametrize("code", [2, 5, 8])
def test_blink_flashes_the_code(code: int) -> None:
    b = board.Board({"led": 2})
    b.blink(code)
    assert pulses(2) == code
    assert machine.pin_log[-1] == (2, 0)


def test_an_active_low_led_is_inverted() -> None:
    b = board.Board({"led": 5, "led_active_low": True})
    b.led(1)
    assert machine.pin_log[-1] == (5, 0)


class _Stop(Exception):
    pass


def test_halt_reports_and_blinks_forever_without_resetting(capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    b = board.Board({"led": 2})
    seen: list[int] = []

    def blink(code: int) -> None:
        seen.append(code)
        if len(seen) == 25:
            raise _Stop

    b.blink = blink  # type: ignore[method-assign]
    with pytest.raises(_Stop):
        board.halt(b, 3, "config.json is not valid JSON")
    assert seen == [3] * 25
    out = capsys.readouterr().out
    assert out.count("config.json is not valid JSON") == 3  # repeated for a late REPL
    assert "blink code 3" in out


def test_back_off_doubles_its_deep_sleep_up_to_a_cap(tmp_path: object) -> None:
    st = fs.State(str(tmp_path) + "/")
    b = board.Board({"led": 2})
    sleeps = []
    for _ in range(12):
        with pytest.raises(machine.DeepSleep) as ds:
            board.back_off(b, st, board.CODE_BROKER, "broker down", max_s=3600)
        sleeps.append(ds.value.ms // 1000)
    assert sleeps[:5] == [10, 20, 40, 80, 160]
    assert max(sleeps) == 3600 and sleeps[-1] == 3600
    assert fs.State(str(tmp_path) + "/").crashes == 12
    assert pulses(2) == 12 * 3 * board.CODE_BROKER


def test_battery_percent_from_the_divider() -> None:
    b = board.Board({"battery": {"pin": 35, "divider": 2.0, "empty_mv": 3300,
                                 "full_mv": 4200}})
    machine.adc_microvolts[35] = 1_875_000  # 3.75 V at the battery
    assert b.battery() == 50
    machine.adc_microvolts[35] = 2_500_000
    assert b.battery() == 100
    machine.adc_microvolts[35] = 1_000_000
    assert b.battery() == 0
    assert board.Board({}).battery() is None
    assert b.cpu_mhz() == 240


def test_wifi_connects_retries_and_gives_up() -> None:
    network.networks.clear()
    network.networks["lab"] = "secret"
    conf = {"wifi": {"ssid": "lab", "password": "secret"}}
    assert wifi.up(conf, attempts=2, timeout_ms=10).isconnected()
    assert wifi.up({}) is None  # no wifi section: the network is managed elsewhere
    network.connect_calls.clear()
    wlan = network.WLAN(network.STA_IF)
    wlan.disconnect()
    with pytest.raises(wifi.WifiError, match="'lab' did not connect after 3"):
        wifi.up({"wifi": {"ssid": "lab", "password": "wrong"}}, attempts=3, timeout_ms=10)
    assert network.connect_calls == ["lab"] * 3


def test_the_watchdog_resets_a_board_blocked_in_a_read() -> None:
    # hostsim's machine.WDT (a hardware boundary) interrupts even a blocking socket read.
    a, b = socket.socketpair()
    try:
        watchdog.start(400)
        for _ in range(6):  # fed in time: no reset
            time.sleep(0.1)
            watchdog.feed()
        t0 = time.monotonic()
        with pytest.raises(machine.Reset):
            a.recv(1)  # nothing will ever come
        assert machine.reset_cause() == machine.WDT_RESET
        assert time.monotonic() - t0 < 30
    finally:
        machine.stop_watchdog()
        watchdog._wdt[0] = None
        machine.state["reset_cause"] = machine.PWRON_RESET
        a.close()
        b.close()


# Wi-Fi station with retries. boot.py calls up() at every reset and wake; the main loop
# calls it again before it talks to the fog (the link may have dropped meanwhile).
import network

import watchdog
from rt import sleep_ms, ticks_diff, ticks_ms


class WifiError(Exception):
    pass


def up(conf, attempts=3, timeout_ms=15000):
    # conf: the whole config. No "wifi" section: the interface is managed elsewhere
    # (wired boards, or a network set up by hand); nothing to do.
    w = conf.get("wifi")
    if not w:
        return None
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if wlan.isconnected():
        return wlan
    delay = 1000
    for n in range(attempts):
        wlan.connect(w["ssid"], w.get("password", ""))
        start = ticks_ms()
        while not wlan.isconnected() and ticks_diff(ticks_ms(), start) < timeout_ms:
            watchdog.feed()
            sleep_ms(200)
        if wlan.isconnected():
            print("wifi: connected to %s as %s" % (w["ssid"], wlan.ifconfig()[0]))
            return wlan
        print("wifi: %s did not connect (attempt %d of %d)" % (w["ssid"], n + 1, attempts))
        try:
            wlan.disconnect()
        except OSError:
            pass
        watchdog.feed()
        sleep_ms(delay)
        delay *= 2
    raise WifiError("Wi-Fi network %r did not connect after %d attempts" % (w["ssid"], attempts))


def connected(conf):
    # False only when config.json names a Wi-Fi network and the station is not on it.
    if not conf.get("wifi"):
        return True
    return network.WLAN(network.STA_IF).isconnected()

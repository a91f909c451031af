# The hardware watchdog: the last bound on every wait. Once started it cannot be stopped
# (ESP32); a loop that stops feeding it for `timeout_ms` resets the board, which then
# boots, finds its pending update on flash and sends it again. Fed from the MQTT poll,
# every wait, the Wi-Fi retries and the training loop; deep sleep stops it.
import machine

_wdt = [None]


def start(timeout_ms):
    # timeout_ms 0: no watchdog (a port without one, or switched off in config.json).
    if not timeout_ms or _wdt[0] is not None:
        return
    try:
        _wdt[0] = machine.WDT(timeout=timeout_ms)
    except (AttributeError, ValueError, OSError) as exc:
        print("watchdog: not available (%r)" % (exc,))


def feed():
    w = _wdt[0]
    if w is not None:
        w.feed()

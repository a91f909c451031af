# Runs first at every reset and every wake from deep sleep: bring Wi-Fi up. It never
# raises: a missing config or a Wi-Fi failure is reported (and blinked) by main.py.
try:
    import settings
    import wifi

    wifi.up(settings.load())
except Exception as exc:  # noqa: BLE001 - boot must always reach main.py
    print("boot: %s" % (exc,))
# main.py reads the config again; the settings module is not kept in the heap.
import sys

settings = None
sys.modules.pop("settings", None)

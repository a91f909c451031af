# The loader: runs first at every reset and every wake from deep sleep, and is never sent
# over the air (docs/firmware.md "Updates over the air"). It picks the app slot named in
# ota.json (app_a or app_b; none of them: the modules at the root, a board flashed before
# slots), counts a boot of a release on trial and, once its trial boots are used up,
# switches back to the previous release; then brings Wi-Fi up. It never raises.
import json
import os
import sys


def _load():
    for name in ("ota.json", "ota.json.tmp"):  # the .tmp only where a rename failed (FAT)
        try:
            with open(name) as f:
                s = json.load(f)
            if isinstance(s, dict):
                return s
        except (OSError, ValueError):
            pass
    return None


def _save(s):
    with open("ota.json.tmp", "w") as f:
        f.write(json.dumps(s))  # one write
    try:
        os.rename("ota.json.tmp", "ota.json")  # atomic on LittleFS
    except OSError:  # FAT cannot rename over a file
        os.remove("ota.json")
        os.rename("ota.json.tmp", "ota.json")


def _slot():
    s = _load()
    if s is None:
        try:
            os.stat("app_a")
            return "a"
        except OSError:
            return None
    if s.get("ok") is False:
        t = s.get("trial")
        if isinstance(t, int) and t > 0:
            s["trial"] = t - 1
        else:
            print("loader: %s did not confirm itself; back to %s" % (s.get("ver"),
                                                                     s.get("pver")))
            s.update(act=s.get("prev"), ver=s.get("pver"), prev=None, pver=None, ok=True,
                     trial=0, rb=s.get("ver"))
        _save(s)
    return s.get("act") if s.get("act") in ("a", "b") else None


try:
    _root = os.getcwd().rstrip("/") + "/"
    for _p in [p for p in sys.path if p.endswith("app_a") or p.endswith("app_b")]:
        sys.path.remove(_p)
    _act = _slot()
    if _act:
        sys.path.insert(0, _root + "app_" + _act)
except Exception as exc:  # noqa: BLE001 - boot must always reach main.py
    print("loader: %s" % (exc,))
try:
    import settings
    import wifi

    wifi.up(settings.load())
except Exception as exc:  # noqa: BLE001 - boot must always reach main.py
    print("boot: %s" % (exc,))
# main.py reads the config again; the settings module and the loader are not kept.
settings = wifi = _load = _save = _slot = None
sys.modules.pop("settings", None)

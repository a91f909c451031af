# Runs after boot.py. Everything happens in edgeloop.main(), which never lets an error
# turn into a crash loop: config faults halt with a blink code and a REPL message, other
# faults back off in deep sleep. Ctrl-C on the REPL interrupts it.
try:
    import edgeloop
except Exception as exc:  # noqa: BLE001 - a broken release must not crash-loop
    print("*** fog edge: cannot load the firmware (%r)" % (exc,))
    edgeloop = None
    try:
        import json

        with open("ota.json") as f:
            trial = json.load(f).get("ok") is False
    except Exception:  # noqa: BLE001
        trial = False
    if trial:  # a release on trial: this counts as one of its boots; the loader rolls back
        import machine

        machine.reset()
    print("*** flash it again")  # a file is missing or was built for another MicroPython
if edgeloop is not None:
    edgeloop.main()

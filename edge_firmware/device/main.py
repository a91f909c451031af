# Runs after boot.py. Everything happens in edgeloop.main(), which never lets an error
# turn into a crash loop: config faults halt with a blink code and a REPL message, other
# faults back off in deep sleep. Ctrl-C on the REPL interrupts it.
try:
    import edgeloop
except ImportError as exc:
    # A file is missing or was built for another MicroPython: stay at the REPL.
    print("*** fog edge: cannot load the firmware (%s); flash it again" % (exc,))
else:
    edgeloop.main()

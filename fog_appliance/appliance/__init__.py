"""The gateway image's boot-time set-up (``fog-appliance appliance …``), run by
``fog-firstboot.service`` on every boot before Mosquitto and the node start.

``paths``       where every file of the appliance lives (one place, testable under a root)
``bootconfig``  boot-partition config → validated active config (or safe defaults + error)
``tls``         the broker's CA and server certificate (``openssl`` on the gateway)
``mosquitto``   the system broker's configuration (pure text)
``setup``       the root part (host name, SSH keys, TLS, broker config, admin token) and the
                node-user part (store, devices from the config, broker password file and ACL)
``cli``         the ``appliance`` command group

See ``docs/image.md``.
"""

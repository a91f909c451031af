"""The appliance's Mosquitto configuration (``/etc/mosquitto/conf.d/fog-appliance.conf``).

Pure: a config in, text out. The image's ``/etc/mosquitto/mosquitto.conf`` holds what never
changes (pid file, persistence in ``/var/lib/mosquitto``, logging to the journal) and
includes this file, which holds what follows from ``fog_config.yaml``: authentication with
the node's password file and ACL, the plain listener (LAN, or loopback only for the node
itself) and the TLS listener for edges.
"""

from __future__ import annotations

from fog_appliance.appliance.tls import TlsFiles
from fog_appliance.broker import Listener, broker_limits, render_mosquitto_conf
from fog_appliance.config import FogConfig, parse_broker_url
from fog_appliance.devices.provisioning import broker_files


def render_system_conf(cfg: FogConfig, tls: TlsFiles | None) -> str:
    """Listeners and authentication of the system broker. ``tls`` None: no TLS listener
    (certificates could not be made); the plain listener then stays on the LAN. The text
    comes from the one generator the private broker uses too (``broker/conf.py``)."""
    files = broker_files(cfg)
    _host, port, _tls = parse_broker_url(cfg.edge_interface.mqtt_broker)
    ap = cfg.appliance
    ei = cfg.edge_interface
    tls_on = tls is not None and ap.mqtt_tls_port != 0
    lan_plain = ap.mqtt_lan_plain or not tls_on
    listeners = [Listener(port, None if lan_plain else "127.0.0.1",
                          comment="plain MQTT: the node's own connection"
                          + (", and edges on the LAN" if lan_plain else " (loopback only)"))]
    if tls_on and tls is not None:
        listeners.append(Listener(
            ap.mqtt_tls_port, tls=(tls.ca_cert, tls.server_cert, tls.server_key),
            comment="MQTT over TLS for edges; they verify this gateway with the CA in "
                    "their config"))
    return render_mosquitto_conf(
        passwd=files.passwd, acl=files.acl, listeners=listeners,
        limits=broker_limits(ei.max_frame_bytes, ei.mqtt_blob_max_bytes),
        header=["Written at every boot by fog-firstboot.service from /etc/fog-appliance/"
                "fog_config.yaml;",
                "edits are overwritten: change the config on the boot partition instead."])

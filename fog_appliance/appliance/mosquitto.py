"""The appliance's Mosquitto configuration (``/etc/mosquitto/conf.d/fog-appliance.conf``).

Pure: a config in, text out. The image's ``/etc/mosquitto/mosquitto.conf`` holds what never
changes (pid file, persistence in ``/var/lib/mosquitto``, logging to the journal) and
includes this file, which holds what follows from ``fog_config.yaml``: authentication with
the node's password file and ACL, the plain listener (LAN, or loopback only for the node
itself) and the TLS listener for edges.
"""

from __future__ import annotations

from fog_appliance.appliance.tls import TlsFiles
from fog_appliance.config import FogConfig, parse_broker_url
from fog_appliance.provisioning import broker_files

MIN_PACKET = 16 * 1024 * 1024
FRAME_MARGIN = 64 * 1024


def render_system_conf(cfg: FogConfig, tls: TlsFiles | None) -> str:
    """Listeners and authentication of the system broker. ``tls`` None: no TLS listener
    (certificates could not be made); the plain listener then stays on the LAN."""
    files = broker_files(cfg)
    _host, port, _tls = parse_broker_url(cfg.edge_interface.mqtt_broker)
    ap = cfg.appliance
    tls_on = tls is not None and ap.mqtt_tls_port != 0
    lan_plain = ap.mqtt_lan_plain or not tls_on
    max_packet = max(MIN_PACKET, cfg.edge_interface.max_frame_bytes + FRAME_MARGIN)
    lines = [
        "# Written at every boot by fog-firstboot.service from /etc/fog-appliance/"
        "fog_config.yaml;",
        "# edits are overwritten: change the config on the boot partition instead.",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {files.passwd}",
        f"acl_file {files.acl}",
        # Mosquitto drops QoS 1 messages past 1000 queued per client by default: a burst
        # of edges reconnecting after an outage exceeds that.
        "max_queued_messages 100000",
        "max_inflight_messages 1000",
        f"max_packet_size {max_packet}",
        "",
        "# plain MQTT: the node's own connection" + (", and edges on the LAN" if lan_plain
                                                      else " (loopback only)"),
        f"listener {port}" if lan_plain else f"listener {port} 127.0.0.1",
    ]
    if tls_on and tls is not None:
        lines += [
            "",
            "# MQTT over TLS for edges; they verify this gateway with the CA in their config",
            f"listener {ap.mqtt_tls_port}",
            f"cafile {tls.ca_cert}",
            f"certfile {tls.server_cert}",
            f"keyfile {tls.server_key}",
        ]
    return "\n".join(lines) + "\n"

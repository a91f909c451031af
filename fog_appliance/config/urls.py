"""Addresses in the config: broker URLs, ``host:port``, loopback hosts. No I/O."""

from __future__ import annotations

import ipaddress

from fog_appliance.errors import ConfigError


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback IP address (``127.0.0.0/8``, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_broker_url(url: str) -> tuple[str, int, bool]:
    """``mqtt://host:port`` or ``mqtts://host:port`` → (host, port, tls)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("mqtt", "mqtts"):
        raise ConfigError("config", "edge_interface.mqtt_broker",
                          f"{url!r} is not mqtt://host:port or mqtts://host:port")
    host, _, port_s = rest.rstrip("/").rpartition(":")
    if not host:
        host, port_s = port_s, ("8883" if scheme == "mqtts" else "1883")
    try:
        port = int(port_s)
    except ValueError:
        raise ConfigError("config", "edge_interface.mqtt_broker",
                          f"port {port_s!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ConfigError("config", "edge_interface.mqtt_broker", f"port {port} out of range")
    return host.strip("[]"), port, scheme == "mqtts"


def parse_host_port(address: str, field_name: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port); ConfigError naming the field."""
    host, sep, port_s = address.strip().rpartition(":")
    if not sep or not host or "/" in address:
        raise ConfigError("config", field_name, f"{address!r} is not host:port")
    try:
        port = int(port_s)
    except ValueError:
        raise ConfigError("config", field_name, f"port {port_s!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise ConfigError("config", field_name, f"port {port} out of range")
    return host.strip("[]"), port



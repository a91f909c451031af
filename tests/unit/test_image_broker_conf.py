"""The appliance's broker side: Mosquitto's configuration text, the TLS names, the broker
files' group and mode, and the CA in device configs."""

from __future__ import annotations

import dataclasses
import grp
import os
import stat
from pathlib import Path

import pytest

from fog_appliance.appliance.mosquitto import render_system_conf
from fog_appliance.appliance.tls import TlsFiles, render_openssl_conf, split_names
from fog_appliance.config import ApplianceConfig, FogConfig, FogNodeConfig, replace
from fog_appliance.devices.provisioning import (
    broker_ca,
    device_config,
    edge_mqtt_port,
    sync_broker_auth,
)
from fog_appliance.errors import BrokerError, ProvisioningError
from fog_appliance.store import Store
from fog_appliance.support.secretfile import write_atomic

TLS = TlsFiles(Path("/etc/fog-appliance/tls"))


def cfg_with(data_dir: str = "/var/lib/fog-appliance", **appliance: object) -> FogConfig:
    """Built directly, unchecked: some of these appliance settings are refused by the
    config's own checks, and the renderers must still cope with them."""
    return FogConfig(appliance=ApplianceConfig(**appliance),  # type: ignore[arg-type]
                     fog_node=FogNodeConfig(data_dir=data_dir))


def test_conf_with_tls_and_plain_on_the_lan() -> None:
    text = render_system_conf(cfg_with(mqtt_lan_plain=True), TLS)
    assert "allow_anonymous false\n" in text
    assert "password_file /var/lib/fog-appliance/broker/passwd\n" in text
    assert "acl_file /var/lib/fog-appliance/broker/acl\n" in text
    assert "listener 1883\n" in text
    assert "listener 8883\nuse_username_as_clientid true\ncafile /etc/fog-appliance/tls/ca.crt\n" \
        in text
    assert "keyfile /etc/fog-appliance/tls/server.key\n" in text
    assert text.index("per_listener_settings") < text.index("listener 1883")


def test_conf_plain_only_on_loopback() -> None:
    text = render_system_conf(cfg_with(mqtt_lan_plain=False), TLS)
    assert "listener 1883 127.0.0.1\n" in text and "listener 8883\n" in text


def test_by_default_edges_on_the_lan_use_tls() -> None:
    """Issue 13 item 8: plain MQTT from the LAN is an opt-in now."""
    text = render_system_conf(cfg_with(), TLS)
    assert "listener 1883 127.0.0.1\n" in text and "listener 8883\n" in text
    assert "listener 1883\n" not in text


def test_conf_without_certificates_keeps_plain_on_the_lan() -> None:
    # openssl failed: edges must still reach the broker, so 1883 stays on the LAN.
    text = render_system_conf(cfg_with(mqtt_lan_plain=False), None)
    assert "listener 1883\n" in text
    assert "8883" not in text and "cafile" not in text


def test_conf_tls_port_zero_turns_tls_off() -> None:
    text = render_system_conf(cfg_with(mqtt_tls_port=0), TLS)
    assert "cafile" not in text


def test_conf_packet_limit_follows_the_frame_limit() -> None:
    cfg = cfg_with()
    assert f"max_packet_size {8 * 1024 * 1024 + 65536}\n" in render_system_conf(cfg, TLS)
    cfg = replace(cfg, {
        "edge_interface.max_frame_bytes": 64 * 1024 * 1024,
    })
    assert f"max_packet_size {64 * 1024 * 1024 + 65536}\n" in render_system_conf(cfg, TLS)


def test_conf_uses_the_port_of_the_nodes_broker_url() -> None:
    cfg = cfg_with()
    cfg = replace(cfg, {
        "edge_interface.mqtt_broker": "mqtt://127.0.0.1:11883",
    })
    assert "listener 11883 127.0.0.1\n" in render_system_conf(cfg, TLS)


def test_split_names() -> None:
    dns, ips = split_names(["gw", "gw.local", "gw", "192.168.1.2", "::1", "bad name!",
                            "a" * 64, "-x", "10.0.0.1", "192.168.1.2"])
    assert dns == ["gw", "gw.local"]
    assert ips == ["192.168.1.2", "::1", "10.0.0.1"]


def test_openssl_conf_lists_the_names() -> None:
    text = render_openssl_conf(["gw", "gw.local"], ["127.0.0.1"])
    assert "DNS.1 = gw\nDNS.2 = gw.local\nIP.1 = 127.0.0.1" in text
    assert "extendedKeyUsage = serverAuth" in text
    assert "subjectAltName" not in render_openssl_conf([], [])


def test_write_atomic_sets_the_exact_mode_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_atomic(tmp_path / "f", "x", 0o644)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o644


def test_write_atomic_with_a_group(tmp_path: Path) -> None:
    group = grp.getgrgid(os.getegid()).gr_name
    write_atomic(tmp_path / "f", "x", 0o640, group)
    st = (tmp_path / "f").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o640, os.getegid())


def test_write_atomic_names_a_missing_group(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="group 'no-such-group-fog' does not exist"):
        write_atomic(tmp_path / "f", "x", 0o640, "no-such-group-fog")
    assert not (tmp_path / "f").exists()


def test_sync_broker_auth_shares_the_files_with_the_group(tmp_path: Path) -> None:
    group = grp.getgrgid(os.getegid()).gr_name
    cfg = cfg_with(str(tmp_path), broker_files_group=group)
    store = Store.open(tmp_path / "fog.db")
    try:
        sync_broker_auth(cfg, store)
    finally:
        store.close()
    broker = tmp_path / "broker"
    assert stat.S_IMODE(broker.stat().st_mode) == 0o750
    for name, mode in (("passwd", 0o640), ("acl", 0o640), ("fog.secret", 0o600)):
        assert stat.S_IMODE((broker / name).stat().st_mode) == mode, name


def test_sync_broker_auth_without_a_group_stays_private(tmp_path: Path) -> None:
    cfg = cfg_with(str(tmp_path))
    store = Store.open(tmp_path / "fog.db")
    try:
        sync_broker_auth(cfg, store)
    finally:
        store.close()
    assert stat.S_IMODE((tmp_path / "broker/passwd").stat().st_mode) == 0o600


def test_broker_ca(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    cfg = cfg_with(mqtt_ca_file=str(ca))
    assert broker_ca(cfg) is None  # not made yet
    ca.write_text("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")
    assert broker_ca(cfg) == ca.read_text()
    assert broker_ca(cfg_with(mqtt_ca_file=str(ca), mqtt_tls_port=0)) is None
    assert broker_ca(cfg_with()) is None
    rel = dataclasses.replace(cfg_with(mqtt_ca_file="ca.crt"), base_dir=str(tmp_path))
    assert broker_ca(rel) == ca.read_text()
    ca.write_bytes(b"\xff\xfe")
    with pytest.raises(ProvisioningError, match="cannot read the broker CA"):
        broker_ca(cfg)


def test_device_config_points_edges_at_tls_when_there_is_a_ca(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("PEM")
    with_ca = device_config(cfg_with(mqtt_ca_file=str(ca), mqtt_tls_port=18883), "e1",
                            b"k" * 32, "pw")["mqtt"]
    assert (with_ca["port"], with_ca["tls"], with_ca["ca"]) == (18883, True, "PEM")
    plain = device_config(cfg_with(), "e1", b"k" * 32, "pw")["mqtt"]
    assert (plain["port"], plain["tls"], plain["ca"]) == (1883, False, None)
    # peers advertise the port device configs name, so a redirect lands on TLS too
    assert edge_mqtt_port(cfg_with(mqtt_ca_file=str(ca), mqtt_tls_port=18883), 1883) == 18883
    assert edge_mqtt_port(cfg_with(), 1883) == 1883

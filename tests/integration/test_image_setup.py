"""The image's boot-time set-up against real files, real openssl and a real Mosquitto:
the broker accepts the generated configuration, edges connect over TLS with the CA from
their device config, and the password file follows provisioning."""

from __future__ import annotations

import grp
import json
import os
import signal
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from fog_appliance.appliance.paths import STATUS_NAME, AppliancePaths
from fog_appliance.appliance.setup import Accounts, init_data, setup_system
from fog_appliance.broker import find_mosquitto, fog_password, fog_username, free_port
from fog_appliance.config import load_config
from fog_appliance.devices.provisioning import broker_files, provision
from fog_appliance.store import Store

REPO = Path(__file__).resolve().parents[2]
DEFAULTS = REPO / "image/common/overlay/usr/share/fog-appliance/appliance-defaults.yaml"
MACHINE_ID = "0123456789abcdef0123456789abcdef"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx7f0Zb0q4n1h7v9Dz6QnLr8mJ0xgq1yVwVYk0bGzQk t@h"
GROUP = grp.getgrgid(os.getegid()).gr_name

pytestmark = pytest.mark.mosquitto


def make_root(tmp_path: Path, boot: dict[str, Any] | str | None) -> AppliancePaths:
    paths = AppliancePaths.under(tmp_path)
    defaults = yaml.safe_load(DEFAULTS.read_text())
    defaults["fog_node"]["data_dir"] = str(paths.data_root)
    defaults["appliance"]["mqtt_ca_file"] = str(paths.tls / "ca.crt")
    defaults["appliance"]["broker_files_group"] = GROUP
    paths.defaults.parent.mkdir(parents=True)
    paths.defaults.write_text(yaml.safe_dump(defaults))
    paths.machine_id.parent.mkdir(parents=True)
    paths.machine_id.write_text(MACHINE_ID + "\n")
    paths.boot_config.parent.mkdir(parents=True)
    if boot is not None:
        paths.boot_config.write_text(boot if isinstance(boot, str) else yaml.safe_dump(boot))
    return paths


def accounts() -> Accounts:
    return Accounts(service_group=GROUP, broker_group=GROUP, admin_user=None)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.fixture
def booted(tmp_path: Path, ports: tuple[int, int]) -> tuple[AppliancePaths, dict[str, Any]]:
    plain, tls = ports
    boot = {"fog_node": {"id": "site-7", "region": "north"},
            "edge_interface": {"mqtt_broker": f"mqtt://127.0.0.1:{plain}"},
            "appliance": {"provision_devices": ["edge-1"], "mqtt_tls_port": tls,
                          "ssh_authorized_keys": [KEY]},
            "cloud_interface": {"server_url": "superlink.example:9092"}}
    paths = make_root(tmp_path, boot)
    status = setup_system(paths, accounts())
    return paths, status


def test_setup_writes_every_file_with_its_mode(booted: tuple[AppliancePaths, dict[str, Any]],
                                               ports: tuple[int, int]) -> None:
    paths, status = booted
    assert status["status"] == "applied" and status["running_with"] == "boot"
    assert status["node_id"] == "site-7" and status["hostname"] == "site-7"
    assert status["tls"] is True and status["changed"] is True
    assert mode(paths.active_config) == 0o640
    assert paths.active_config.stat().st_gid == os.getegid()
    assert mode(paths.admin_token) == 0o640 and len(paths.admin_token.read_text().strip()) >= 40
    assert paths.hostname.read_text() == "site-7\n"
    assert "127.0.1.1\tsite-7" in paths.hosts.read_text()
    keys = paths.admin_home / ".ssh/authorized_keys"
    assert keys.read_text() == KEY + "\n" and mode(keys) == 0o600
    assert mode(paths.tls / "ca.key") == 0o600
    assert mode(paths.tls / "server.key") == 0o640
    env = paths.cloud_env.read_text()
    assert "FOG_SUPERLINK=superlink.example:9092" in env
    conf = paths.mosquitto_conf.read_text()
    plain, tls = ports
    # TLS for edges by default: the plain listener is the node's own, on loopback
    assert f"listener {plain} 127.0.0.1\n" in conf and f"listener {tls}\n" in conf
    assert f"password_file {paths.data_root}/broker/passwd" in conf
    issue = paths.issue.read_text()
    assert "node site-7, address \\4" in issue and "(applied)" in issue
    saved = json.loads((paths.data_root / STATUS_NAME).read_text())
    assert saved["status"] == "applied" and saved["error"] is None


def test_a_second_boot_changes_nothing(booted: tuple[AppliancePaths, dict[str, Any]]) -> None:
    paths, _status = booted
    before = {p: p.read_bytes() for p in (paths.active_config, paths.admin_token,
                                          paths.tls / "ca.crt", paths.tls / "server.crt",
                                          paths.mosquitto_conf)}
    again = setup_system(paths, accounts())
    assert again["changed"] is False
    assert {p: p.read_bytes() for p in before} == before


def test_new_names_reissue_the_server_cert_from_the_same_ca(
        booted: tuple[AppliancePaths, dict[str, Any]]) -> None:
    paths, _status = booted
    ca = (paths.tls / "ca.crt").read_bytes()
    cert = (paths.tls / "server.crt").read_bytes()
    boot = yaml.safe_load(paths.boot_config.read_text())
    boot["edge_interface"]["advertise_host"] = "192.168.7.2"
    paths.boot_config.write_text(yaml.safe_dump(boot))
    setup_system(paths, accounts())
    assert (paths.tls / "ca.crt").read_bytes() == ca
    assert (paths.tls / "server.crt").read_bytes() != cert
    san = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in",
                          str(paths.tls / "server.crt")], capture_output=True, text=True,
                         check=True).stdout
    assert "IP Address:192.168.7.2" in san and "DNS:site-7.local" in san


def test_removing_keys_and_cloud_turns_ssh_and_the_sidecar_off(
        booted: tuple[AppliancePaths, dict[str, Any]]) -> None:
    paths, _status = booted
    boot = yaml.safe_load(paths.boot_config.read_text())
    del boot["appliance"]["ssh_authorized_keys"]
    del boot["cloud_interface"]
    paths.boot_config.write_text(yaml.safe_dump(boot))
    setup_system(paths, accounts())
    assert not (paths.admin_home / ".ssh/authorized_keys").exists()
    assert not paths.cloud_env.exists()


def test_an_invalid_config_keeps_the_previous_one_and_says_why(
        booted: tuple[AppliancePaths, dict[str, Any]]) -> None:
    paths, _status = booted
    active = paths.active_config.read_bytes()
    paths.boot_config.write_text("fog_node: {id: site-8}\nrounds:\n  deadline_s: -5\n")
    status = setup_system(paths, accounts())
    assert (status["status"], status["running_with"]) == ("invalid", "previous")
    assert status["error"]["field"] == "rounds.deadline_s"
    assert status["error"]["file"] == "/boot/firmware/fog_config.yaml"
    assert paths.active_config.read_bytes() == active
    issue = paths.issue.read_text()
    assert ("CONFIG ERROR: /boot/firmware/fog_config.yaml: rounds.deadline_s: -5.0 must be "
            "greater than 0.0") in issue
    assert "runs with the previous good config" in issue
    cfg = load_config(paths.active_config)
    init_data(cfg)
    store = Store.open(cfg.db_path)
    try:
        events = [e for e in store.events() if e.kind == "config"]
    finally:
        store.close()
    assert events[-1].level == "error"
    assert "rounds.deadline_s" in events[-1].message


def test_init_data_registers_devices_and_shares_the_broker_files(
        booted: tuple[AppliancePaths, dict[str, Any]], ports: tuple[int, int]) -> None:
    paths, _status = booted
    cfg = load_config(paths.active_config)
    assert init_data(cfg) == ["edge-1"]
    assert init_data(cfg) == []  # idempotent
    files = broker_files(cfg)
    for p in (files.passwd, files.acl):
        assert mode(p) == 0o640 and p.stat().st_gid == grp.getgrnam(GROUP).gr_gid
    assert mode(files.root) == 0o750
    assert mode(files.fog_secret) == 0o600
    bundle = json.loads((paths.data_root / "devices/edge-1.json").read_text())
    assert bundle["mqtt"]["tls"] is True and bundle["mqtt"]["port"] == ports[1]
    assert bundle["mqtt"]["ca"] == (paths.tls / "ca.crt").read_text()
    assert bundle["mqtt"]["host"] == "site-7"
    assert "user edge-1" in files.acl.read_text()


class Broker:
    """The system broker as the appliance runs it, on loopback ports."""

    def __init__(self, paths: AppliancePaths, workdir: Path) -> None:
        conf = paths.mosquitto_conf.read_text()
        lines = []
        for line in conf.splitlines():
            parts = line.split()
            bare_listener = parts[:1] == ["listener"] and len(parts) == 2
            lines.append(f"{line} 127.0.0.1" if bare_listener else line)  # loopback only
        if os.geteuid() == 0:
            lines.append("user root")  # the test's files are not the mosquitto user's
        lines += ["persistence false", "log_dest stderr"]
        self.conf = workdir / "mosquitto-test.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, port: int) -> None:
        exe = find_mosquitto()
        assert exe is not None
        self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        import socket

        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("mosquitto did not start")

    def reload(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)  # Mosquitto rereads the files between network loop iterations

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=5)
            if self.proc.stderr:
                self.proc.stderr.close()


def mqtt_connect(port: int, user: str, password: str, ca_pem: str | None = None,
                 tmp: Path | None = None) -> int:
    """Connect once; the CONNACK reason code (0: accepted)."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{user}-{time.monotonic_ns()}")
    client.username_pw_set(user, password)
    if ca_pem is not None:
        assert tmp is not None
        ca = tmp / "ca.pem"
        ca.write_text(ca_pem)
        client.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
    done = threading.Event()
    result: list[int] = []

    def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        result.append(rc.value)
        done.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port, keepalive=10)
    client.loop_start()
    try:
        assert done.wait(10), "no CONNACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return result[0]


@pytest.fixture
def broker(booted: tuple[AppliancePaths, dict[str, Any]], ports: tuple[int, int],
           tmp_path: Path) -> Iterator[tuple[AppliancePaths, Broker]]:
    paths, _status = booted
    init_data(load_config(paths.active_config))
    b = Broker(paths, tmp_path)
    b.start(ports[0])
    try:
        yield paths, b
    finally:
        b.stop()


def test_edges_connect_over_tls_with_their_bundle(broker: tuple[AppliancePaths, Broker],
                                                  ports: tuple[int, int],
                                                  tmp_path: Path) -> None:
    paths, _b = broker
    bundle = json.loads((paths.data_root / "devices/edge-1.json").read_text())
    m = bundle["mqtt"]
    assert mqtt_connect(m["port"], m["username"], m["password"], m["ca"], tmp_path) == 0
    assert mqtt_connect(m["port"], m["username"], "wrong", m["ca"], tmp_path) != 0
    # The node itself uses the plain listener.
    cfg = load_config(paths.active_config)
    files = broker_files(cfg)
    assert mqtt_connect(ports[0], fog_username("site-7"), fog_password(files)) == 0
    assert mqtt_connect(ports[0], "nobody", "x") != 0


def test_a_device_provisioned_later_connects_after_a_reload(
        broker: tuple[AppliancePaths, Broker], tmp_path: Path) -> None:
    paths, b = broker
    cfg = load_config(paths.active_config)
    store = Store.open(cfg.db_path)
    try:
        conf, _path = provision(cfg, store, "edge-2")
    finally:
        store.close()
    m = conf["mqtt"]
    b.reload()
    assert mqtt_connect(m["port"], "edge-2", m["password"], m["ca"], tmp_path) == 0


def test_plain_off_for_the_lan_binds_loopback_only(tmp_path: Path) -> None:
    paths = make_root(tmp_path, {"appliance": {"mqtt_lan_plain": False}})
    setup_system(paths, accounts())
    conf = paths.mosquitto_conf.read_text()
    assert "listener 1883 127.0.0.1\n" in conf and "listener 8883\n" in conf


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fog_appliance", "appliance", *args],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_cli_setup_init_data_and_status(tmp_path: Path) -> None:
    paths = make_root(tmp_path, "rounds: {deadline_s: nope}\n")
    done = run_cli("setup", "--root", str(tmp_path))
    assert done.returncode == 0, done.stderr  # an invalid config does not fail the boot
    assert ("CONFIG ERROR: /boot/firmware/fog_config.yaml: rounds.deadline_s: expected a "
            "number, got 'nope'") in done.stderr
    done = run_cli("init-data", "-c", str(paths.active_config))
    assert done.returncode == 0, done.stderr
    done = run_cli("status", "-c", str(paths.active_config), "--json")
    assert done.returncode == 1  # invalid boot config
    assert json.loads(done.stdout)["running_with"] == "defaults"
    paths.boot_config.write_text("rounds: {deadline_s: 30}\n")
    assert run_cli("setup", "--root", str(tmp_path)).returncode == 0
    done = run_cli("status", "-c", str(paths.active_config))
    assert done.returncode == 0
    assert "config applied, running with the boot config, TLS on" in done.stderr


def test_cli_status_before_any_setup(tmp_path: Path) -> None:
    cfg = tmp_path / "fog.yaml"
    cfg.write_text(f"fog_node: {{data_dir: {tmp_path / 'data'}}}\n")
    done = run_cli("status", "-c", str(cfg))
    assert done.returncode == 2
    assert "no set-up status yet" in done.stderr

"""The command line as a person uses it: real processes, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.nodeproc import env


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fog_appliance", *args], capture_output=True,
                          check=False,
                          text=True, env=env(), cwd=cwd, timeout=120)


def config(tmp_path: Path, extra: str = "") -> Path:
    p = tmp_path / "fog_config.yaml"
    p.write_text(f"fog_node: {{id: site-a, data_dir: data}}\n{extra}")
    return p


def test_provision_list_revoke(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    out = cli("provision", "sensor-1", "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    conf_path = tmp_path / "data" / "devices" / "sensor-1.json"
    conf = json.loads(conf_path.read_text())
    assert conf["device_id"] == "sensor-1" and len(bytes.fromhex(conf["key"])) == 32
    assert conf["topics"]["up"] == "fog/site-a/up/sensor-1"
    assert oct(conf_path.stat().st_mode & 0o777) == "0o600"
    acl = (tmp_path / "data" / "broker" / "acl").read_text()
    assert "user sensor-1\ntopic write fog/site-a/up/sensor-1" in acl
    passwd = (tmp_path / "data" / "broker" / "passwd").read_text()
    assert passwd.count("\n") == 2 and "sensor-1:$7$101$" in passwd
    dup = cli("provision", "sensor-1", "--config", str(cfg))
    assert dup.returncode == 1 and "already registered" in dup.stderr
    bad = cli("provision", "bad/id", "--config", str(cfg))
    assert bad.returncode == 1 and "A-Z a-z 0-9" in bad.stderr and "Traceback" not in bad.stderr
    listed = json.loads(cli("devices", "--json", "--config", str(cfg)).stdout)
    assert [d["id"] for d in listed] == ["sensor-1"] and not listed[0]["revoked"]
    assert cli("revoke", "sensor-1", "--config", str(cfg)).returncode == 0
    listed = json.loads(cli("devices", "--json", "--config", str(cfg)).stdout)
    assert listed[0]["revoked"]
    assert "sensor-1" not in (tmp_path / "data" / "broker" / "passwd").read_text()
    table = cli("devices", "--config", str(cfg))
    assert "revoked" in table.stdout


def test_bad_config_is_one_clear_line(tmp_path: Path) -> None:
    cfg = config(tmp_path, "edge_interface: {aggregation_threshold: -3}\n")
    out = cli("run", "--config", str(cfg))
    assert out.returncode == 2
    assert out.stderr.strip() == (f"fog-appliance: config error: {cfg}: "
                                  "edge_interface.aggregation_threshold: -3 is below the "
                                  "minimum 1")
    missing = cli("run", "--config", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "file not found" in missing.stderr
    port = cli("run", "--config", str(config(tmp_path)), "--port", "70000")
    assert port.returncode == 2 and "coap.port" in port.stderr


def test_module_and_config_commands(tmp_path: Path) -> None:
    assert "fog-appliance" in cli("--version").stdout
    defaults = cli("config", "--defaults").stdout
    (tmp_path / "d.yaml").write_text(defaults)
    checked = cli("config", "--check", str(tmp_path / "d.yaml"))
    assert checked.returncode == 0 and json.loads(checked.stdout)["fog_node"]["id"] == \
        "fog-local"

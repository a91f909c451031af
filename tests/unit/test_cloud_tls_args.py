"""Issue 13.5: the appliance's SuperNode sidecar takes its TLS flags from
``cloud_interface`` (written to cloud.env at boot) and refuses to start without them."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from fog_appliance.appliance.paths import AppliancePaths
from fog_appliance.appliance.setup import write_cloud_env
from fog_appliance.cloud.supernode import tls_args
from fog_appliance.config import FogConfig, replace
from fog_appliance.errors import ServiceError

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "image/common/overlay/usr/libexec/fog-appliance/supernode"
EXE = "/opt/fog-appliance/venv/bin/flower-supernode"


def _cfg(tmp_path: Path, **cloud: object) -> FogConfig:
    return replace(FogConfig(), {"base_dir": str(tmp_path),
                                 "cloud_interface.server_url": "superlink.example:9092",
                                 **{f"cloud_interface.{k}": v for k, v in cloud.items()}})


def _env_file(paths: AppliancePaths) -> dict[str, str]:
    out = {}
    for line in paths.cloud_env.read_text().splitlines():
        key, _, value = line.partition("=")
        (out[key],) = shlex.split(value) or [""]
    return out


def test_tls_args_follow_the_config_only(tmp_path: Path) -> None:
    assert tls_args(_cfg(tmp_path)) == []  # TLS, the system's CAs
    assert tls_args(_cfg(tmp_path, insecure=True)) == ["--insecure"]
    with pytest.raises(ServiceError, match="does not exist"):
        tls_args(_cfg(tmp_path, root_certificates="ca.pem"))
    (tmp_path / "ca.pem").write_text("pem")
    assert tls_args(_cfg(tmp_path, root_certificates="ca.pem")) == [
        "--root-certificates", str(tmp_path / "ca.pem")]
    (tmp_path / "a b.pem").write_text("pem")
    with pytest.raises(ServiceError, match="spaces"):
        tls_args(_cfg(tmp_path, root_certificates="a b.pem"))


def test_cloud_env_carries_the_tls_flags(tmp_path: Path) -> None:
    paths = AppliancePaths.under(tmp_path)
    paths.cloud_env.parent.mkdir(parents=True, exist_ok=True)
    write_cloud_env(paths, _cfg(tmp_path))
    env = _env_file(paths)
    assert env["FOG_SUPERLINK"] == "superlink.example:9092"
    assert env["FOG_SUPERNODE_ARGS"] == ""  # present and empty: TLS, not --insecure
    (tmp_path / "ca.pem").write_text("pem")
    write_cloud_env(paths, _cfg(tmp_path, root_certificates="ca.pem"))
    assert _env_file(paths)["FOG_SUPERNODE_ARGS"] == f"--root-certificates {tmp_path}/ca.pem"
    write_cloud_env(paths, _cfg(tmp_path, insecure=True))
    assert _env_file(paths)["FOG_SUPERNODE_ARGS"] == "--insecure"
    # a CA that is not there: no cloud.env, so the sidecar does not start at all
    write_cloud_env(paths, _cfg(tmp_path, root_certificates="missing.pem"))
    assert not paths.cloud_env.exists()


def _run_script(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The image's script with the SuperNode replaced by a program that prints its argv."""
    fake = tmp_path / "fake-supernode"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    fake.chmod(0o755)
    script = tmp_path / "supernode"
    script.write_text(SCRIPT.read_text().replace(EXE, str(fake)))
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    return subprocess.run(["sh", str(script)], env={**base, **env}, capture_output=True,
                          text=True, timeout=30, check=False)


def test_the_sidecar_script_refuses_to_start_without_tls_settings(tmp_path: Path) -> None:
    assert EXE in SCRIPT.read_text()
    missing = _run_script(tmp_path, {"FOG_SUPERLINK": "superlink.example:9092"})
    assert missing.returncode != 0 and missing.stdout == ""
    assert "no FOG_SUPERNODE_ARGS" in missing.stderr
    tls = _run_script(tmp_path, {"FOG_SUPERLINK": "s:1", "FOG_SUPERNODE_ARGS": ""})
    assert tls.returncode == 0 and tls.stdout.strip() == '["--superlink", "s:1"]'
    ca = _run_script(tmp_path, {"FOG_SUPERLINK": "s:1",
                                "FOG_SUPERNODE_ARGS": "--root-certificates /etc/ca.pem"})
    assert ca.stdout.strip() == '["--superlink", "s:1", "--root-certificates", "/etc/ca.pem"]'

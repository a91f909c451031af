"""The ``flower-supernode`` sidecar: its command line, its environment, a systemd unit, and a
supervisor for development and tests.

``supernode_argv``/``supernode_env``/``render_unit`` are pure. The node-config tells the
ClientApp shim where the fog's local cloud API is (``fog-api``) and where its bearer token
is (``fog-token-file``). Flower's telemetry and update checks are off, runtime dependency
installation stays off (the default on a SuperNode): nothing is downloaded at run time.
:class:`SupernodeSidecar` runs the command as a child in its own process group and restarts
it with backoff when it exits (a SuperNode exits by itself when a SuperLink that lost its
state no longer knows it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

import fog_appliance
from fog_appliance.config import FogConfig
from fog_appliance.errors import ServiceError
from fog_appliance.support.backoff import backoff_delays

log = logging.getLogger(__name__)

OFFLINE_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}
"""Flower's phone-home switches, off everywhere fog-appliance starts Flower."""


def flower_home(cfg: FogConfig) -> Path:
    """FLWR_HOME of the SuperNode: installed app bundles (FABs) live here."""
    return cfg.data_dir / "flower"


def token_path(cfg: FogConfig) -> Path:
    return cfg.data_dir / "cloud" / "api.token"


def find_supernode() -> str:
    beside = Path(sys.executable).parent / "flower-supernode"
    if beside.exists():
        return str(beside)
    found = shutil.which("flower-supernode")
    if found is None:
        raise ServiceError("flower-supernode is not installed (pip install "
                           "'fog-appliance[cloud]'); the node runs standalone")
    return found


def node_config(api_url: str, token_file: Path, round_timeout: float) -> str:
    """The ``--node-config`` value: space-separated ``key=value`` pairs, TOML values."""
    for value in (api_url, str(token_file)):
        if any(c in value for c in '"\\'):
            raise ServiceError(f"{value!r}: Flower's --node-config cannot carry quotes or "
                               "backslashes; use a data_dir without them")
    return (f'fog-api="{api_url}" fog-token-file="{token_file}" '
            f"round-timeout={float(round_timeout)}")


def supernode_argv(cfg: FogConfig, api_url: str, runtime_port: int,
                   exe: str | None = None) -> list[str]:
    ci = cfg.cloud_interface
    if not ci.server_url:
        raise ServiceError("cloud_interface.server_url is not set: no SuperLink to join")
    argv = [exe or find_supernode(), "--superlink", ci.server_url,
            "--node-config", node_config(api_url, token_path(cfg), ci.round_timeout),
            "--isolation", "subprocess", "--host", "127.0.0.1", "--port", str(runtime_port)]
    return argv + tls_args(cfg)


def tls_args(cfg: FogConfig) -> list[str]:
    """The SuperNode's TLS flags, from ``cloud_interface`` only: ``--insecure`` exactly when
    ``insecure: true``; ``--root-certificates FILE`` (relative to the config's directory)
    when set; nothing otherwise (TLS verified against the system's CAs). Raises
    ServiceError when the CA file is missing or its path cannot be passed as one word:
    the sidecar is not started then, rather than started without the CA."""
    ci = cfg.cloud_interface
    if ci.insecure:
        return ["--insecure"]
    if not ci.root_certificates:
        return []
    path = Path(cfg.base_dir) / ci.root_certificates
    if any(c.isspace() or c in "'\"\\$`" for c in str(path)):
        raise ServiceError(f"cloud_interface.root_certificates {str(path)!r}: the path must "
                           "not contain spaces, quotes, $ or backslashes")
    if not path.is_file():
        raise ServiceError(f"cloud_interface.root_certificates {path} does not exist; the "
                           "SuperNode is not started without the SuperLink's CA")
    return ["--root-certificates", str(path)]


def path_with_our_bin(path: str) -> str:
    """``PATH`` with this interpreter's scripts directory first: Flower's processes start
    their helpers by name (flower-superlink starts ``flwr-serverapp``, a SuperNode
    ``flwr-clientapp``), and a venv's are found only there when it is not activated."""
    bindir = str(Path(sys.executable).parent)
    return os.pathsep.join([bindir, *[p for p in path.split(os.pathsep) if p and p != bindir]])


def supernode_env(cfg: FogConfig, base: Mapping[str, str]) -> dict[str, str]:
    """The environment: offline switches, FLWR_HOME, and the paths under which the
    SuperNode's helpers (flower-superexec, flwr-clientapp) and fog_appliance are found."""
    env = dict(base)
    env.update(OFFLINE_ENV)
    env["FLWR_HOME"] = str(flower_home(cfg))
    env["PATH"] = path_with_our_bin(env.get("PATH", ""))
    pkg_parent = str(Path(fog_appliance.__file__).resolve().parent.parent)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != pkg_parent]
    env["PYTHONPATH"] = os.pathsep.join([pkg_parent, *paths])
    return env


def render_unit(config_path: str, fog_id: str, python: str = "/usr/bin/python3",
                data_dir: str = "/var/lib/fog-appliance") -> str:
    """A systemd unit that runs the SuperNode beside the fog service."""
    env = " ".join(f"{k}={v}" for k, v in OFFLINE_ENV.items())
    return "\n".join([
        "[Unit]",
        f"Description=Flower SuperNode of fog node {fog_id} (cloud tier)",
        "After=network-online.target fog-appliance.service",
        "Wants=network-online.target",
        "PartOf=fog-appliance.service",
        "",
        "[Service]",
        f"Environment={env} FLWR_HOME={data_dir}/flower",
        f"ExecStart={python} -m fog_appliance cloud supernode --config {config_path}",
        "Restart=always",
        "RestartSec=5",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])


class SupernodeSidecar:
    """Runs ``argv`` until cancelled, restarting it with backoff when it exits."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None \
            else None

    async def run(self) -> None:
        delays = backoff_delays(initial=1.0, maximum=30.0)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            while True:
                with self.log_path.open("ab") as out:
                    self.proc = await asyncio.create_subprocess_exec(
                        *self.argv, env=self.env, stdin=asyncio.subprocess.DEVNULL,
                        stdout=out, stderr=out, start_new_session=True)
                self.starts += 1
                log.info("flower-supernode started (pid %d), log %s", self.proc.pid,
                         self.log_path)
                code = await self.proc.wait()
                delay = next(delays)
                log.warning("flower-supernode exited with %s; restarting in %.1f s", code,
                            delay)
                await asyncio.sleep(delay)
        finally:
            await asyncio.shield(self.stop())

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()

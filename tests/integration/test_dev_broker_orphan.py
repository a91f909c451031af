"""``fog-appliance run --dev`` and its private Mosquitto after the node is ``kill -9``'d
(issue 12, item 4): the broker dies with the node, a stale one left by an earlier owner is
recognised and replaced, and none outlives the next clean stop. Real processes."""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fog_appliance.broker import find_mosquitto, render_conf
from fog_appliance.devices.provisioning import broker_files
from tests.conftest import make_config
from tests.nodeproc import env, write_config

pytestmark = pytest.mark.mosquitto


def start_dev(config: Path, data: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``run --dev``; returns the process and its broker's pid once it serves."""
    (data / "node.json").unlink(missing_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "fog_appliance", "run", "--dev",
                                 "--config", str(config)], stdout=out,
                                stderr=subprocess.STDOUT, env=env())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if json.loads((data / "node.json").read_text()).get("pid") == proc.pid:
                pid = int((data / "broker" / "mosquitto.pid").read_text().split()[0])
                return proc, pid
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"node did not start:\n{log.read_text()[-3000:]}")


def brokers_of(conf: Path) -> list[int]:
    """Live Mosquitto processes running this data dir's config."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(args) >= 3 and args[0].endswith(b"mosquitto") and \
                str(conf.resolve()).encode() in args:
            found.append(int(entry.name))
    return found


def wait_gone(pid: int, conf: Path, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid not in brokers_of(conf):
            return True
        time.sleep(0.05)
    return False


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)


def test_dev_node_killed_then_restarted_leaves_no_orphan(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    config = write_config(cfg, tmp_path / "fog.yaml")
    conf = broker_files(cfg).conf
    log = tmp_path / "node.log"
    proc, first = start_dev(config, cfg.data_dir, log)
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert wait_gone(first, conf), "the private broker outlived its node"
        proc, second = start_dev(config, cfg.data_dir, log)
        assert second != first
        assert brokers_of(conf) == [second]
        assert stop(proc) == 0
        assert wait_gone(second, conf)
        assert brokers_of(conf) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pid in brokers_of(conf):
            os.kill(pid, signal.SIGKILL)
    # --dev logs at DEBUG, as the README says.
    assert " DEBUG " in log.read_text()


def test_a_stale_broker_from_an_earlier_owner_is_replaced(tmp_path: Path) -> None:
    """A broker that did not die with its owner (an older version, or a broker that was
    re-parented before its owner died): found by the pidfile and its command line."""
    cfg = make_config(tmp_path)
    config = write_config(cfg, tmp_path / "fog.yaml")
    files = broker_files(cfg)
    files.persistence.mkdir(parents=True)
    files.passwd.write_text("")
    files.acl.write_text("")
    port = int(cfg.edge_interface.mqtt_broker.rsplit(":", 1)[1])
    run_as = pwd.getpwuid(os.geteuid()).pw_name if os.geteuid() == 0 else None
    files.conf.write_text(render_conf(files, "127.0.0.1", port, run_as=run_as))
    exe = find_mosquitto()
    assert exe is not None
    orphan = subprocess.Popen([exe, "-c", str(files.conf.resolve())],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    gone_owner = subprocess.Popen(["true"])
    gone_owner.wait()
    files.pid.write_text(f"{orphan.pid} {gone_owner.pid}\n")
    proc = None
    try:
        time.sleep(0.5)  # the orphan holds the port
        assert orphan.poll() is None
        proc, broker = start_dev(config, cfg.data_dir, tmp_path / "node.log")
        assert orphan.wait(15) is not None  # stopped by the node at its start
        assert brokers_of(files.conf) == [broker]
        assert stop(proc) == 0
        assert wait_gone(broker, files.conf)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait(10)

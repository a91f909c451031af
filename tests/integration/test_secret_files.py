"""Files written with secrets or as root into the node's directory (issue 13, item 9): one
helper, 0600 from creation, never through a symlink, one secret even with racing writers."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from pathlib import Path

from fog_appliance.admin.server import load_or_create_token
from fog_appliance.appliance.paths import STATUS_NAME
from fog_appliance.appliance.setup import Accounts, setup_system
from fog_appliance.broker import BrokerFiles, fog_password
from fog_appliance.support.localhttp import read_or_create_token
from fog_appliance.support.secretfile import read_or_create_secret, write_atomic
from tests.integration.test_image_setup import make_root


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_first_boot_does_not_follow_symlinks_planted_in_the_data_dir(tmp_path: Path) -> None:
    """A compromised node user plants symlinks at the status file and at its old fixed
    temporary name; the root half of the set-up must not write through either."""
    paths = make_root(tmp_path, {"fog_node": {"id": "site-9"}})
    victim = tmp_path / "etc" / "shadow-like"
    victim.parent.mkdir(parents=True, exist_ok=True)
    victim.write_text("root-only content\n")
    data = paths.data_root
    data.mkdir(parents=True)
    (data / f"{STATUS_NAME}.tmp").symlink_to(victim)
    (data / STATUS_NAME).symlink_to(victim)
    setup_system(paths, Accounts.none())
    assert victim.read_text() == "root-only content\n"
    status = data / STATUS_NAME
    assert not status.is_symlink() and stat.S_ISREG(status.lstat().st_mode)
    assert json.loads(status.read_text())["node_id"] == "site-9"
    assert mode(status) == 0o644


def test_every_secret_writer_creates_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o000)
    try:
        admin = load_or_create_token(tmp_path / "a" / "admin.token")
        peer = read_or_create_token(tmp_path / "b" / "peer.token")
        broker = fog_password(BrokerFiles(tmp_path / "c"))
        write_atomic(tmp_path / "d" / "secret", "x\n")
    finally:
        os.umask(old)
    for p in (tmp_path / "a" / "admin.token", tmp_path / "b" / "peer.token",
              tmp_path / "c" / "fog.secret", tmp_path / "d" / "secret"):
        assert mode(p) == 0o600, p
    assert len({admin, peer, broker}) == 3
    assert load_or_create_token(tmp_path / "a" / "admin.token") == admin  # made once
    # No temporary files are left beside them.
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["admin.token"]


def test_a_symlink_at_the_secret_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "secret").symlink_to(victim)
    write_atomic(tmp_path / "d" / "secret", "new\n")
    assert victim.read_text() == "keep\n"
    assert not (tmp_path / "d" / "secret").is_symlink()


def _race(path: str, queue: multiprocessing.Queue[str]) -> None:
    queue.put(read_or_create_secret(Path(path), lambda: os.urandom(16).hex()))


def test_racing_processes_get_one_secret(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[str] = ctx.Queue()
    path = tmp_path / "s" / "token"
    procs = [ctx.Process(target=_race, args=(str(path), queue)) for _ in range(6)]
    for p in procs:
        p.start()
    got = {queue.get(timeout=30) for _ in procs}
    for p in procs:
        p.join(30)
    assert got == {path.read_text().strip()}

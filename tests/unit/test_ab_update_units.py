"""A/B updates without a machine (docs/image.md, "Updates"): the slot chooser the
initramfs and RAUC share (image/debian/overlay/usr/libexec/fog-appliance/fog-slot, run
with dash as the initramfs runs it), the decision after a boot, RAUC's status as the CLI
reads it, and the bundle recipe with the real rauc (signed, verified, refused with the
wrong CA). The boot tests (tests/e2e/test_image_update.py) show the whole chain."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fog_appliance.appliance.update import UpdatePaths, decide, describe, parse_rauc_status
from fog_appliance.appliance.update_request import decode, encode, from_fields, percent_of
from fog_appliance.errors import UpdateError
from tests.rauc_support import needs_rauc

REPO = Path(__file__).resolve().parents[2]
DEBIAN = REPO / "image/debian"
FOG_SLOT = DEBIAN / "overlay/usr/libexec/fog-appliance/fog-slot"
SHELL = shutil.which("dash") or "sh"


def slot(state: Path, *args: str, check: bool = True) -> str:
    done = subprocess.run([SHELL, str(FOG_SLOT), *args], capture_output=True, text=True,
                          env={"FOG_SLOT_STATE": str(state), "PATH": "/usr/bin:/bin"},
                          check=False)
    if check:
        assert done.returncode == 0, done.stderr
    return done.stdout.strip() if check else done.stderr


def show(state: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in slot(state, "show").splitlines())


def test_a_fresh_card_boots_a_and_never_the_empty_slot(tmp_path: Path) -> None:
    state = tmp_path / "fog-slot.env"
    state.write_text("ORDER=A B\nA_LEFT=3\nB_LEFT=0\n")
    for left in (2, 1, 0):
        assert slot(state, "choose") == "A"
        assert show(state)["A_LEFT"] == str(left)
    # A never confirmed in three boots: still A (B was never installed), nothing counted.
    assert slot(state, "choose") == "A"
    assert show(state) == {"ORDER": "A B", "A_LEFT": "0", "B_LEFT": "0"}


def test_an_update_boots_the_new_slot_and_falls_back_after_three_attempts(tmp_path: Path
                                                                          ) -> None:
    state = tmp_path / "fog-slot.env"
    state.write_text("ORDER=A B\nA_LEFT=3\nB_LEFT=0\n")
    slot(state, "set-primary", "B")  # what rauc install does at its end
    assert slot(state, "get-primary") == "B"
    assert [slot(state, "choose") for _ in range(4)] == ["B", "B", "B", "A"]
    assert slot(state, "get-state", "B") == "bad"
    assert slot(state, "get-state", "A") == "good"


def test_mark_good_resets_the_attempts_and_mark_bad_falls_back_at_once(tmp_path: Path
                                                                       ) -> None:
    state = tmp_path / "fog-slot.env"
    slot(state, "set-primary", "B")
    assert slot(state, "choose") == "B"
    slot(state, "set-state", "B", "good")  # rauc status mark-good
    assert show(state)["B_LEFT"] == "3"
    slot(state, "set-state", "B", "bad")  # the health check failed: rauc status mark-bad
    assert slot(state, "choose") == "A"
    assert slot(state, "get-primary") == "A"


@pytest.mark.parametrize("text", ["", "garbage", "ORDER=C A\nA_LEFT=3\nB_LEFT=3\n",
                                  "ORDER=A B\nA_LEFT=x\nB_LEFT=3\n",
                                  "ORDER=B A\nA_LEFT=3\nB_LEFT=$(reboot)\n",
                                  "\x00\xff\n"])
def test_a_damaged_state_file_counts_as_a_fresh_card(tmp_path: Path, text: str) -> None:
    state = tmp_path / "fog-slot.env"
    state.write_bytes(text.encode("latin-1"))
    assert slot(state, "choose") == "A"
    assert show(state) == {"ORDER": "A B", "A_LEFT": "2", "B_LEFT": "0"}


def test_an_interrupted_save_is_recovered_from_the_new_copy(tmp_path: Path) -> None:
    state = tmp_path / "fog-slot.env"
    (tmp_path / "fog-slot.env.new").write_text("ORDER=B A\nA_LEFT=3\nB_LEFT=3\n")
    assert slot(state, "choose") == "B"
    assert state.read_text() == "ORDER=B A\nA_LEFT=3\nB_LEFT=2\n"
    assert not (tmp_path / "fog-slot.env.new").exists()


@pytest.mark.parametrize("args", [["set-primary", "C"], ["get-state", ""],
                                  ["set-state", "A", "maybe"], ["set-state", "A;x", "good"],
                                  ["nonsense"]])
def test_bad_arguments_are_refused_and_change_nothing(tmp_path: Path, args: list[str]) -> None:
    state = tmp_path / "fog-slot.env"
    state.write_text("ORDER=A B\nA_LEFT=3\nB_LEFT=0\n")
    assert "fog-slot:" in slot(state, *args, check=False)
    assert state.read_text() == "ORDER=A B\nA_LEFT=3\nB_LEFT=0\n"


# --------------------------------------------------------------------- the decision

PENDING = {"slot": "B", "version": "0.2.0", "from_slot": "A", "from_version": "0.1.0"}


def test_a_healthy_new_slot_is_marked_good_and_reported_updated() -> None:
    d = decide("B", dict(PENDING), True, "healthy", 1.0)
    assert (d.mark, d.reboot, d.keep_pending) == ("good", False, None)
    assert d.result is not None and d.result["result"] == "updated"
    assert "updated to fog-appliance 0.2.0" in describe(d.result)


def test_an_unhealthy_new_slot_is_marked_bad_and_the_gateway_reboots() -> None:
    d = decide("B", dict(PENDING), False, "fog-appliance.service failed", 1.0)
    assert (d.mark, d.reboot) == ("bad", True)
    assert d.keep_pending is not None and "failed" in d.keep_pending["health_failure"]
    # ...and the next boot (slot A) reports the rollback with that reason.
    after = decide("A", d.keep_pending, True, "healthy", 2.0)
    assert (after.mark, after.reboot, after.keep_pending) == ("good", False, None)
    assert after.result is not None and after.result["result"] == "rolled-back"
    assert "fog-appliance.service failed" in after.result["reason"]
    assert after.result["running_version"] == "0.1.0"


def test_a_new_slot_that_never_came_up_is_reported_rolled_back() -> None:
    d = decide("A", dict(PENDING), True, "healthy", 1.0)
    assert d.result is not None and d.result["result"] == "rolled-back"
    assert "boot attempts ran out" in d.result["reason"]


def test_without_an_update_an_unhealthy_slot_is_left_to_its_boot_counter() -> None:
    d = decide("A", None, False, "mosquitto.service is failed", 1.0)
    assert (d.mark, d.reboot, d.result, d.keep_pending) == (None, False, None, None)
    assert decide("A", None, True, "healthy", 1.0).mark == "good"


def test_rauc_status_json_is_read_into_slots() -> None:
    text = json.dumps({
        "compatible": "fog-appliance-rpi-arm64", "booted": "A", "boot_primary": "rootfs.1",
        "slots": [
            {"rootfs.0": {"bootname": "A", "state": "booted", "boot_status": "good",
                          "slot_status": {"bundle": {"version": "0.1.0"}}}},
            {"rootfs.1": {"bootname": "B", "state": "inactive", "boot_status": "good",
                          "slot_status": {"bundle": {"version": "0.2.0"},
                                          "installed": {"timestamp": "2026-12-03T12:00Z"}}}},
        ]})
    status = parse_rauc_status(text)
    assert status["booted"] == "A" and status["primary"] == "B"
    assert status["slots"]["B"] == {"state": "inactive", "boot_status": "good",
                                    "version": "0.2.0", "installed": "2026-12-03T12:00Z"}


@pytest.mark.parametrize("text", ["", "[]", '{"slots": 3}', '{"slots": [1, {"x": 2}]}'])
def test_unusable_rauc_output_is_a_clear_error_or_empty(text: str) -> None:
    from fog_appliance.errors import UpdateError

    try:
        status = parse_rauc_status(text)
    except UpdateError as exc:
        assert "rauc status" in str(exc)
    else:
        assert status["slots"] == {} and status["booted"] is None


def test_paths_are_on_the_data_partition() -> None:
    paths = UpdatePaths.under(Path("/x"))
    assert paths.pending == Path("/x/var/lib/fog-update/pending.json")
    assert paths.booted_file == Path("/x/run/fog-slot/booted")


# -------------------------------------------------------------- bundles, real rauc



def _root_image(tmp: Path) -> Path:
    tree = tmp / "tree"
    (tree / "usr/share/fog-appliance").mkdir(parents=True)
    (tree / "usr/share/fog-appliance/release").write_text("version=9.9.9\n")
    (tree / "noise").write_bytes(bytes(range(256)) * 40000)
    img = tmp / "root.ext4"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(tree), str(img), "16M"],
                   check=True)
    return img


@needs_rauc
def test_a_bundle_is_signed_by_the_dev_ca_and_refused_under_another(tmp_path: Path) -> None:
    keys, other = tmp_path / "keys", tmp_path / "other"
    for d in (keys, other):
        subprocess.run([str(DEBIAN / "rauc-dev-keys.sh"), str(d)], check=True,
                       capture_output=True)
    bundle = tmp_path / "b.raucb"
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "FOG_RAUC_CERT": str(keys / "signing.crt"),
           "FOG_RAUC_KEY": str(keys / "signing.key"), "FOG_RAUC_KEYRING": str(keys / "ca.crt")}
    subprocess.run([str(DEBIAN / "bundle.sh"), str(_root_image(tmp_path)), "9.9.9",
                    str(bundle)], check=True, env=env, capture_output=True)
    info = subprocess.run(["rauc", "info", "--output-format=json", f"--keyring={keys}/ca.crt",
                           str(bundle)], capture_output=True, text=True, check=True)
    manifest = json.loads(info.stdout)
    assert manifest["version"] == "9.9.9"
    assert manifest["compatible"] == "fog-appliance-rpi-arm64"
    refused = subprocess.run(["rauc", "info", f"--keyring={other}/ca.crt", str(bundle)],
                             capture_output=True, text=True, check=False)
    assert refused.returncode != 0
    assert "signature verification failed" in refused.stderr + refused.stdout


# ------------------------------------------------- install requests (node → root side)

REQ_ID = "0123456789abcdef" * 2


def test_an_install_request_round_trips() -> None:
    for fields in ({"url": "https://updates.example/fog/v2.raucb", "reboot": True},
                   {"bundle": "fog-appliance-0.2.0-arm64.raucb"}):
        request = from_fields(fields, request_id=REQ_ID, actor="console (socket)")
        assert decode(encode(request)) == request
    assert request.source == "spool:fog-appliance-0.2.0-arm64.raucb" and not request.reboot


@settings(deadline=None)  # a loaded shared box
@given(st.binary(max_size=5000))
def test_any_bytes_as_a_request_are_a_clear_error_or_a_checked_request(raw: bytes) -> None:
    try:
        request = decode(raw)
    except UpdateError as exc:
        assert str(exc)
    else:
        assert (request.url is None) != (request.bundle is None)


@settings(deadline=None)
@given(st.dictionaries(st.sampled_from(["url", "bundle", "reboot", "id", "actor", "x"]),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=40),
                                 st.lists(st.integers(), max_size=2))))
def test_any_json_object_as_a_request_is_checked(fields: dict[str, object]) -> None:
    try:
        request = decode(json.dumps(fields).encode())
    except UpdateError:
        return
    if request.bundle is not None:
        assert "/" not in request.bundle and not request.bundle.startswith(".")
    if request.url is not None:
        assert request.url.startswith(("http://", "https://"))


def test_progress_lines_give_the_phase_and_percentage() -> None:
    assert percent_of("download:  40% (147 of 368 MiB)") == ("download", 40)
    assert percent_of("rauc: installing `/var/lib/fog-update/v2.raucb`: 20% Checking bundle"
                      ) == ("rauc", 20)
    assert percent_of("rauc: installing `/x`: succeeded") is None
    assert percent_of("update: 50% of nothing") is None
    assert percent_of("rauc: 250%") is None

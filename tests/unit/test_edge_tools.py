"""Host tooling for the firmware (fog_appliance/edge): mpy-cross builds and the size
budget, bundles, flash command lines for each chip, and every error path that can be
checked without a board (the serial port and the board are true hardware boundaries: no
board is faked, the commands are checked as text)."""

from __future__ import annotations

import json
import shlex
import stat
import sys
import zipfile
from pathlib import Path

import pytest

from fog_appliance.cli import main
from fog_appliance.config import FogConfig
from fog_appliance.devices.provisioning import device_config, device_config_path
from fog_appliance.edge import EdgeToolError
from fog_appliance.edge.build import (
    BUDGET,
    TOTAL_BUDGET,
    compile_file,
    compile_firmware,
    over_budget,
    size_table_markdown,
)
from fog_appliance.edge.bundle import BoardOptions, board_config, bundle_files, write_bundle
from fog_appliance.edge.flash import (
    CHIPS,
    Step,
    check_image,
    check_port,
    execute,
    explain,
    plan,
)
from tests.firmware_support import DEVICE


@pytest.fixture
def fog_yaml(tmp_path: Path) -> Path:
    p = tmp_path / "fog.yaml"
    p.write_text("fog_node:\n  id: site\n  data_dir: var\nedge_interface:\n"
                 "  advertise_host: 192.168.4.1\n")
    return p


def _cfg(fog_yaml: Path) -> FogConfig:
    from fog_appliance.config import load_config

    return load_config(fog_yaml)


# -- build ------------------------------------------------------------------------------


def test_every_device_file_compiles_within_its_budget(tmp_path: Path) -> None:
    files = compile_firmware(tmp_path)
    assert {f.source.name for f in files} == {p.name for p in DEVICE.glob("*.py")}
    assert all(f.mpy.read_bytes()[:1] == b"M" for f in files)  # .mpy magic
    assert over_budget(files) == []
    assert sum(f.size for f in files) <= TOTAL_BUDGET
    table = size_table_markdown(files)
    assert "| `edgeloop` |" in table and "**total**" in table


def test_device_code_has_no_undefined_names() -> None:
    # ruff's project config excludes edge_firmware/device (MicroPython idioms); pyflakes'
    # checks still apply to it.
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--isolated", "--select",
                           "F,E9", str(DEVICE)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout


def test_budget_violations_are_reported(tmp_path: Path) -> None:
    files = compile_firmware(tmp_path)
    import dataclasses

    big = [dataclasses.replace(f, size=f.size * 100) if f.module == "encoder" else f
           for f in files]
    problems = over_budget(big)
    assert any(p.startswith("encoder.mpy is") for p in problems)
    assert any(f"budget is {TOTAL_BUDGET}" in p for p in problems)
    unknown = [*files, dataclasses.replace(files[0], module="extra", budget=None)]
    assert any("extra.py has no size budget" in p for p in over_budget(unknown))
    assert set(BUDGET) == {p.stem for p in DEVICE.glob("*.py")}


def test_a_syntax_error_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.py"
    bad.write_text("def f(:\n")
    with pytest.raises(EdgeToolError, match=r"broken\.py"):
        compile_file(bad, tmp_path / "out")


def test_sizes_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["edge", "sizes", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| module | .mpy bytes | budget | used |")


# -- bundle ------------------------------------------------------------------------------


def _provisioned() -> dict[str, object]:
    return device_config(FogConfig(), "esp-1", bytes(range(32)), "pw")


def test_board_config_adds_what_the_site_knows() -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    c = board_config(_provisioned(), BoardOptions(
        fog_host="10.0.0.2", wifi_ssid="lab", wifi_password="pw", ca_pem=pem,
        edge={"dtype": "int8", "sleep_s": 60}, replay=Path("x.bin")))
    assert c["mqtt"]["host"] == c["coap"]["host"] == "10.0.0.2"  # type: ignore[index]
    assert c["mqtt"]["tls"] is True and c["mqtt"]["ca"] == pem  # type: ignore[index]
    assert c["wifi"] == {"ssid": "lab", "password": "pw"}
    assert c["edge"] == {"dtype": "int8", "sleep_s": 60,
                         "sensor": {"kind": "replay", "path": "replay.bin"}}
    from tests.firmware_support import firmware

    firmware("settings").validate(json.loads(json.dumps(c)))  # the board accepts it


@pytest.mark.parametrize(("opts", "message"), [
    (BoardOptions(), "cannot reach"),
    (BoardOptions(fog_host="10.0.0.2", ca_pem="junk"), "not a PEM"),
    (BoardOptions(fog_host="10.0.0.2", edge={"colour": 1}), "unknown edge setting"),
])
def test_board_config_refusals(opts: BoardOptions, message: str) -> None:
    with pytest.raises(EdgeToolError, match=message):
        board_config(_provisioned(), opts)


def test_tls_without_a_ca_is_refused() -> None:
    conf = _provisioned()
    conf["mqtt"]["tls"] = True  # type: ignore[index]
    with pytest.raises(EdgeToolError, match="--ca"):
        board_config(conf, BoardOptions(fog_host="10.0.0.2"))


def test_bundle_folder_provisions_once_and_keeps_the_secret_private(fog_yaml: Path,
                                                                    tmp_path: Path) -> None:
    cfg = _cfg(fog_yaml)
    out = tmp_path / "b"
    first = write_bundle(cfg, "esp-9", out, BoardOptions(wifi_ssid="lab", wifi_password="pw"))
    assert first.provisioned and device_config_path(cfg, "esp-9").exists()
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()
                  ) == sorted(bundle_files())
    assert "app_a/edgeloop.mpy" in bundle_files() and "edgeloop.mpy" not in bundle_files()
    assert json.loads((out / "ota.json").read_text()) == {
        "act": "a", "ver": "0.1.0", "prev": None, "pver": None, "ok": True, "trial": 0,
        "rb": None}
    assert stat.S_IMODE((out / "config.json").stat().st_mode) == 0o600
    board = json.loads((out / "config.json").read_text())
    assert board["mqtt"]["host"] == "192.168.4.1" and board["wifi"]["ssid"] == "lab"
    again = write_bundle(cfg, "esp-9", out, BoardOptions())
    assert not again.provisioned
    assert json.loads((out / "config.json").read_text())["key"] == board["key"]


def test_bundle_zip_via_the_cli(fog_yaml: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    from fog_appliance.edge.replay import write_replay

    replay = write_replay(tmp_path / "r.bin", np.zeros((2, 64)), np.array([1, 2]))
    out = tmp_path / "esp-2.zip"
    assert main(["edge", "bundle", "esp-2", "-c", str(fog_yaml), "--zip", "--out", str(out),
                 "--dtype", "float16", "--replay", str(replay)]) == 0
    with zipfile.ZipFile(out) as z:
        names = z.namelist()
        conf = json.loads(z.read("config.json"))
    assert sorted(names) == sorted(bundle_files(replay=True))
    assert conf["edge"]["dtype"] == "float16"
    assert conf["edge"]["sensor"] == {"kind": "replay", "path": "replay.bin"}
    assert "holds the device's secret key" in capsys.readouterr().out


def test_bundle_errors_exit_non_zero(fog_yaml: Path, capsys: pytest.CaptureFixture[str]
                                     ) -> None:
    assert main(["edge", "bundle", "bad id!", "-c", str(fog_yaml)]) == 1
    assert "device id" in capsys.readouterr().err
    assert main(["edge", "bundle", "esp-3", "-c", str(fog_yaml), "--sparse", "2"]) == 1
    assert "--sparse" in capsys.readouterr().err


# -- flash -------------------------------------------------------------------------------


@pytest.fixture
def port(tmp_path: Path) -> str:
    """A path standing for a plugged-in board's serial device (a hardware boundary)."""
    p = tmp_path / "ttyUSB0"
    p.touch()
    return str(p)


@pytest.mark.parametrize(("chip", "offset", "image_id"), [
    ("esp32", "0x1000", 0), ("esp32s3", "0x0", 9), ("esp32c3", "0x0", 5),
    ("esp32s2", "0x1000", 2)])
def test_dry_run_prints_every_command_at_the_chips_offset(
        chip: str, offset: str, image_id: int, fog_yaml: Path, port: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    fw = str(_image(tmp_path, image_id))
    rc = main(["edge", "flash", "--port", port, "--device", "esp-1", "-c",
               str(fog_yaml), "--chip", chip, "--firmware", fw, "--dry-run"])
    assert rc == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if not ln.startswith("#")]
    argv = [shlex.split(ln) for ln in lines]
    py = [sys.executable, "-m"]
    assert argv[0] == [*py, "esptool", "--chip", chip, "--port", port, "erase-flash"]
    assert argv[1] == [*py, "esptool", "--chip", chip, "--port", port, "--baud", "460800",
                       "write-flash", "-z", offset, fw]
    assert argv[2][:6] == [*py, "mpremote", "connect", port, "exec"]
    assert '"encoder.py"' in argv[2][6]  # stale sources that would shadow the .mpy
    assert "os.mkdir('app_a')" in argv[2][6]
    cp, cp_app = argv[3], argv[4]
    assert cp[:7] == [*py, "mpremote", "connect", port, "fs", "cp"] and cp[-1] == ":"
    assert cp_app[:7] == cp[:7] and cp_app[-1] == ":app_a/"
    assert sorted([Path(f).name for f in cp[7:-1]] + [
        "app_a/" + Path(f).name for f in cp_app[7:-1]]) == sorted(bundle_files())
    assert argv[5] == [*py, "mpremote", "connect", port, "reset"]
    assert len(argv) == 6


@pytest.mark.parametrize(("extra", "message"), [
    (["--port", "/dev/ttyUSB97"], "serial port /dev/ttyUSB97 does not exist"),
    (["--chip", "esp32", "--firmware", "S3"], "built for ESP32-S3, not ESP32"),
    (["--wifi-ssid", "lab"], "no password for Wi-Fi network 'lab'"),
    (["--fog-host", "127.0.0.1"], "which a board cannot reach"),
    (["--replay", "missing.bin"], "--replay missing.bin: no such file"),
])
def test_dry_run_refuses_what_the_real_run_refuses(
        extra: list[str], message: str, fog_yaml: Path, port: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("FOG_WIFI_PASSWORD", raising=False)
    extra = [str(_image(tmp_path, 9)) if a == "S3" else a for a in extra]
    args = ["--port", port, *extra] if extra[0] != "--port" else extra
    for dry in (["--dry-run"], []):
        assert main(["edge", "flash", "--device", "esp-5", "-c", str(fog_yaml), *args,
                     *dry]) == 1
        assert message in capsys.readouterr().err
    # Nothing was provisioned, by either run.
    assert not device_config_path(_cfg(fog_yaml), "esp-5").exists()
    assert not (fog_yaml.parent / "var" / "fog.db").exists()


def test_a_refused_bundle_provisions_nothing(fog_yaml: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("FOG_WIFI_PASSWORD", raising=False)
    for bad in (["--fog-host", "127.0.0.1"], ["--wifi-ssid", "lab"], ["--dtype", "int8",
                                                                     "--sparse", "0.5",
                                                                     "--ca", "no.pem"]):
        assert main(["edge", "bundle", "esp-6", "-c", str(fog_yaml), "--out",
                     str(tmp_path / "b"), *bad]) == 1
        assert capsys.readouterr().err
    assert not device_config_path(_cfg(fog_yaml), "esp-6").exists()
    assert not (tmp_path / "b").exists()


def test_an_open_wifi_network_must_be_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FOG_WIFI_PASSWORD", raising=False)
    with pytest.raises(EdgeToolError, match="--open-wifi"):
        board_config(_provisioned(), BoardOptions(fog_host="10.0.0.2", wifi_ssid="cafe"))
    c = board_config(_provisioned(), BoardOptions(fog_host="10.0.0.2", wifi_ssid="cafe",
                                                  open_wifi=True))
    assert c["wifi"] == {"ssid": "cafe", "password": ""}
    with pytest.raises(EdgeToolError, match="which one"):
        board_config(_provisioned(), BoardOptions(fog_host="10.0.0.2", wifi_ssid="cafe",
                                                  wifi_password="x", open_wifi=True))


def test_dry_run_changes_nothing(fog_yaml: Path, port: str,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["edge", "flash", "--port", port, "--device", "new-1", "-c",
                 str(fog_yaml), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "is not provisioned: flashing provisions it first" in out
    assert "esptool" not in out  # no --firmware: MicroPython is already on the board
    assert not device_config_path(_cfg(fog_yaml), "new-1").exists()
    assert not (fog_yaml.parent / "var" / "fog.db").exists()


def test_no_port_is_a_clear_error_before_anything_runs(fog_yaml: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    rc = main(["edge", "flash", "--port", "/dev/ttyUSB97", "--device", "esp-1", "-c",
               str(fog_yaml)])
    assert rc == 1
    assert "serial port /dev/ttyUSB97 does not exist" in capsys.readouterr().err
    assert not device_config_path(_cfg(fog_yaml), "esp-1").exists()
    with pytest.raises(EdgeToolError, match="does not exist"):
        check_port("/dev/does-not-exist")


def _image(tmp_path: Path, chip_id: int, magic: int = 0xE9) -> Path:
    p = tmp_path / f"fw-{chip_id}.bin"
    head = bytearray(64)
    head[0] = magic
    head[12:14] = chip_id.to_bytes(2, "little")
    p.write_bytes(bytes(head))
    return p


def test_a_firmware_image_for_another_chip_is_refused(tmp_path: Path) -> None:
    check_image(_image(tmp_path, 0), "esp32")
    check_image(_image(tmp_path, 9), "esp32s3")
    with pytest.raises(EdgeToolError, match="built for ESP32-S3, not ESP32"):
        check_image(_image(tmp_path, 9), "esp32")
    with pytest.raises(EdgeToolError, match="built for ESP32, not ESP32-C3"):
        check_image(_image(tmp_path, 0), "esp32c3")
    with pytest.raises(EdgeToolError, match="not an ESP firmware image"):
        check_image(_image(tmp_path, 0, magic=0x7F), "esp32")
    with pytest.raises(EdgeToolError, match="--firmware"):
        check_image(tmp_path / "missing.bin", "esp32")


def test_esptools_wrong_chip_message_becomes_one_clear_line() -> None:
    out = ("Connecting....\nA fatal error occurred: This chip is ESP32-S3, not ESP32. "
           "Wrong chip argument?\n")
    assert explain(out, "esp32") == ("the board is an ESP32-S3, not an ESP32: run again "
                                     "with --chip esp32s3")
    assert "busy" in (explain("Could not open /dev/ttyUSB0, the port is busy or doesn't "
                              "exist.", "esp32") or "")
    assert "BOOT" in (explain("Failed to connect to ESP32: No serial data received.",
                              "esp32") or "")
    assert explain("all good", "esp32") is None


def test_execute_retries_mpremote_and_stops_at_the_first_failure() -> None:
    calls: list[list[str]] = []
    answers = iter([(0, "ok"), (1, "failed to access /dev/ttyUSB0"), (0, "ok"),
                    (1, "This chip is ESP32-C3, not ESP32. Wrong chip argument?")])

    def run(argv: list[str]) -> tuple[int, str]:
        calls.append(argv)
        return next(answers)

    steps = [Step(["a"], "first"), Step(["b"], "copy", attempts=2), Step(["c"], "flash")]
    with pytest.raises(EdgeToolError, match=r"flash failed \(exit 1\): the board is an "
                                            r"ESP32-C3.*--chip esp32c3"):
        execute(steps, "esp32", run=run, echo=lambda s: None, pause_s=0)
    assert calls == [["a"], ["b"], ["b"], ["c"]]


def test_every_chip_has_a_plan() -> None:
    for name, chip in CHIPS.items():
        steps = plan("/dev/ttyUSB0", name, Path("/b"), ["x.mpy", "config.json"],
                     firmware=Path("f.bin"))
        assert f"0x{chip.offset:x}" in steps[1].argv
        assert steps[2].attempts > 1  # MicroPython formats its flash on first boot
    with pytest.raises(EdgeToolError, match="unknown chip"):
        plan("/dev/ttyUSB0", "esp8266", Path("/b"), [])


def test_the_flash_cleanup_moves_a_board_to_the_slot_layout(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    # The command mpremote runs on the board, run here on a folder laid out as a board
    # flashed before app slots (modules at the root) with leftovers in app_a.
    steps = plan("/dev/ttyUSB0", "esp32", Path("/b"), bundle_files())
    cleanup = steps[0].argv[-1]
    for name in ("encoder.mpy", "encoder.py", "edgeloop.mpy", "state.json", "boot.py"):
        (tmp_path / name).write_text("x")
    (tmp_path / "app_a").mkdir()
    for name in ("encoder.py", "old.mpy", "encoder.mpy.part", "edgeloop.mpy"):
        (tmp_path / "app_a" / name).write_text("x")
    monkeypatch.chdir(tmp_path)
    exec(cleanup, {})  # MicroPython's own os calls, on a temporary folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app_a", "boot.py", "state.json"]
    assert [p.name for p in (tmp_path / "app_a").iterdir()] == ["edgeloop.mpy"]

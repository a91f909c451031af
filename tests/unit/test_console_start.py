"""A light start: ``fog-console --config`` reads the node's YAML for its socket and imports
the console, not the node's stack (numpy, scipy, dp-accounting, onnx, aiocoap, psutil) —
tty1 paints sooner and every browser session is a small process. Checked in a fresh
interpreter, as the console starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.nodeproc import env

HEAVY = ("numpy", "scipy", "onnx", "onnxruntime", "dp_accounting", "aiocoap", "psutil",
         "fog_appliance.app", "fog_appliance.admin")

PROBE = """
import json, sys
from textual_ui.cli import build_parser, endpoint_from
endpoint = endpoint_from(build_parser().parse_args(["--config", sys.argv[1]]))
import textual_ui.app
print(json.dumps({"socket": str(endpoint.socket), "modules": sorted(sys.modules)}))
"""


def test_the_console_imports_only_what_it_needs(tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    config.write_text(f"fog_node:\n  data_dir: {tmp_path / 'var'}\n"
                      "admin:\n  socket: run/admin.sock\n")
    out = subprocess.run([sys.executable, "-c", PROBE, str(config)], capture_output=True,
                         text=True, env=env(), timeout=120, check=True)
    answer = json.loads(out.stdout)
    assert answer["socket"] == str(tmp_path / "var" / "run" / "admin.sock")
    loaded = set(answer["modules"])
    heavy = sorted(m for m in loaded for h in HEAVY if m == h or m.startswith(h + "."))
    assert heavy == [], f"the console imported the node's stack: {heavy}"


def test_the_console_finds_the_same_paths_as_the_node(tmp_path: Path) -> None:
    from fog_appliance.admin.server import readonly_token_path, socket_path, token_path
    from fog_appliance.config import load_config
    from textual_ui.cli import build_parser, endpoint_from

    config = tmp_path / "node.yaml"
    config.write_text(f"fog_node:\n  data_dir: {tmp_path / 'var'}\n")
    cfg = load_config(str(config))
    token_path(cfg).parent.mkdir(parents=True)
    token_path(cfg).write_text("secret-token\n")
    args = build_parser().parse_args(["--config", str(config)])
    assert endpoint_from(args).socket == socket_path(cfg)
    args = build_parser().parse_args(["--config", str(config), "--url", "http://127.0.0.1:1"])
    assert endpoint_from(args).token == "secret-token"
    assert readonly_token_path(cfg) == cfg.data_path(cfg.admin.readonly_token_file)

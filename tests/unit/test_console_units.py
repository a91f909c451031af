"""Pure parts of the console and the admin API: formatting, chart columns, masking,
the serve command, event filtering, settings validation and the Prometheus rendering."""

from __future__ import annotations

import argparse
import copy
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from fog_appliance.admin import settings
from fog_appliance.admin.metrics import render, section_gauges
from fog_appliance.config import FogConfig, replace
from fog_appliance.errors import ActionError, ConfigError
from textual_ui.cli import build_parser, serve_command
from textual_ui.format import ago, duration, field_value, label, size
from textual_ui.screens.events import matches
from textual_ui.screens.provision import masked
from textual_ui.widgets.glyphs import COARSE, FINE, column


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0 s"), (59.9, "59 s"), (60, "1 m 00 s"), (3599, "59 m 59 s"), (3600, "1 h 00 m"),
    (90061, "1 d 01 h"), (-75, "-1 m 15 s"), (math.inf, "—"), (math.nan, "—")])
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_ago_size_label_and_fields() -> None:
    assert ago(None, 100.0) == "never"
    assert ago(99.5, 100.0) == "just now"
    assert ago(40.0, 100.0) == "1 m 00 s ago"
    assert [size(n) for n in (None, 512, 1536, 12 * 2**20)] == ["—", "512 B", "1.5 KiB",
                                                                "12.0 MiB"]
    assert label("memory_used_bytes") == "memory used"
    assert label("temperature_c") == "temperature °C"
    assert field_value("hit_rate", 0.92, 0) == "92.0%"
    assert field_value("cpu_percent", 45.25, 0) == "45.2%"
    assert field_value("latency_p95_ms", 2.4, 0) == "2.4 ms"
    assert field_value("enabled", True, 0) == "yes"
    assert field_value("requests", 5400, 0) == "5 400"
    assert field_value("limits", {"cpu_percent": 80.0}, 0) == "cpu_percent 80.0%"


@given(st.floats(allow_nan=True, allow_infinity=True), st.integers(1, 12))
def test_chart_column_always_has_its_height(value: float, height: int) -> None:
    for steps in (FINE, COARSE):
        if math.isnan(value):
            continue
        cells = column(value, height, steps)
        assert len(cells) == height and all(c in steps for c in cells)
        # filled from the bottom: no gap under a filled cell
        filled = [c != " " for c in cells]
        assert filled == sorted(filled)


def test_chart_column_extremes() -> None:
    assert column(1.0, 3, FINE) == ["█", "█", "█"]
    assert column(0.0, 2, COARSE) == [" ", " "]
    assert column(0.5, 2, COARSE) == [" ", "█"]
    assert column(0.25, 2, COARSE) == [" ", "▄"]


def test_secrets_are_masked_everywhere() -> None:
    conf = {"key": "ab12", "mqtt": {"password": "pw", "host": "h"}, "coap": {"port": 1}}
    assert masked(conf) == {"key": "********", "mqtt": {"password": "********", "host": "h"},
                            "coap": {"port": 1}}


def test_serve_command_is_read_only_unless_allowed() -> None:
    argv = ["--config", "/etc/fog.yaml", "--serve", "--host", "0.0.0.0", "--port=8000"]
    cmd = serve_command(build_parser().parse_args(argv), argv)
    assert cmd.endswith("-m textual_ui --config /etc/fog.yaml --read-only")
    argv2 = [*argv, "--allow-actions"]
    assert "--read-only" not in serve_command(build_parser().parse_args(argv2), argv2)
    assert isinstance(build_parser().parse_args([]), argparse.Namespace)


def test_event_filter_needs_every_word() -> None:
    e = {"level": "warning", "kind": "device", "message": "device door-1 revoked"}
    assert matches(e, "") and matches(e, "DOOR-1 warning") and not matches(e, "door-2")


def test_settings_validation_names_the_field() -> None:
    cfg = FogConfig()
    new = settings.validated(cfg, {"rounds.deadline_s": 30, "rounds.min_updates": 2})
    assert new.rounds.deadline_s == 30.0 and cfg.rounds.deadline_s == 120.0
    for bad, field in [({"rounds.deadline_s": -1}, "rounds.deadline_s"),
                       ({"rounds.min_updates": 11}, "rounds.min_updates"),
                       ({"edge_interface.aggregation_threshold": 1.5},
                        "edge_interface.aggregation_threshold"),
                       ({"fog_node.id": "x"}, "fog_node.id"),
                       ({"rounds.deadline_s": math.inf}, "rounds.deadline_s")]:
        with pytest.raises(ConfigError) as err:
            settings.validated(cfg, bad)
        assert err.value.field == field


@hypothesis_settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from([*settings.EDITABLE, "rounds", "x.y", ""]),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                                 st.text(max_size=5), st.lists(st.integers(), max_size=2))))
def test_settings_garbage_is_refused_or_valid(changes: dict[str, Any]) -> None:
    cfg = FogConfig()
    before = copy.deepcopy(cfg)
    try:
        new = settings.validated(cfg, changes)
    except ConfigError:
        assert cfg == before
        return
    new.validate()
    assert cfg == before


def test_saved_settings_round_trip(tmp_path: Path) -> None:
    cfg = replace(FogConfig(), {
        "fog_node.data_dir": str(tmp_path),
    })
    with pytest.raises(ActionError) as err:
        settings.save(cfg, {"rounds.min_updates": 0})
    assert err.value.status == 400 and "rounds.min_updates" in str(err.value)
    assert not settings.settings_path(cfg).exists()
    new, saved = settings.save(cfg, {"rounds.deadline_s": 45.0})
    assert saved == {"rounds.deadline_s": 45.0} and new.rounds.deadline_s == 45.0
    assert cfg.rounds.deadline_s == 120.0, "save changed the config it was given"
    fresh = replace(FogConfig(), {"fog_node.data_dir": str(tmp_path)})
    applied, saved = settings.apply_saved(fresh)
    assert saved == {"rounds.deadline_s": 45.0}
    assert applied.rounds.deadline_s == 45.0 and fresh.rounds.deadline_s == 120.0
    settings.settings_path(cfg).write_text("{broken")
    with pytest.raises(ConfigError, match="cannot read saved settings"):
        settings.apply_saved(FogConfig(fog_node=cfg.fog_node))


def test_section_gauges_flatten_numbers_only() -> None:
    gauges = {g.name: g.samples[0].value for g in section_gauges(
        "cache", {"available": True, "hit_rate": 0.5, "latency": {"p95 ms": 3},
                  "name": "lru", "ok": True, "versions": [1, 2], "nan": math.nan})}
    assert gauges == {"fog_cache_hit_rate": 0.5, "fog_cache_latency_p95_ms": 3.0}


def test_prometheus_text_format() -> None:
    status = {"fog_id": "a", "region": "r", "tier": "fog", "software": "0", "uptime_s": 5.0,
              "links": {"mqtt": {"state": "connected"}, "coap": {"state": "off"}},
              "round": {"id": 2, "count": 1, "threshold": 3, "min_updates": 1,
                        "deadline_at": 10.0, "state": "collecting"},
              "model": {"version": 2},
              "intake": {"backlog": 0, "by_transport": {"mqtt": 4}, "rejected":
                         {"bad_signature": 2}, "duplicates": 1, "hellos": 3},
              "rounds": {"published": 1, "failed": 0}, "devices": {"active": 2, "revoked": 1}}
    edges = {"edges": [{"id": "d1", "accepted": 4, "rejected": {"replayed_sequence": 1},
                        "last_seen": 9.0, "battery": 55}],
             "unattributed_rejections": {"?": {"truncated": 2}, "x9": {"truncated": 1}}}
    text = render(status, edges, {"cache": {"available": False}}).decode()
    for line in ['fog_link_up{link="mqtt"} 1.0', 'fog_link_up{link="coap"} 0.0',
                 'fog_updates_accepted_total{transport="mqtt"} 4.0',
                 'fog_updates_rejected_total{reason="bad_signature"} 2.0',
                 'fog_device_updates_rejected_total{device="unknown",reason="truncated"} 3.0',
                 'fog_device_battery_percent{device="d1"} 55.0',
                 'fog_round_state{state="collecting"} 1.0',
                 'fog_section_available{section="cache"} 0.0']:
        assert line in text, line


def test_linux_console_glyphs_keep_arrows_and_marks_readable() -> None:
    """What the console draws under TERM=linux: the nearest glyph the font has, never a
    '?' for a sort arrow or a mark (the Edges title says "sorted by Device ^")."""
    from textual_ui.widgets.glyphs import cp437_text

    assert cp437_text("sorted by Device ↑") == "sorted by Device ^"
    assert cp437_text("Rejected ↓ ← →") == "Rejected v < >"
    assert cp437_text("╭─ ● ✓ ✕ — … ≥ 45°C █ ▄ ░") == "┌─ * + x - . ≥ 45°C █ ▄ ░"


def test_inference_line_in_words_and_short() -> None:
    from textual_ui.format import inference_line

    busy = {"requests": 240, "requests_per_s": 2.4, "window_s": 10.0,
            "latency_ms": {"p50": 3.14, "p99": 0.25}}
    assert inference_line(busy) == ("2.4 requests/s, latency p50 3.1 ms, p99 0.25 ms "
                                    "(last 10 s)")
    assert inference_line(busy, short=True) == "2.4/s p50 3.1 p99 0.25 ms"
    idle = {"requests": 1200, "requests_per_s": 0.0, "window_s": 10.0, "latency_ms": None}
    assert inference_line(idle) == "idle (last 10 s; 1 200 since start)"
    assert len(inference_line(idle, short=True)) <= 27  # the dashboard's column at 80×24

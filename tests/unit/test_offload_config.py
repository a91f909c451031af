"""The cache, inference and extended resources sections of the config."""

from __future__ import annotations

from pathlib import Path

import pytest

from fog_appliance.config import FogConfig, dump_defaults, load_config
from fog_appliance.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "fog.yaml"
    p.write_text(text)
    return p


def test_defaults_are_valid_and_documented() -> None:
    FogConfig().validate()
    text = dump_defaults()
    for key in ("memory_budget_mb", "write_batch_ms", "intra_op_threads", "max_batch_rows",
                "max_disk_share", "train_min_battery", "round_max_wait_s"):
        assert f"\n  {key}:" in text
        assert text.count(f"  {key}:") == 1


def test_sections_load(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, """
cache: {memory_budget_mb: 8, disk_budget_mb: 100, write_batch_ms: 0}
inference: {min_workers: 2, max_workers: 4, max_batch_rows: 1, intra_op_threads: 2}
resources: {max_cpu_usage: 70, max_disk_share: 0.25, train_min_battery: 50}
"""))
    assert cfg.cache.memory_budget_mb == 8.0 and cfg.inference.max_workers == 4
    assert cfg.resources.max_disk_share == 0.25 and cfg.resources.max_cpu_usage == 70


@pytest.mark.parametrize(("text", "field", "problem"), [
    ("cache: {memory_budget_mb: 0}", "cache.memory_budget_mb", "greater than 0"),
    ("cache: {write_batch_ms: -1}", "cache.write_batch_ms", "below the minimum"),
    ("cache: {budget: 3}", "cache.budget", "unknown field"),
    ("inference: {max_workers: 0}", "inference.max_workers", "below the minimum"),
    ("inference: {min_workers: 3, max_workers: 2}", "inference.min_workers",
     "more than inference.max_workers"),
    ("inference: {max_wait_ms: .nan}", "inference.max_wait_ms", "finite"),
    ("inference: {enabled: 1}", "inference.enabled", "true or false"),
    ("resources: {max_disk_share: 1.5}", "resources.max_disk_share", "above the maximum"),
    ("resources: {max_temperature_c: 10}", "resources.max_temperature_c", "below the minimum"),
    ("resources: {train_min_battery: 101}", "resources.train_min_battery", "above the maximum"),
    ("model: {input_dim: 100000, hidden: [256]}\ncache: {memory_budget_mb: 100}",
     "cache.memory_budget_mb", "cannot hold the current and previous model"),
    ("model: {input_dim: 100000, hidden: [256]}\n"
     "cache: {disk_budget_mb: 100, memory_budget_mb: 1000}",
     "cache.disk_budget_mb", "cannot hold the current and previous model"),
])
def test_bad_values_name_the_field(tmp_path: Path, text: str, field: str, problem: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text))
    assert exc.value.field == field and problem in exc.value.problem

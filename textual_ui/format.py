"""How the console writes numbers, sizes, times and durations. Pure functions."""

from __future__ import annotations

import math
import time
from typing import Any

from rich.text import Text


def duration(seconds: float) -> str:
    """``45 s``, ``3 m 05 s``, ``2 h 07 m``, ``3 d 04 h``; negative durations as ``-…``."""
    if not math.isfinite(seconds):
        return "—"
    sign = "-" if seconds < 0 else ""
    s = int(abs(seconds))
    if s < 60:
        return f"{sign}{s} s"
    if s < 3600:
        return f"{sign}{s // 60} m {s % 60:02d} s"
    if s < 86400:
        return f"{sign}{s // 3600} h {s % 3600 // 60:02d} m"
    return f"{sign}{s // 86400} d {s % 86400 // 3600:02d} h"


def ago(ts: float | None, now: float) -> str:
    """``never``, ``just now``, ``12 s ago``, ``3 m 05 s ago``."""
    if ts is None:
        return "never"
    delta = now - ts
    if delta < 1:
        return "just now"
    return f"{duration(delta)} ago"


def size(n: float | None) -> str:
    """Bytes with a binary unit: ``512 B``, ``1.5 KiB``, ``12.0 MiB``."""
    if n is None:
        return "—"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def percent(x: float | None, digits: int = 1) -> str:
    """A 0..100 figure as ``45.2%``."""
    return "—" if x is None else f"{x:.{digits}f}%"


def clock(ts: float | None) -> str:
    """Local wall-clock time ``14:03:27`` of a timestamp."""
    return "—" if ts is None else time.strftime("%H:%M:%S", time.localtime(ts))


def number(v: float) -> str:
    """Integers as they are, other numbers to 4 significant digits."""
    if isinstance(v, int) or (math.isfinite(v) and v == int(v) and abs(v) < 1e15):
        return f"{int(v):,}".replace(",", " ")
    return f"{v:.4g}"


def field_value(key: str, value: Any, now: float) -> str:
    """A section field, formatted by what its name says it is (``_bytes``, ``_percent``,
    ``_at``, ``_s``, ``_ms``), else generically."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        if key.endswith("_bytes"):
            return size(value)
        if key.endswith("_percent") or (key.endswith("_rate") and value <= 1.0):
            return percent(value * 100 if key.endswith("_rate") else value)
        if key.endswith("_at"):
            return f"{clock(value)} ({ago(value, now)})"
        if key.endswith("_ms"):
            return f"{value:.1f} ms"
        if key.endswith("_s"):
            return duration(value)
        return number(value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {field_value(k, v, now)}" for k, v in value.items()) or "—"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value[:8]) + (" …" if len(value) > 8 else "")
    return str(value)


def millis(ms: float) -> str:
    """A latency in milliseconds to about two significant digits: ``0.03``, ``3.1``, ``120``."""
    return f"{ms:.2f}" if ms < 1 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def inference_line(inf: dict[str, Any], short: bool = False) -> str:
    """The inference service's request rate and latency over its window:
    ``2.4 requests/s, latency p50 3.1 ms, p99 12 ms (last 10 s)`` (``short``:
    ``2.4/s p50 3.1 p99 12 ms``), or ``idle (last 10 s; 120 since start)`` (``short``:
    ``idle (120 since start)``)."""
    window = f"last {inf.get('window_s', 10.0):g} s"
    lat = inf.get("latency_ms")
    if not inf.get("requests_per_s") or lat is None:
        if short:
            return f"idle ({number(inf['requests'])} since start)"
        return f"idle ({window}; {number(inf['requests'])} since start)"
    rate = f"{inf['requests_per_s']:.1f}"
    if short:
        return f"{rate}/s p50 {millis(lat['p50'])} p99 {millis(lat['p99'])} ms"
    return (f"{rate} requests/s, latency p50 {millis(lat['p50'])} ms, "
            f"p99 {millis(lat['p99'])} ms ({window})")


def label(key: str) -> str:
    """``memory_used_bytes`` → ``memory used``."""
    words = key.split("_")
    if words and words[-1] in ("bytes", "percent", "at", "s", "ms", "c"):
        words = words[:-1] + (["°C"] if words[-1] == "c" else [])
    return " ".join(words) or key


def plain(value: object, empty: str = "—") -> Text:
    """A string from outside the console (a device's hello, a peer, an error message) as
    literal text: never parsed as Rich markup, so ``[/]`` or ``[red]`` in a device's
    firmware string shows as typed instead of restyling or crashing the page."""
    return Text(empty if value is None or value == "" else str(value))

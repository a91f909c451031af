"""``GET /metrics``: the admin API's figures in Prometheus text format.

The same views the console reads (status, edges, sections) are turned into metric families
on each scrape: nothing is counted twice in two places. Contributed sections are exported
generically: every finite numeric field becomes a gauge ``fog_<section>_<field>`` (nested
mappings join their keys with ``_``; strings and lists are left to the JSON API).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from fog_appliance.protocol.frame import UNKNOWN_SENDER

__all__ = ["CONTENT_TYPE_LATEST", "render"]

_NAME_BAD = re.compile(r"[^a-zA-Z0-9_]+")


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _gauge(name: str, doc: str, value: float | None, **labels: str) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=list(labels))
    if value is not None:
        g.add_metric(list(labels.values()), float(value))
    return g


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def section_gauges(name: str, data: Mapping[str, Any]) -> Iterable[GaugeMetricFamily]:
    """Numeric leaves of a section as gauges (``available`` is exported apart)."""
    prefix = "fog_" + _NAME_BAD.sub("_", name).strip("_").lower()

    def walk(path: str, value: Any) -> Iterator[tuple[str, float]]:
        if isinstance(value, Mapping):
            for k, v in value.items():
                yield from walk(f"{path}_{_NAME_BAD.sub('_', str(k)).strip('_').lower()}", v)
        else:
            num = _number(value)
            if num is not None:
                yield path, num

    for key, value in data.items():
        if key == "available":
            continue
        safe = _NAME_BAD.sub("_", str(key)).strip("_").lower()
        for metric, num in walk(f"{prefix}_{safe}", value):
            yield _gauge(metric, f"{name} section field (see docs/admin-api.md)", num)


def families(status: Mapping[str, Any], edges: Mapping[str, Any],
             sections: Mapping[str, Mapping[str, Any]]) -> list[Metric]:
    out: list[Metric] = []
    info = GaugeMetricFamily("fog_info", "The fog node (value 1)",
                             labels=["fog_id", "region", "tier", "software"])
    info.add_metric([status["fog_id"], status["region"], status["tier"], status["software"]], 1)
    out.append(info)
    out.append(_gauge("fog_uptime_seconds", "Seconds since the node started",
                      status["uptime_s"]))
    up = GaugeMetricFamily("fog_link_up", "1 if the link is up (mqtt connected, coap "
                           "serving, cloud connected)", labels=["link"])
    for link, d in status["links"].items():
        up.add_metric([link], 1.0 if d["state"] in ("connected", "serving") else 0.0)
    out.append(up)
    rnd = status["round"]
    out += [
        _gauge("fog_round_id", "Id of the open round", rnd["id"]),
        _gauge("fog_round_updates", "Updates accepted in the open round", rnd["count"]),
        _gauge("fog_round_threshold", "Updates that close the open round", rnd["threshold"]),
        _gauge("fog_round_min_updates", "Fewest updates the round closes with at its deadline",
               rnd["min_updates"]),
        _gauge("fog_round_deadline_timestamp_seconds", "Deadline of the open round",
               rnd["deadline_at"]),
        _gauge("fog_model_version", "Version of the model edges train now",
               status["model"]["version"]),
        _gauge("fog_commit_backlog", "Admitted updates waiting for their group commit",
               status["intake"]["backlog"]),
    ]
    state = GaugeMetricFamily("fog_round_state", "1 for the open round's state",
                              labels=["state"])
    state.add_metric([rnd["state"]], 1.0)
    out.append(state)
    intake = status["intake"]
    acc = CounterMetricFamily("fog_updates_accepted", "Updates accepted since start",
                              labels=["transport"])
    for transport, n in sorted(intake["by_transport"].items()):
        acc.add_metric([transport], n)
    rej = CounterMetricFamily("fog_updates_rejected", "Updates and hellos rejected since "
                              "start", labels=["reason"])
    for reason, n in sorted(intake["rejected"].items()):
        rej.add_metric([reason], n)
    out += [acc, rej,
            CounterMetricFamily("fog_updates_duplicate", "Redeliveries answered as accepted",
                                value=intake["duplicates"]),
            CounterMetricFamily("fog_hellos", "Hellos recorded since start",
                                value=intake["hellos"]),
            CounterMetricFamily("fog_rounds_published", "Rounds that published a model since "
                                "start", value=status["rounds"]["published"]),
            CounterMetricFamily("fog_rounds_failed", "Rounds that released nothing since "
                                "start", value=status["rounds"]["failed"])]
    refused = CounterMetricFamily("fog_models_refused", "Models not published or adopted "
                                  "(not finite, norm or distance too large) since start",
                                  labels=["source"])
    for source, n in sorted(status.get("models_refused", {}).items()):
        refused.add_metric([source], n)
    out.append(refused)
    out += list(_inference_families(status.get("inference")))
    devs = GaugeMetricFamily("fog_devices", "Registered devices", labels=["state"])
    for s in ("active", "revoked"):
        devs.add_metric([s], status["devices"][s])
    out.append(devs)
    out += list(_edge_families(edges))
    avail = GaugeMetricFamily("fog_section_available", "1 if the part is present and reports",
                              labels=["section"])
    for name, data in sorted(sections.items()):
        avail.add_metric([name], 1.0 if data.get("available") else 0.0)
        if data.get("available"):
            out += list(section_gauges(name, data))
    out.append(avail)
    out += list(_firmware_families(sections.get("firmware")))
    return out


def _firmware_families(fw: Mapping[str, Any] | None) -> Iterator[Metric]:
    """Per-device firmware rollout state (issue 18) with labels; the counters come from
    the generic section gauges (``fog_firmware_chunks`` …)."""
    if not fw or not fw.get("available"):
        return
    state = GaugeMetricFamily("fog_firmware_device_state", "1 for each device's state in the "
                              "current firmware rollout", labels=["device", "state"])
    pct = GaugeMetricFamily("fog_firmware_device_download_percent", "Download progress of "
                            "each device in the current firmware rollout", labels=["device"])
    for d in fw.get("devices") or []:
        state.add_metric([d["id"], d["state"]], 1.0)
        pct.add_metric([d["id"]], float(d["pct"]))
    phase = GaugeMetricFamily("fog_firmware_rollout_phase", "1 for the current rollout's "
                              "phase", labels=["version", "phase"])
    r = fw.get("rollout")
    if r:
        phase.add_metric([r["version"], r["phase"]], 1.0)
    yield from (state, pct, phase)


def _inference_families(inf: Mapping[str, Any] | None) -> Iterator[Metric]:
    """Request rate and latency of the inference service (absent when it is off)."""
    if not inf:
        return
    yield _gauge("fog_inference_requests_per_second", "Inference requests a second over the "
                 f"last {inf['window_s']:g} s", inf["requests_per_s"])
    lat = GaugeMetricFamily("fog_inference_latency_seconds", "Inference request latency "
                            f"(queue and run) over the last {inf['window_s']:g} s",
                            labels=["quantile"])
    for q, key in (("0.5", "p50"), ("0.99", "p99")):
        if inf["latency_ms"] is not None:
            lat.add_metric([q], inf["latency_ms"][key] / 1e3)
    yield lat


def _edge_families(edges: Mapping[str, Any]) -> Iterator[Metric]:
    acc = CounterMetricFamily("fog_device_updates_accepted", "Updates stored per device",
                              labels=["device"])
    rej = CounterMetricFamily("fog_device_updates_rejected", "Rejections per device and "
                              "reason (stored)", labels=["device", "reason"])
    seen = GaugeMetricFamily("fog_device_last_seen_timestamp_seconds",
                             "Last hello or update of a device", labels=["device"])
    battery = GaugeMetricFamily("fog_device_battery_percent", "Battery a device last "
                                "reported", labels=["device"])
    for e in edges["edges"]:
        acc.add_metric([e["id"]], e["accepted"])
        for reason, n in sorted(e["rejected"].items()):
            rej.add_metric([e["id"], reason], n)
        if e["last_seen"] is not None:
            seen.add_metric([e["id"]], e["last_seen"])
        b = _number(e["battery"])
        if b is not None:
            battery.add_metric([e["id"]], b)
    # Senders that are not registered devices share one label value, whatever ids they
    # claimed: the label's cardinality is bounded by the registry, not by the LAN.
    unknown: dict[str, float] = {}
    for reasons in edges["unattributed_rejections"].values():
        for reason, n in reasons.items():
            unknown[reason] = unknown.get(reason, 0) + n
    for reason, n in sorted(unknown.items()):
        rej.add_metric([UNKNOWN_SENDER, reason], n)
    yield from (acc, rej, seen, battery)


def render(status: Mapping[str, Any], edges: Mapping[str, Any],
           sections: Mapping[str, Mapping[str, Any]]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families(status, edges, sections)))
    return generate_latest(registry)

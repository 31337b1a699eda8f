"""The sidecar's self-metrics, on a registry each app owns.

Counters and gauges here are the one place the sidecar keeps metric state: they
describe the process itself, not data collected for Prometheus.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ai_sidecar import __version__


@dataclass(frozen=True, slots=True)
class SidecarMetrics:
    registry: CollectorRegistry
    alerts_received: Counter
    alerts_invalid: Counter
    alerts_duplicate: Counter
    alerts_truncated: Counter
    alerts_looped: Counter
    webhook_requests: Counter
    incidents_created: Counter
    incidents_open: Gauge
    queue_depth: Gauge
    processing_lag: Gauge
    return_trip_posts: Counter
    return_trip_failures: Counter
    return_trip_queue: Gauge
    analysis_duration: Histogram
    analysis_failures: Counter
    store_pruned: Counter


def create_metrics() -> SidecarMetrics:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    build = Gauge(
        "scout_sidecar_build_info",
        "The sidecar's version; the value is always 1.",
        ["version", "pythonversion"],
        registry=registry,
    )
    build.labels(__version__, platform.python_version()).set(1)
    return SidecarMetrics(
        registry=registry,
        alerts_received=Counter(
            "scout_sidecar_alerts_received",
            "Alerts received by the webhook and stored, duplicates included.",
            registry=registry,
        ),
        alerts_invalid=Counter(
            "scout_sidecar_alerts_invalid",
            "Webhook requests refused with a 4xx, by reason.",
            ["reason"],
            registry=registry,
        ),
        alerts_duplicate=Counter(
            "scout_sidecar_alerts_duplicate",
            "Alerts already stored with the same fingerprint, status and startsAt.",
            registry=registry,
        ),
        alerts_truncated=Counter(
            "scout_sidecar_alerts_truncated",
            "Alerts Alertmanager left out of its payloads (truncatedAlerts).",
            registry=registry,
        ),
        alerts_looped=Counter(
            "scout_sidecar_alerts_looped",
            "Enriched alerts that came back to the webhook and were ignored.",
            registry=registry,
        ),
        webhook_requests=Counter(
            "scout_sidecar_webhook_requests",
            "Webhook requests by HTTP status code.",
            ["code"],
            registry=registry,
        ),
        incidents_created=Counter(
            "scout_sidecar_incidents_created",
            "Incidents created by correlation.",
            registry=registry,
        ),
        incidents_open=Gauge(
            "scout_sidecar_incidents_open",
            "Incidents open now.",
            registry=registry,
        ),
        queue_depth=Gauge(
            "scout_sidecar_queue_depth",
            "Stored alerts the worker has not processed yet.",
            registry=registry,
        ),
        processing_lag=Gauge(
            "scout_sidecar_processing_lag_seconds",
            "Age of the oldest stored alert the worker has not processed (0 when idle).",
            registry=registry,
        ),
        return_trip_posts=Counter(
            "scout_sidecar_return_trip_posts",
            "Enriched alerts posted to Alertmanager peers and accepted, by peer.",
            ["peer"],
            registry=registry,
        ),
        return_trip_failures=Counter(
            "scout_sidecar_return_trip_failures",
            "Failed posts of enriched alerts to Alertmanager peers, by peer.",
            ["peer"],
            registry=registry,
        ),
        return_trip_queue=Gauge(
            "scout_sidecar_return_trip_queue",
            "Enriched alerts waiting in the durable return-trip queue.",
            registry=registry,
        ),
        analysis_duration=Histogram(
            "scout_sidecar_analysis_duration_seconds",
            "Time to analyse one incident, by analyst.",
            ["analyst"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        ),
        analysis_failures=Counter(
            "scout_sidecar_analysis_failures",
            "Analyses that failed or timed out, by analyst; the incident stays un-enriched.",
            ["analyst"],
            registry=registry,
        ),
        store_pruned=Counter(
            "scout_sidecar_store_pruned_rows",
            "Rows the store removed as older than its retention, by kind.",
            ["kind"],
            registry=registry,
        ),
    )


def worker_collectors(metrics: SidecarMetrics) -> list[Collector]:
    """The metrics the worker and the return trip keep (the rest belong to the webhook)."""
    return [
        metrics.incidents_created,
        metrics.incidents_open,
        metrics.queue_depth,
        metrics.processing_lag,
        metrics.return_trip_posts,
        metrics.return_trip_failures,
        metrics.return_trip_queue,
        metrics.analysis_duration,
        metrics.analysis_failures,
        metrics.store_pruned,
    ]


def worker_snapshot(metrics: SidecarMetrics) -> list[Metric]:
    """The worker's metric families now, to send to the HTTP process."""
    return [family for collector in worker_collectors(metrics) for family in collector.collect()]


class MirroredWorkerMetrics(Collector):
    """Serves, in the HTTP process, the worker process's latest snapshot.

    It replaces the HTTP process's own (idle) copies of the worker's metrics,
    so each family appears once on /metrics.
    """

    def __init__(self, metrics: SidecarMetrics) -> None:
        self._described = worker_snapshot(metrics)
        self._latest = self._described
        for collector in worker_collectors(metrics):
            metrics.registry.unregister(collector)
        metrics.registry.register(self)

    def update(self, families: list[Metric]) -> None:
        self._latest = families

    def describe(self) -> list[Metric]:
        return self._described

    def collect(self) -> list[Metric]:
        return self._latest

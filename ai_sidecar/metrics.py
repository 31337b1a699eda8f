"""The sidecar's self-metrics, on a registry each app owns.

Counters and gauges are the one place the sidecar keeps metric state: they
describe the process itself, not data collected for Prometheus. When the
pipeline runs in the worker process, its metrics live on a registry of their
own there, and the HTTP process serves them through :class:`ForwardedMetrics`.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, fields

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ai_sidecar import __version__
from ai_sidecar.anomaly.evidence import EvidenceMetrics, create_evidence_metrics
from ai_sidecar.correlate import TopologyMetrics, create_topology_metrics
from ai_sidecar.enrichment.llm.metrics import LlmMetrics, create_llm_metrics
from ai_sidecar.worker import WorkerMetrics, create_worker_metrics


@dataclass(frozen=True, slots=True)
class WebhookMetrics:
    """The webhook's counters, all of them: an intake process (:mod:`ai_sidecar.intake`)
    sends the growth of each field here to the main process, which adds it to its own,
    so a counter added here is counted across processes without a list to keep. Only
    counters belong here."""

    alerts_received: Counter
    alerts_invalid: Counter
    alerts_duplicate: Counter
    alerts_truncated: Counter
    alerts_looped: Counter
    requests: Counter


# The names of WebhookMetrics' fields: what intake processes may send.
WEBHOOK_COUNTERS = tuple(field.name for field in fields(WebhookMetrics))


@dataclass(frozen=True, slots=True)
class SidecarMetrics:
    """One process's metrics.

    ``registry`` is what the process serves on /metrics. The webhook's counters
    are defined here (:class:`WebhookMetrics`); the worker defines its own
    (:class:`WorkerMetrics`); the return trip's are created here too. Worker and
    return-trip metrics live on the pipeline's registry, which is ``registry``
    itself when the pipeline runs in this process, and the worker process's own
    one otherwise.
    """

    registry: CollectorRegistry
    webhook: WebhookMetrics
    worker: WorkerMetrics
    return_trip_posts: Counter
    return_trip_failures: Counter
    return_trip_queue: Gauge
    store_pruned: Counter
    leader: Gauge
    topology: TopologyMetrics
    anomaly_evidence: EvidenceMetrics
    llm: LlmMetrics
    config_reloads: Counter
    config_last_reload_successful: Gauge
    config_last_reload_success_time: Gauge


def create_metrics(*, pipeline_registry: CollectorRegistry | None = None) -> SidecarMetrics:
    """Metrics on a fresh registry; the pipeline's on ``pipeline_registry`` if given."""
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
    pipeline = registry if pipeline_registry is None else pipeline_registry
    return SidecarMetrics(
        registry=registry,
        webhook=WebhookMetrics(
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
            requests=Counter(
                "scout_sidecar_webhook_requests",
                "Webhook requests by HTTP status code.",
                ["code"],
                registry=registry,
            ),
        ),
        worker=create_worker_metrics(pipeline),
        return_trip_posts=Counter(
            "scout_sidecar_return_trip_posts",
            "Enriched alerts posted to Alertmanager peers and accepted, by peer.",
            ["peer"],
            registry=pipeline,
        ),
        return_trip_failures=Counter(
            "scout_sidecar_return_trip_failures",
            "Failed posts of enriched alerts to Alertmanager peers, by peer.",
            ["peer"],
            registry=pipeline,
        ),
        return_trip_queue=Gauge(
            "scout_sidecar_return_trip_queue",
            "Enriched alerts waiting in the durable return-trip queue.",
            registry=pipeline,
        ),
        store_pruned=Counter(
            "scout_sidecar_store_pruned_rows",
            "Rows the store removed as older than its retention, by kind.",
            ["kind"],
            registry=pipeline,
        ),
        leader=Gauge(
            "scout_sidecar_leader",
            "1 while this replica runs the worker and the return trip (it holds the "
            "worker lease, or it is the only replica), else 0.",
            registry=pipeline,
        ),
        topology=create_topology_metrics(pipeline),
        anomaly_evidence=create_evidence_metrics(pipeline),
        llm=create_llm_metrics(pipeline),
        # Reloads happen in the HTTP process, which serves these itself.
        config_reloads=Counter(
            "scout_sidecar_config_reloads",
            "Config reloads (SIGHUP, POST /-/reload) by outcome (success, failure).",
            ["outcome"],
            registry=registry,
        ),
        config_last_reload_successful=Gauge(
            "scout_sidecar_config_last_reload_successful",
            "1 if the last config reload succeeded (or none was tried), else 0.",
            registry=registry,
        ),
        config_last_reload_success_time=Gauge(
            "scout_sidecar_config_last_reload_success_timestamp_seconds",
            "Unix time the config in force was read (at start or by the last reload).",
            registry=registry,
        ),
    )


class ForwardedMetrics(Collector):
    """Serves, in the HTTP process, the families the worker process sent last.

    The worker process sends everything on its pipeline registry, so a metric
    added to the worker or the return trip shows up here without a list to
    keep. Until the first families arrive, ``initial`` (a fresh pipeline
    registry's, all zero) stands in, so /metrics always has every family.
    """

    def __init__(self, initial: list[Metric]) -> None:
        self._described = initial
        self._latest = initial

    def update(self, families: list[Metric]) -> None:
        self._latest = families

    def describe(self) -> list[Metric]:
        return self._described

    def collect(self) -> list[Metric]:
        return self._latest

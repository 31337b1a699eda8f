"""The exposition most kinds speak: prometheus_client families, OpenMetrics or text 0.0.4."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aiohttp import web
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.common.web import render_families


class MetricExposition:
    """Families as prometheus_client builds them, rendered in the format the scraper asks for."""

    def gauge(self, name: str, documentation: str, value: float) -> Metric:
        family = GaugeMetricFamily(name, documentation)
        family.add_metric([], value)
        return family

    def info(self, name: str, documentation: str, labels: Sequence[Mapping[str, str]]) -> Metric:
        family = Metric(name, documentation, "gauge")
        for label_set in labels:
            family.add_sample(name, dict(label_set), 1.0)
        return family

    def render(self, request: web.Request, families: Sequence[Metric]) -> web.Response:
        return render_families(request, families)


METRIC_EXPOSITION = MetricExposition()

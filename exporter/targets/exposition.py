"""The exposition most kinds speak: prometheus_client families, OpenMetrics or text 0.0.4."""

from __future__ import annotations

from collections.abc import Sequence

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

    def render(self, request: web.Request, families: Sequence[Metric]) -> web.Response:
        return render_families(request, families)


METRIC_EXPOSITION = MetricExposition()

"""``/console/anomalies``: the series the anomaly models find most unusual now.

The scoring loop publishes its latest numbers per series as the
``scout_anomaly_*`` families on the app's registry (in the anomaly process,
forwarded; :mod:`ai_sidecar.anomaly.service`). The page reads them from there,
with no query: the :data:`MAX_SHOWN` highest scores among series past their
warm-up, each with its expected band in words and a chart of the series
between its band over ``graphs.range``, read from Prometheus and drawn by
:mod:`ai_sidecar.notify.graphs` into an inline PNG. Charts are kept for a
minute per series (:class:`~ai_sidecar.graph_route.RenderedGraphs`). While the
health banner's probe finds Prometheus unreachable, the page draws no chart
rather than wait for each one's time box. Without anomaly models the page
says so.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client.metrics_core import Metric

from ai_sidecar.anomaly.evidence import describe_series, format_band
from ai_sidecar.anomaly.scoring import FIELDS
from ai_sidecar.console.health import PROBE
from ai_sidecar.console.language import page_language
from ai_sidecar.console.session import console_user
from ai_sidecar.console.templating import render
from ai_sidecar.graph_route import RenderedGraphs
from ai_sidecar.i18n import translator
from ai_sidecar.keys import CONFIG, METRICS
from ai_sidecar.notify.graphs import GraphSource, render_graph

MAX_SHOWN = 10
PREFIX = "scout_anomaly_"


@dataclass(frozen=True, slots=True)
class ScoredSeries:
    """One series' latest numbers, as the scoring loop exported them."""

    labels: dict[str, str]
    values: dict[str, float]

    @property
    def score(self) -> float:
        return self.values.get("score", math.nan)

    @property
    def warming(self) -> bool:
        return self.values.get("warming", 0.0) >= 1.0


@dataclass(frozen=True, slots=True)
class AnomalyCharts:
    """Where the charts' history comes from, and the charts drawn lately."""

    source: GraphSource
    drawn: RenderedGraphs


CHARTS = web.AppKey("console_anomaly_charts", AnomalyCharts)


def scored_series(families: Iterable[Metric]) -> list[ScoredSeries]:
    """Every series the ``scout_anomaly_<field>`` families describe, by its labels."""
    wanted = {f"{PREFIX}{name}": name for name in FIELDS}
    found: dict[tuple[tuple[str, str], ...], ScoredSeries] = {}
    for family in families:
        name = wanted.get(family.name)
        if name is None:
            continue
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            series = found.setdefault(key, ScoredSeries(dict(sample.labels), {}))
            series.values[name] = sample.value
    return [s for s in found.values() if "score" in s.values]


def _key(labels: dict[str, str]) -> str:
    return "\n".join(f"{k}={v}" for k, v in sorted(labels.items()))


async def _chart(charts: AnomalyCharts, series: ScoredSeries, subject: str) -> str:
    async def draw() -> bytes:
        return await render_graph(await charts.source.series_band(series.labels, subject))

    png = await charts.drawn.get(_key(series.labels), draw)
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


async def anomalies(request: web.Request) -> web.Response:
    user = await console_user(request)
    # Known unreachable: each chart would wait for its time box, one after the other.
    ask_prometheus = request.app[PROBE].state != "unreachable"
    every = scored_series(request.app[METRICS].registry.collect())
    scored = [s for s in every if not s.warming and math.isfinite(s.score)]
    top = sorted(scored, key=lambda s: (-s.score, _key(s.labels)))[:MAX_SHOWN]
    # The subject and band are the analysis's words, in the page's language.
    analysis = translator(await page_language(request, user), "analysis")
    rows: list[dict[str, Any]] = []
    for series in top:
        subject = describe_series(series.labels, analysis)
        signal = series.labels.get("signal", "")
        lower, upper = series.values.get("lower"), series.values.get("upper")
        band = (
            format_band(signal, lower, upper, analysis)
            if lower is not None and upper is not None and math.isfinite(lower + upper)
            else ""
        )
        rows.append(
            {
                "subject": subject,
                "score": series.score,
                "band": band,
                "observed": series.values.get("observed"),
                "labels": sorted(series.labels.items()),
                "chart": (
                    await _chart(request.app[CHARTS], series, subject) if ask_prometheus else None
                ),
            }
        )
    context = {
        "rows": rows,
        "modelled": len(every),
        "warming": sum(1 for s in every if s.warming),
        "enabled": request.app[CONFIG].anomaly.enabled,
    }
    return await render(request, "anomalies.html", context, user=user)

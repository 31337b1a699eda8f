"""``/console/anomalies``: the highest scores the anomaly loop published, or why there are none."""

from __future__ import annotations

import asyncio
import base64
import re
import struct
from datetime import timedelta

from aiohttp import web
from prometheus_client.core import GaugeMetricFamily

from ai_sidecar.anomaly.scoring import FIELDS
from ai_sidecar.console.health import PROBE
from ai_sidecar.console.pages.actions import CLIENT
from ai_sidecar.console.pages.anomalies import CHARTS, AnomalyCharts
from ai_sidecar.graph_route import RenderedGraphs
from ai_sidecar.keys import METRICS
from ai_sidecar.metrics import ForwardedMetrics
from ai_sidecar.notify.graphs import GraphSource
from ai_sidecar.promql.http import HttpPromQLClient
from tests.ai_sidecar.console.conftest import VIEWER, ConsoleFactory


def families(series: list[tuple[dict[str, str], dict[str, float]]]) -> list[GaugeMetricFamily]:
    """The ``scout_anomaly_<field>`` families in the scoring loop's shape (one sample per
    series and field, labelled with ``signal`` and the series' own labels)."""
    found = {name: GaugeMetricFamily(f"scout_anomaly_{name}", name) for name in FIELDS}
    for labels, values in series:
        for name, value in values.items():
            found[name].add_sample(f"scout_anomaly_{name}", labels, value)
    return list(found.values())


def png_size(data_uri: str) -> tuple[int, int]:
    png = base64.b64decode(data_uri.removeprefix("data:image/png;base64,"))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


async def test_without_models_the_page_says_why(console_factory: ConsoleFactory) -> None:
    off = await console_factory()
    page = await (await off.get("/console/anomalies", headers=VIEWER)).text()
    assert "Anomaly detection is off" in page
    on = await console_factory(config="anomaly: {enabled: true}")
    page = await (await on.get("/console/anomalies", headers=VIEWER)).text()
    assert "No anomaly model has scored a series yet" in page


async def test_the_highest_scores_come_first_with_their_band_and_chart(
    console_factory: ConsoleFactory,
) -> None:
    client = await console_factory(config="anomaly: {enabled: true}")
    wan = {"signal": "wan_throughput", "instance": "fw-1", "ifName": "wan0"}
    series = [
        (
            {**wan, "direction": "in"},
            {"score": 0.97, "lower": 5e7, "upper": 1.2e8, "observed": 3e8},
        ),
        (
            {**wan, "direction": "out"},
            {"score": 0.4, "lower": 1e6, "upper": 2e6, "observed": 1.5e6},
        ),
        ({"signal": "probe_rtt", "instance": "srv-1"}, {"score": 0.99, "warming": 1.0}),
        *(
            (
                {"signal": "cpu_usage", "instance": f"h{n:02}"},
                {"score": n / 100, "lower": 0.1, "upper": 0.5},
            )
            for n in range(20)
        ),
    ]
    client.server.app[METRICS].registry.register(ForwardedMetrics(families(series)))

    page = await (await client.get("/console/anomalies", headers=VIEWER)).text()

    subjects = re.findall(r'<h2 id="anomaly-\d+">([^<]+)</h2>', page)
    assert subjects[:3] == [
        "WAN throughput of fw-1 wan0",
        "WAN throughput of fw-1 wan0",
        "CPU usage of h19",
    ]
    assert len(subjects) == 10
    assert "Score <strong>0.97</strong>; now 3e+08; expected 50-120 Mbit/s" in page
    assert "of 23 scored (1 still warming up and left out)" in page
    assert "probe RTT of srv-1" not in page  # still warming up: its score is not trusted
    charts = re.findall(r'<img class="graph" src="(data:image/png;base64,[^"]+)"', page)
    assert len(charts) == 10
    assert png_size(charts[0]) == (800, 400)


async def test_in_french_subjects_and_bands_are_french(console_factory: ConsoleFactory) -> None:
    client = await console_factory(config="anomaly: {enabled: true}\nlanguage: fr")
    wan = {"signal": "wan_throughput", "instance": "fw-1", "ifName": "wan0"}
    series = [(wan, {"score": 0.97, "lower": 1.5e6, "upper": 2.5e7, "observed": 3e8})]
    client.server.app[METRICS].registry.register(ForwardedMetrics(families(series)))

    page = await (await client.get("/console/anomalies", headers=VIEWER)).text()

    assert re.findall(r'<h2 id="anomaly-\d+">([^<]+)</h2>', page) == [
        "WAN throughput sur fw-1 wan0"
    ]
    assert "1,5-25 Mbit/s" in page
    assert " of " not in page


async def test_with_prometheus_unreachable_the_page_does_not_wait_for_it(
    console_factory: ConsoleFactory,
) -> None:
    # A Prometheus that accepts connections and never answers (overloaded, or
    # behind a broken proxy): each chart would wait for its whole time box.
    asked: list[None] = []
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asked.append(None)
        held.append(writer)

    hung = await asyncio.start_server(hold, "127.0.0.1", 0)
    hung_url = f"http://127.0.0.1:{hung.sockets[0].getsockname()[1]}"

    async def charts_from_hung_prometheus(app: web.Application) -> None:
        client = HttpPromQLClient(hung_url, app[CLIENT])
        app[CHARTS] = AnomalyCharts(GraphSource(client, range=timedelta(hours=1)), RenderedGraphs())

    try:
        client = await console_factory(
            config="anomaly: {enabled: true}", on_startup=[charts_from_hung_prometheus]
        )
        app = client.server.app
        series = [
            ({"signal": "cpu_usage", "instance": f"h{n}"}, {"score": 0.9, "lower": 0, "upper": 1})
            for n in range(3)
        ]
        app[METRICS].registry.register(ForwardedMetrics(families(series)))
        # What the background probe concludes of such a Prometheus (tested in test_pages).
        app[PROBE].state, app[PROBE].detail = "unreachable", "query timed out after 2s"

        page = await (await client.get("/console/anomalies", headers=VIEWER)).text()

        assert asked == [], "the page asked Prometheus, known unreachable"
        assert len(re.findall(r'<h2 id="anomaly-\d+">', page)) == 3
        assert page.count("No chart: Prometheus did not answer its last probe") == 3
    finally:
        for writer in held:
            writer.close()
        hung.close()
        await hung.wait_closed()

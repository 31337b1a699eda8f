"""``/console/anomalies``: the highest scores the anomaly loop published, or why there are none."""

from __future__ import annotations

import base64
import re
import struct

from prometheus_client.core import GaugeMetricFamily

from ai_sidecar.anomaly.scoring import FIELDS
from ai_sidecar.keys import METRICS
from ai_sidecar.metrics import ForwardedMetrics
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

"""The report's Prometheus tables against a real Prometheus holding a day of
flow, WAN and anomaly series (backfilled with promtool)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from ai_sidecar.config import ReportsConfig
from ai_sidecar.console.reports.measured import top_anomalies, top_talkers, wan_utilisation
from ai_sidecar.console.reports.model import build_report
from ai_sidecar.console.reports.period import report_period
from ai_sidecar.console.reports.tables import report_tables
from ai_sidecar.promql import HttpPromQLClient
from ai_sidecar.store import SqliteStore
from tests.peers.promql import engine_holding

pytestmark = pytest.mark.peers

UTC_ZONE = ZoneInfo("UTC")
# The day reported on: 2026-11-19, ending at midnight.
DAY = date(2026, 11, 19)
END = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp())
SECONDS = 86_400
# Bytes per second of each talker and exporter (a counter growing linearly).
TALKERS = {
    ("10.1.1.9", "source", "r1"): 1000.0,
    ("10.1.1.9", "source", "r2"): 1000.0,
    ("fd00::7", "destination", "r1"): 500.0,
    ("other", "source", "r1"): 1e6,
}
WAN_IN = "wan_ifIndex:if_in_utilisation:ratio_rate5m"
WAN_OUT = "wan_ifIndex:if_out_utilisation:ratio_rate5m"
SPIKE = 0.9


def samples() -> Iterator[tuple[str, dict[str, str], float, int]]:
    # From ten minutes before the day to ten minutes after it, every minute.
    for step in range(-10, SECONDS // 60 + 11):
        at = END - SECONDS + 60 * step
        elapsed = at - (END - SECONDS - 600)
        for (address, direction, exporter), rate in TALKERS.items():
            labels = {"address": address, "direction": direction, "exporter": exporter}
            yield "scout_flow_talker_bytes_total", labels, rate * elapsed, at
        link = {"instance": "r1", "ifIndex": "3", "ifName": "ge-0/0/3", "ifAlias": "WAN isp1"}
        yield WAN_IN, link, SPIKE if step == 600 else 0.25, at
        yield WAN_OUT, link, 0.1, at
        for instance, peak in (("r1", 0.97), ("sw-<b>", 0.6)):
            score = peak if step == 700 else 0.1
            labels = {"signal": "wan_throughput", "instance": instance, "job": "scout"}
            yield "scout_anomaly_score", labels, score, at


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("report-prometheus")
    with engine_holding("prometheus", directory, samples) as url:
        yield url


@pytest.fixture
async def client(prometheus: str) -> AsyncIterator[HttpPromQLClient]:
    async with aiohttp.ClientSession() as session:
        yield HttpPromQLClient(prometheus, session)


TIME_BOX = timedelta(seconds=10)
PERIOD = report_period("day", UTC_ZONE, now=datetime.now(UTC), end_date=DAY)


async def test_top_talkers_are_summed_over_exporters_without_other(client) -> None:  # type: ignore[no-untyped-def]
    talkers = await top_talkers(client, PERIOD, 10, TIME_BOX)
    assert talkers.unavailable is None
    got = [(t.address, t.direction, t.bytes) for t in talkers.rows]
    assert got == [
        ("10.1.1.9", "source", pytest.approx(2000.0 * SECONDS, rel=1e-6)),
        ("fd00::7", "destination", pytest.approx(500.0 * SECONDS, rel=1e-6)),
    ]
    assert [t.address for t in (await top_talkers(client, PERIOD, 1, TIME_BOX)).rows] == [
        "10.1.1.9"
    ]


async def test_wan_links_have_their_mean_and_peak_per_direction(client) -> None:  # type: ignore[no-untyped-def]
    wan = await wan_utilisation(client, PERIOD, 10, TIME_BOX)
    assert wan.unavailable is None
    inbound, outbound = wan.rows
    assert (inbound.instance, inbound.interface, inbound.direction) == ("r1", "ge-0/0/3", "in")
    assert inbound.peak == SPIKE
    # One spike among a day of 0.25s.
    assert 0.25 < inbound.mean < 0.26
    assert (outbound.direction, outbound.mean, outbound.peak) == (
        "out",
        pytest.approx(0.1),
        pytest.approx(0.1),
    )


async def test_anomalies_are_ranked_by_their_highest_score(client) -> None:  # type: ignore[no-untyped-def]
    anomalies = await top_anomalies(client, PERIOD, 10, TIME_BOX)
    assert [(a.signal, a.subject, a.score) for a in anomalies.rows] == [
        ("wan_throughput", "instance=r1", 0.97),
        ("wan_throughput", "instance=sw-<b>", 0.6),
    ]


async def test_a_period_without_the_metrics_says_so_in_every_table(client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    empty = report_period("day", UTC_ZONE, now=datetime.now(UTC), end_date=DAY - timedelta(days=3))
    store = await SqliteStore.open(tmp_path / "scout.db")
    try:
        report = await build_report(store, empty, ReportsConfig(), client)
    finally:
        await store.close()
    reasons = {t.key: t.unavailable for t in report_tables(report)}
    assert reasons["bandwidth"] == (
        "not available: no flow metrics (scout_flow_talker_bytes_total) in Prometheus"
    )
    assert reasons["wan"] is not None
    assert WAN_IN in reasons["wan"]
    assert (
        reasons["anomalies"]
        == "not available: no anomaly scores (scout_anomaly_score) in Prometheus"
    )

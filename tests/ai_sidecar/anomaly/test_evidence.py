"""Anomaly evidence read back from a real Prometheus, as the worker asks for it.

One Prometheus holds two kinds of scores (and VictoriaMetrics the history
too, for the same time-range cases):

- live ones, scraped every second (with ``honor_labels``, as the shipped config
  scrapes the sidecar) from a page that stands in for the sidecar's /metrics:
  firewall fw-1's WAN interface wan0 is anomalous, its wan1 a little less, its
  CPU (another job) too, and an interface of sw-core-1 is normal;
- history, backfilled with ``promtool`` at one point a minute over four hours
  that ended at least two hours ago, for the time-range and warm-up cases.

The last test runs the whole sidecar against it: webhook, worker, priority,
local analyst and the incidents API.
"""

from __future__ import annotations

import asyncio
import http.server
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from ai_sidecar.anomaly import evidence as evidence_module
from ai_sidecar.anomaly.evidence import (
    QUERY_BURST,
    QUERY_RATE,
    RETRY_FIRST,
    TIME_BOX,
    WAIT_BURST,
    ScrapedAnomalyEvidence,
    create_evidence_metrics,
    describe_series,
    evidence_band,
    evidence_window,
    format_band,
    match_evidence,
)
from ai_sidecar.app import create_app
from ai_sidecar.i18n import translator
from ai_sidecar.models import AnomalyEvidence, Incident, Member
from ai_sidecar.promql import (
    BadQueryError,
    HttpPromQLClient,
    PromQLClient,
    Sample,
    UnavailableError,
)
from ai_sidecar.settings import SidecarSettings
from scripts.localstack import Service, free_port, prometheus_service
from tests.ai_sidecar.builders import T0, alert, fingerprint, payload
from tests.conftest import promql, wait_for
from tests.peers.history import backfill, import_into_victoria_metrics, victoria_metrics_service

pytestmark = pytest.mark.peers

# Whole hours, at least two hours before now, so the history never meets the head.
START = datetime.fromtimestamp((int(time.time()) - 6 * 3600) // 3600 * 3600, UTC)
HISTORY_MINUTES = 240
BOX = timedelta(seconds=10)
TOKEN = "evidence-test-token"

WAN0 = {"signal": "wan_throughput", "job": "snmp", "instance": "fw-1", "ifName": "wan0"}
WAN1 = {"signal": "wan_throughput", "job": "snmp", "instance": "fw-1", "ifName": "wan1"}
FW_CPU = {"signal": "host_cpu", "job": "node", "instance": "fw-1"}
CORE_PORT = {
    "signal": "interface_in_bits",
    "job": "snmp",
    "instance": "sw-core-1",
    "ifName": "Gi1/0/24",
}
# name -> (labels, score, lower, upper): what the stand-in /metrics page serves.
LIVE: dict[str, tuple[dict[str, str], float, float | None, float | None]] = {
    "wan0": (WAN0, 0.97, 1.2e8, 3.4e8),
    "wan1": (WAN1, 0.92, 1.0e8, 3.0e8),
    "fw_cpu": (FW_CPU, 0.95, None, None),
    "core_port": (CORE_PORT, 0.3, 2.0e8, 9.0e8),
}

HIST_FW = {"signal": "wan_throughput", "job": "snmp", "instance": "hist-fw", "ifName": "wan0"}
HIST_ISP = {"signal": "probe_rtt", "job": "probe_icmp", "instance": "hist-isp"}
HIST_WEB = {"signal": "host_cpu", "job": "node", "instance": "hist-web"}
# An instance anyone able to set a label could name: a quote, backslashes, a
# newline and regular-expression syntax.
HIST_ODD = {"signal": "host_cpu", "job": "node", "instance": 'odd\\host"1\n(a|.*)\\n'}


def at(minute: float) -> datetime:
    return START + timedelta(minutes=minute)


def history(minute: int) -> Iterator[tuple[str, dict[str, str], float]]:
    """(metric, labels, value) of every backfilled series at ``minute``."""
    # hist-fw: anomalous from 120 to 150.
    yield "scout_anomaly_score", HIST_FW, 0.95 if 120 <= minute < 150 else 0.1
    yield "scout_anomaly_lower", HIST_FW, 1.2e8
    yield "scout_anomaly_upper", HIST_FW, 3.4e8
    yield "scout_anomaly_warming", HIST_FW, 0.0
    # hist-isp: anomalous from 60 to 70 only.
    yield "scout_anomaly_score", HIST_ISP, 0.8 if 60 <= minute < 70 else 0.1
    yield "scout_anomaly_lower", HIST_ISP, 0.012
    yield "scout_anomaly_upper", HIST_ISP, 0.030
    yield "scout_anomaly_warming", HIST_ISP, 0.0
    # hist-web: scores 0.99 from 100 to 150, but warms up until 140.
    yield "scout_anomaly_score", HIST_WEB, 0.99 if 100 <= minute < 150 else 0.2
    yield "scout_anomaly_warming", HIST_WEB, 1.0 if minute < 140 else 0.0
    # The odd instance: anomalous all along.
    yield "scout_anomaly_score", HIST_ODD, 0.9
    yield "scout_anomaly_warming", HIST_ODD, 0.0


def _labels(labels: dict[str, str]) -> str:
    """Labels as the text formats write them: backslash, quote and newline escaped."""

    def escaped(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{escaped(v)}"' for k, v in labels.items()) + "}"


def write_history(directory: Path) -> None:
    families: dict[str, dict[str, list[str]]] = {}
    for minute in range(HISTORY_MINUTES + 1):
        stamp = int(at(minute).timestamp())
        for metric, labels, value in history(minute):
            series = families.setdefault(metric, {}).setdefault(_labels(labels), [])
            series.append(f"{metric}{_labels(labels)} {value} {stamp}")
    lines = []
    for metric, series in families.items():
        lines.append(f"# TYPE {metric} gauge")
        for samples in series.values():
            lines += samples
    source = directory / "history.om"
    source.write_text("\n".join([*lines, "# EOF", ""]))
    backfill(source, directory / "prometheus")


def live_page() -> bytes:
    lines = []
    for metric, index in (
        ("scout_anomaly_score", 1),
        ("scout_anomaly_lower", 2),
        ("scout_anomaly_upper", 3),
        ("scout_anomaly_warming", None),
    ):
        lines.append(f"# TYPE {metric} gauge")
        for labels, *values in LIVE.values():
            value = 0.0 if index is None else values[index - 1]
            if value is not None:
                lines.append(f"{metric}{_labels(labels)} {value}")
    return ("\n".join(lines) + "\n").encode()


class MetricsPage(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = live_page()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("evidence")
    write_history(directory)
    page = http.server.ThreadingHTTPServer(("127.0.0.1", 0), MetricsPage)
    threading.Thread(target=page.serve_forever, daemon=True).start()
    config = directory / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: scout-sidecar\n"
        "    honor_labels: true\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{page.server_address[1]}']}}]\n"
    )
    port = free_port()
    service: Service = prometheus_service(config, directory, port)
    service.start()
    try:
        service.wait_ready()
        url = f"http://127.0.0.1:{port}"
        wait_for(
            lambda: len(promql(url, "scout_anomaly_score")) == len(LIVE),
            what="Prometheus to scrape the live scores",
        )
        yield url
    finally:
        service.stop(grace=5)
        page.shutdown()
        page.server_close()


@pytest.fixture(scope="module")
def victoria_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """VictoriaMetrics holding the same history, through its import API."""
    directory = tmp_path_factory.mktemp("evidence-vm")
    service, url = victoria_metrics_service(directory)
    service.start()
    try:
        service.wait_ready()
        lines = "".join(
            f"{metric}{_labels(labels)} {value} {int(at(minute).timestamp()) * 1000}\n"
            for minute in range(HISTORY_MINUTES + 1)
            for metric, labels, value in history(minute)
        )
        import_into_victoria_metrics(url, lines)
        yield url
    finally:
        service.stop(grace=5)


@pytest.fixture
async def client(prometheus: str) -> Any:
    async with aiohttp.ClientSession() as session:
        yield HttpPromQLClient(prometheus, session)


@pytest.fixture(params=["prometheus", "victoria-metrics"])
async def history_client(request: pytest.FixtureRequest) -> Any:
    """A client of an engine holding the backfilled history: the query is plain PromQL."""
    url = request.getfixturevalue(request.param.replace("-", "_"))
    async with aiohttp.ClientSession() as session:
        yield HttpPromQLClient(url, session)


def member(alertname: str, first: datetime, **labels: str) -> Member:
    all_labels = {"alertname": alertname, "severity": "warning", **labels}
    return Member(
        fingerprint=fingerprint(all_labels),
        labels=all_labels,
        annotations={},
        status="firing",
        starts_at=first,
        first_starts_at=first,
    )


def incident(*members: Member, resolved_at: datetime | None = None) -> Incident:
    created = min(m.first_starts_at for m in members)
    return Incident(
        id=f"inc-{'-'.join(m.fingerprint[:4] for m in members)}",
        status="open" if resolved_at is None else "resolved",
        group={"site": "hq"},
        members={m.fingerprint: m for m in members},
        created_at=created,
        updated_at=created,
        root_cause=members[0].fingerprint,
        resolved_at=resolved_at,
    )


def scores(evidence: Sequence[AnomalyEvidence]) -> dict[str, float]:
    return {e.subject: e.score for e in evidence}


# ---------------------------------------------------------------- live scores


async def test_a_member_is_supported_only_by_the_series_matching_its_labels(client):
    now = datetime.now(UTC)
    down = member("InterfaceDown", now, job="snmp", instance="sw-core-1", ifName="Gi1/0/24")
    anomaly = member("AnomalyDetected", now, **WAN0)
    found = await ScrapedAnomalyEvidence(client).evidence(incident(down, anomaly))
    # Not wan1 (another ifName), nor fw-1's CPU (another signal and job), nor
    # sw-core-1's port (scored 0.3, below the floor).
    assert found == (
        AnomalyEvidence(
            subject="WAN throughput of fw-1 wan0",
            score=0.97,
            band="120-340 Mbit/s",
            member=anomaly.fingerprint,
            labels=WAN0,
        ),
    )


async def test_a_member_without_element_labels_is_supported_by_its_whole_device(client):
    now = datetime.now(UTC)
    # Any job: every series of fw-1, strongest first.
    host = member("HostDown", now, instance="fw-1")
    found = await ScrapedAnomalyEvidence(client).evidence(incident(host))
    assert [(e.subject, e.score, e.band) for e in found] == [
        ("WAN throughput of fw-1 wan0", 0.97, "120-340 Mbit/s"),
        ("host CPU of fw-1", 0.95, None),
        ("WAN throughput of fw-1 wan1", 0.92, "100-300 Mbit/s"),
    ]
    assert {e.member for e in found} == {host.fingerprint}
    # The job must agree when the alert has one: the CPU is scraped by "node".
    snmp = member("SnmpDeviceSlow", now, job="snmp", instance="fw-1")
    found = await ScrapedAnomalyEvidence(client).evidence(incident(snmp))
    assert scores(found) == {
        "WAN throughput of fw-1 wan0": 0.97,
        "WAN throughput of fw-1 wan1": 0.92,
    }


async def test_a_lower_floor_admits_weaker_scores(client):
    now = datetime.now(UTC)
    port = member("InterfaceErrors", now, job="snmp", instance="sw-core-1", ifName="Gi1/0/24")
    assert await ScrapedAnomalyEvidence(client).evidence(incident(port)) == ()
    found = await ScrapedAnomalyEvidence(client, floor=0.2).evidence(incident(port))
    assert [(e.subject, e.score, e.band) for e in found] == [
        ("interface in bits of sw-core-1 Gi1/0/24", 0.3, "200-900 Mbit/s")
    ]


async def test_members_without_an_instance_ask_nothing():
    class Refuses:
        async def instant(self, *args: Any, **kwargs: Any) -> tuple[Sample, ...]:
            raise AssertionError("no query expected")

        async def range(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("no query expected")

    now = datetime.now(UTC)
    lone = member("BackupFailed", now, job="backup", site="hq")
    assert await ScrapedAnomalyEvidence(Refuses()).evidence(incident(lone)) == ()


# ---------------------------------------------------------------- the incident's span


async def test_an_anomaly_during_a_resolved_incident_counts_after_it_ended(history_client):
    # hist-fw was anomalous from 120 to 150; it is calm at 230, when the worker asks.
    late = ScrapedAnomalyEvidence(history_client, clock=lambda: at(230))
    link = member("WanLinkDown", at(125), job="snmp", instance="hist-fw", ifName="wan0")
    found = await late.evidence(incident(link, resolved_at=at(150)))
    assert [(e.subject, e.score, e.band) for e in found] == [
        ("WAN throughput of hist-fw wan0", 0.95, "120-340 Mbit/s")
    ]
    # The same alert, open since 190: the anomaly is over and not in its span.
    recent = member("WanLinkDown", at(190), job="snmp", instance="hist-fw", ifName="wan0")
    assert await late.evidence(incident(recent)) == ()


async def test_the_span_starts_shortly_before_the_first_alert(history_client):
    # hist-isp's RTT was anomalous from 60 to 70.
    slow = member("ProbeLatencyHigh", at(72), job="probe_icmp", instance="hist-isp")
    found = await ScrapedAnomalyEvidence(history_client, clock=lambda: at(80)).evidence(
        incident(slow)
    )
    assert [(e.subject, e.score, e.band) for e in found] == [
        ("probe RTT of hist-isp", 0.8, "12-30 ms")
    ]
    later = member("ProbeLatencyHigh", at(125), job="probe_icmp", instance="hist-isp")
    assert (
        await ScrapedAnomalyEvidence(history_client, clock=lambda: at(200)).evidence(
            incident(later)
        )
        == ()
    )


async def test_scores_of_a_warming_series_are_no_evidence(history_client):
    # hist-web scored 0.99 from 100 to 150 but was warming up until 140.
    source = ScrapedAnomalyEvidence(history_client, clock=lambda: at(200))
    busy = member("HostCpuHigh", at(120), job="node", instance="hist-web")
    assert await source.evidence(incident(busy, resolved_at=at(135))) == ()
    found = await source.evidence(incident(busy, resolved_at=at(150)))
    assert scores(found) == {"host CPU of hist-web": 0.99}


async def test_an_instance_with_quotes_newlines_and_regex_syntax_is_matched_exactly(
    history_client,
):
    source = ScrapedAnomalyEvidence(history_client, clock=lambda: at(200))
    odd = member("HostCpuHigh", at(150), job="node", instance=HIST_ODD["instance"])
    link = member("WanLinkDown", at(150), job="snmp", instance="hist-fw", ifName="wan0")
    found = await source.evidence(incident(odd, link))
    # The odd value breaks neither the query nor the others' evidence.
    assert scores(found) == {
        f"host CPU of {HIST_ODD['instance']}": 0.9,
        "WAN throughput of hist-fw wan0": 0.95,
    }
    assert {e.member for e in found} == {odd.fingerprint, link.fingerprint}


# ---------------------------------------------------------------- failures and cost


@dataclass
class Switch:
    """A client that is the real one or a broken one, as the test decides."""

    working: PromQLClient
    broken: PromQLClient
    failing: bool = False
    calls: int = 0

    async def instant(self, query: str, at: datetime, *, time_box: timedelta) -> tuple[Sample, ...]:
        self.calls += 1
        target = self.broken if self.failing else self.working
        return await target.instant(query, at, time_box=time_box)

    async def range(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("evidence needs no range query")


class InstantOnly:
    """A stand-in client's range query: evidence never asks one."""

    async def range(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("evidence needs no range query")


class Ticker:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def queries(registry: CollectorRegistry, outcome: str) -> float:
    value = registry.get_sample_value(
        "scout_sidecar_anomaly_evidence_queries_total", {"outcome": outcome}
    )
    return value or 0.0


async def test_an_unreachable_prometheus_degrades_to_the_last_evidence_and_recovers(client, caplog):
    caplog.set_level(logging.INFO, logger="ai_sidecar.anomaly.evidence")
    async with aiohttp.ClientSession() as session:
        closed = HttpPromQLClient(f"http://127.0.0.1:{free_port()}", session)
        switch = Switch(client, closed)
        ticker = Ticker()
        registry = CollectorRegistry()
        source = ScrapedAnomalyEvidence(switch, monotonic=ticker)
        source.observe(create_evidence_metrics(registry))
        now = datetime.now(UTC)
        wan = incident(member("AnomalyDetected", now, **WAN0))
        other = incident(member("HostDown", now, instance="fw-1"))

        first = await source.evidence(wan)
        assert scores(first) == {"WAN throughput of fw-1 wan0": 0.97}
        switch.failing = True
        ticker.now += 120  # past the cache: a new query is due
        # The incident keeps what it had; one never answered has none.
        assert await source.evidence(wan) == first
        assert switch.calls == 2
        ticker.now += 1
        assert await source.evidence(other) == ()
        assert switch.calls == 2  # paused after the failure: Prometheus is left alone
        ticker.now += RETRY_FIRST
        assert await source.evidence(other) == ()
        assert switch.calls == 3  # tried again, failed again, paused longer
        ticker.now += RETRY_FIRST
        assert await source.evidence(other) == ()
        assert switch.calls == 3
        switch.failing = False
        ticker.now += RETRY_FIRST * 2
        assert len(await source.evidence(other)) == 3
        assert switch.calls == 4

    assert (queries(registry, "answered"), queries(registry, "failed")) == (2, 2)
    assert queries(registry, "skipped") == 2
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert messages == [
        ("WARNING", "anomaly evidence unavailable; incidents keep their last evidence meanwhile"),
        ("INFO", "anomaly evidence available again"),
    ]
    assert "cannot reach Prometheus" in caplog.records[0].error  # type: ignore[attr-defined]


async def test_after_a_restart_an_outage_keeps_the_evidence_the_incident_was_saved_with():
    class Down(InstantOnly):
        async def instant(self, *args: Any, **kwargs: Any) -> tuple[Sample, ...]:
            raise UnavailableError("cannot reach Prometheus")

    saved = AnomalyEvidence("WAN throughput of fw-1 wan0", 0.97, "120-340 Mbit/s")
    now = datetime.now(UTC)
    wan = replace(incident(member("AnomalyDetected", now, **WAN0)), anomaly_evidence=(saved,))
    # A new source (a restart, or another replica leading): nothing found yet.
    source = ScrapedAnomalyEvidence(Down())
    assert await source.evidence(wan) == (saved,)  # failed
    assert await source.evidence(wan) == (saved,)  # skipped: Prometheus is left alone
    assert await source.evidence(replace(wan, anomaly_evidence=())) == ()


async def test_a_refused_query_pauses_nobody_else():
    class Limited(InstantOnly):
        """Refuses the queries of one big incident, as Mimir does past its series limit."""

        calls = 0

        async def instant(self, query: str, *args: Any, **kwargs: Any) -> tuple[Sample, ...]:
            self.calls += 1
            if "big" in query:
                raise BadQueryError(422, "execution", "the query exceeded the series limit")
            return ()

    limited, ticker = Limited(), Ticker()
    source = ScrapedAnomalyEvidence(limited, monotonic=ticker)
    now = datetime.now(UTC)
    big = incident(member("HostDown", now, instance="big"))
    small = incident(member("HostDown", now, instance="small"))
    assert await source.evidence(big) == ()
    assert await source.evidence(small) == ()
    assert limited.calls == 2  # asked: the engine itself is fine
    assert await source.evidence(big) == ()
    assert limited.calls == 2  # the refused one is not asked again at once
    ticker.now += 120
    assert await source.evidence(big) == ()
    assert limited.calls == 3


async def test_a_prometheus_that_never_answers_costs_one_time_box():
    release = asyncio.Event()
    connections = 0

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.read(65536)
        await release.wait()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as session:
            hung = HttpPromQLClient(f"http://127.0.0.1:{port}", session)
            source = ScrapedAnomalyEvidence(hung, time_box=timedelta(seconds=1))
            now = datetime.now(UTC)
            incidents = [incident(member("HostDown", now, instance=f"h{i}")) for i in range(5)]
            started = time.monotonic()
            assert await source.evidence(incidents[0]) == ()
            asked = connections
            assert asked >= 1
            assert [await source.evidence(i) for i in incidents[1:]] == [()] * 4
            # The first waited out its box; the others asked nothing (counted by the
            # peer) and did not wait either: five boxes would be 5 s.
            assert connections == asked
            assert time.monotonic() - started < 3
    finally:
        release.set()
        server.close()
        await server.wait_closed()


async def test_a_storm_of_incidents_is_held_to_the_query_budget():
    class Counting:
        calls = 0

        async def instant(self, *args: Any, **kwargs: Any) -> tuple[Sample, ...]:
            self.calls += 1
            return ()

        async def range(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("evidence needs no range query")

    counting, ticker = Counting(), Ticker()
    source = ScrapedAnomalyEvidence(counting, monotonic=ticker)
    now = datetime.now(UTC)
    storm = [incident(member("HostDown", now, instance=f"h{i}")) for i in range(100)]
    for each in storm:
        await source.evidence(each)
    assert counting.calls == QUERY_BURST
    # Asked again within the minute: answered from the cache, nothing new sent.
    await source.evidence(storm[0])
    assert counting.calls == QUERY_BURST
    ticker.now += 2.0
    for each in storm[int(QUERY_BURST) :]:
        await source.evidence(each)
    assert counting.calls == QUERY_BURST + 2 * QUERY_RATE


async def test_a_slow_prometheus_costs_the_worker_a_bounded_share_of_its_time():
    ticker = Ticker()

    class Slow(InstantOnly):
        """Answers every query, each after 2.5 seconds: inside the time box."""

        calls = 0

        async def instant(self, *args: Any, **kwargs: Any) -> tuple[Sample, ...]:
            self.calls += 1
            ticker.now += 2.5
            return ()

    slow = Slow()
    source = ScrapedAnomalyEvidence(slow, monotonic=ticker)
    now = datetime.now(UTC)
    storm = [incident(member("HostDown", now, instance=f"h{i}")) for i in range(100)]
    started = ticker.now
    for each in storm:
        await source.evidence(each)
    # One after another, 100 queries would have held the worker 250 seconds.
    assert ticker.now - started <= WAIT_BURST + TIME_BOX.total_seconds()
    asked = slow.calls
    assert asked >= 1
    # The budget comes back with time: a minute later the next ones are asked.
    ticker.now += 60.0
    for each in storm[asked:]:
        await source.evidence(each)
    assert slow.calls > asked


# ---------------------------------------------------------------- pieces


def test_the_query_names_each_instance_once_and_escapes_them():
    now = at(200)
    members = [
        member("A", at(150), instance="sw-1.example:161"),
        member("B", at(160), instance='odd"name'),
        member("C", at(170), instance="sw-1.example:161", ifName="x"),
    ]
    window = evidence_window(incident(*members), now)
    assert window is not None
    assert window.query.count('instance=~"sw\\\\-1\\\\.example:161|odd\\"name"') == 6
    assert "[60m:60s]" in window.query  # from 140 (10 minutes before 150) to 200
    assert window.at == now


def test_bands_read_in_the_signal_unit():
    assert format_band("wan_throughput", 1.2e8, 3.4e8) == "120-340 Mbit/s"
    assert format_band("interface_in_bits", -5e6, 2.5e9) == "0-2.5 Gbit/s"
    assert format_band("probe_rtt", 0.012, 0.0305) == "12-30.5 ms"
    assert format_band("probe_jitter", 0.5, 2.0) == "0.5-2 s"
    assert format_band("interface_utilisation", 0.1, 0.45) == "10-45%"
    assert format_band("host_memory_bytes", 1.5e9, 3e9) == "1.5-3 G"
    assert format_band("queue_depth", -3.0, 12.0) == "-3 to 12"
    assert format_band("queue_depth", 1234.0, 5678.0) == "1.23-5.68 k"
    assert format_band("queue_depth", 0.00012, 0.5) == "0.00012-0.5"


def test_in_french_subjects_and_bands_read_in_french():
    fr = translator("fr", "analysis")
    wan = {"signal": "wan_throughput", "instance": "fw-1", "ifName": "wan0"}
    assert describe_series(wan, fr) == "WAN throughput sur fw-1 wan0"
    assert describe_series({"instance": "h1"}, fr) == "un signal sans nom sur h1"
    assert format_band("interface_in_bits", -5e6, 2.5e9, fr) == "0-2,5 Gbit/s"
    assert format_band("interface_utilisation", 0.1, 0.45, fr) == "10-45\u00a0%"
    assert format_band("queue_depth", -3.0, 12.5, fr) == "-3 à 12,5"
    # Bands saved in English read again in French; English as saved.
    saved = AnomalyEvidence("x", 0.9, "-3 to 12.5")
    assert evidence_band(saved, fr) == "-3 à 12,5"
    assert evidence_band(replace(saved, band="1.5-2.5 Gbit/s"), fr) == "1,5-2,5 Gbit/s"
    assert evidence_band(replace(saved, band="10-45%"), fr) == "10-45\u00a0%"
    assert evidence_band(saved, translator("en", "analysis")) == "-3 to 12.5"
    # English by default, as before.
    assert describe_series(wan) == "WAN throughput of fw-1 wan0"
    assert format_band("queue_depth", -3.0, 12.5) == "-3 to 12.5"


def test_nan_and_out_of_range_scores_never_make_invalid_evidence():
    host = member("HostDown", at(0), instance="h1")
    samples = [
        Sample({"signal": "a", "instance": "h1", "scout_evidence": "score"}, 0.0, float("nan")),
        Sample({"signal": "b", "instance": "h1", "scout_evidence": "score"}, 0.0, 1.7),
        Sample({"signal": "c", "instance": "h1", "scout_evidence": "score"}, 0.0, -1.0),
        Sample({"signal": "b", "instance": "h1", "scout_evidence": "lower"}, 0.0, float("inf")),
    ]
    found = match_evidence(samples, [host], 0.5)
    assert [(e.subject, e.score, e.band) for e in found] == [("b of h1", 1.0, None)]


def test_a_storm_incident_is_matched_in_time_linear_in_its_size(monkeypatch):
    # A site outage: 100 switches with 48 interfaces down each, two anomalous
    # series per interface. Matching every series against every member took
    # seconds of the worker's event loop (on every change of the incident).
    switches, ports = range(100), range(48)
    members = [
        member("InterfaceDown", at(0), job="snmp", instance=f"sw{s}", ifName=f"Gi0/{p}")
        for s in switches
        for p in ports
    ]
    samples = [
        Sample(
            {
                "signal": signal,
                "job": "snmp",
                "instance": f"sw{s}",
                "ifName": f"Gi0/{p}",
                "scout_evidence": "score",
            },
            0.0,
            0.6 + (s * 48 + p) / 100_000,
        )
        for s in switches
        for p in ports
        for signal in ("interface_in_bits", "interface_utilisation")
    ]
    # Work counted, not timed: how many series-to-member comparisons it makes.
    compared = 0
    supports = evidence_module._supports

    def counting_supports(series: Mapping[str, str], alert: Mapping[str, str]) -> bool:
        nonlocal compared
        compared += 1
        return supports(series, alert)

    monkeypatch.setattr(evidence_module, "_supports", counting_supports)
    found = match_evidence(samples, members, 0.5)
    # The strongest: the last switch's last ports, each with its own member.
    assert [(e.subject, e.member) for e in found[:2]] == [
        ("interface in bits of sw99 Gi0/47", members[-1].fingerprint),
        ("interface utilisation of sw99 Gi0/47", members[-1].fingerprint),
    ]
    assert len(found) == 10
    # Every series against every member would be 46 million comparisons.
    assert compared <= len(samples) + len(members), compared


# ---------------------------------------------------------------- the whole sidecar


async def test_the_sidecar_prioritises_explains_and_serves_the_evidence(
    prometheus, aiohttp_client, tmp_path
):
    settings = SidecarSettings(
        data_dir=tmp_path / "data", webhook_token=TOKEN, prometheus_url=prometheus
    )
    app = await aiohttp_client(create_app(settings))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    since = datetime.now(UTC).replace(microsecond=0) - T0  # the alerts start now
    down = alert(
        "InterfaceDown",
        at=since,
        severity="critical",
        site="hq",
        job="snmp",
        instance="sw-core-1",
        ifName="Gi1/0/24",
    )
    anomaly = alert("AnomalyDetected", at=since, site="hq", **WAN0)
    response = await app.post("/api/v1/alertmanager", json=payload(down, anomaly), headers=auth)
    assert response.status == 200, await response.text()

    deadline = time.monotonic() + 30
    while True:
        listed = await (await app.get("/api/v1/incidents", headers=auth)).json()
        if listed and listed[0]["analysis"]:
            break
        assert time.monotonic() < deadline, listed
        await asyncio.sleep(0.05)
    [summary] = listed
    found = await (await app.get(f"/api/v1/incidents/{summary['id']}", headers=auth)).json()

    # Critical (+50) on two targets (+10) is P2; the anomaly's +15 makes it P1.
    assert found["priority"] == "P1"
    assert found["priorityReasons"] == [
        "severity critical (InterfaceDown on sw-core-1): +50",
        "blast radius 2 targets: +10",
        "anomaly score 0.97 (WAN throughput of fw-1 wan0, expected 120-340 Mbit/s): +15",
        "score 75: P1 from 75",
    ]
    assert (
        "InterfaceDown on sw-core-1 Gi1/0/24 coincides with an anomaly score 0.97 on"
        " WAN throughput of fw-1 wan0 (expected 120-340 Mbit/s)."
    ) in found["analysis"]["root_cause"]
    assert found["anomalyEvidence"] == [
        {
            "subject": "WAN throughput of fw-1 wan0",
            "score": 0.97,
            "band": "120-340 Mbit/s",
            "member": anomaly.fingerprint,
            "labels": WAN0,
        }
    ]
    assert summary["anomalyEvidence"] == found["anomalyEvidence"]
    metrics = await (await app.get("/metrics")).text()
    assert 'scout_sidecar_anomaly_evidence_queries_total{outcome="answered"}' in metrics

"""Prometheus context for the analyst, against the distribution's real Prometheus."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web

from ai_sidecar.context import (
    MemberContext,
    PrometheusContext,
    SeriesContext,
    expression_of,
    trend_of,
    value_expression,
)
from ai_sidecar.promql import BasicAuth, HttpPromQLClient, PromQLAuth
from scripts.localstack import free_port
from tests.ai_sidecar.builders import member
from tests.conftest import promql, wait_for


def graph_link(base: str, expr: str) -> str:
    return f"{base}/graph?g0.expr={quote(expr)}&g0.tab=1"


def source(
    session: aiohttp.ClientSession,
    base_url: str | None,
    timeout: float = 5.0,
    auth: PromQLAuth | None = None,
) -> PrometheusContext:
    return PrometheusContext(
        None if base_url is None else HttpPromQLClient(base_url, session, auth=auth),
        timeout=timedelta(seconds=timeout),
        range=timedelta(seconds=20),
        step=timedelta(seconds=1),
    )


@pytest.fixture
def prometheus(exporter_factory, prometheus_factory):
    """Prometheus scraping a real exporter every second, and a target that is down."""
    _, exporter = exporter_factory()
    gone = f"127.0.0.1:{free_port()}"
    url = prometheus_factory(
        [
            {"job_name": "scout", "static_configs": [{"targets": [exporter.split("//")[1]]}]},
            {"job_name": "gone", "static_configs": [{"targets": [gone]}]},
        ]
    )
    # A few samples each, so the range query has a trend to show.
    wait_for(
        lambda: promql(url, 'count_over_time(up{job="scout"}[1m]) >= 4'),
        what="four scrapes of the exporter",
    )
    return url, exporter.split("//")[1], gone


@pytest.mark.peers
async def test_current_value_and_trend_from_real_prometheus(prometheus):
    url, target, _ = prometheus
    # The rule fires while the target is down; its value side is `up` itself.
    alert = member(
        generator_url=graph_link(url, 'up{job="scout"} == 0'), job="scout", instance=target
    )
    samples = member(
        generator_url=graph_link(url, 'count_over_time(up{job="scout"}[1m])'),
        job="scout",
        instance=target,
    )
    async with aiohttp.ClientSession() as session:
        up = await source(session, url).context(alert)
        counted = await source(session, url).context(samples)
    assert up.available, up.reason
    assert up.query == 'up{job="scout"}'
    [series] = up.series
    assert series.labels == {"instance": target, "job": "scout"}
    assert series.value == 1.0
    assert (series.first, series.last, series.trend) == (1.0, 1.0, "flat")
    assert up.describe() == (
        f'up{{job="scout"}}: {{instance="{target}", job="scout"}} now 1, flat 1 → 1 over 20s'
    )
    # Prometheus has only just started, so the sample count is still climbing.
    [series] = counted.series
    assert series.trend == "rising"
    assert series.first is not None
    assert series.last is not None
    assert series.last > series.first


@pytest.mark.peers
async def test_only_the_alerts_own_series_are_reported(prometheus):
    url, target, gone = prometheus
    everything = member(generator_url=graph_link(url, "up"), job="gone", instance=gone)
    async with aiohttp.ClientSession() as session:
        context = await source(session, url).context(everything)
    # `up` has two series; the alert is about the target that is gone.
    [series] = context.series
    assert series.labels == {"instance": gone, "job": "gone"}
    assert series.value == 0.0
    assert target not in context.describe()


@pytest.mark.peers
async def test_a_query_prometheus_refuses_is_unavailable_with_its_reason(prometheus):
    url, _, _ = prometheus
    async with aiohttp.ClientSession() as session:
        context = await source(session, url).context(member(generator_url=graph_link(url, "up{")))
    assert not context.available
    assert context.reason.startswith("Prometheus refused the query (HTTP 400, bad_data): ")
    assert context.describe().startswith("Prometheus context unavailable: Prometheus refused")


async def test_prometheus_down_is_unavailable_with_a_reason():
    port = free_port()
    link = graph_link("http://prometheus.invalid:9090", "up == 0")
    async with aiohttp.ClientSession() as session:
        context = await source(
            session, f"http://127.0.0.1:{port}", auth=BasicAuth("scout", "s3cret")
        ).context(member(generator_url=link, fingerprint="f00d"))
    assert context == MemberContext(
        "f00d",
        False,
        f"cannot reach Prometheus at http://127.0.0.1:{port}: Connection refused",
        "up",
    )
    assert "s3cret" not in context.describe()


async def test_a_stalled_prometheus_is_cut_off_by_the_timeout(aiohttp_server):
    stalled = asyncio.Event()

    async def never_answers(request: web.Request) -> web.Response:
        stalled.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    app = web.Application()
    app.router.add_get("/api/v1/query", never_answers)
    app.router.add_get("/api/v1/query_range", never_answers)
    server = await aiohttp_server(app, host="127.0.0.1")
    base = str(server.make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as session:
        started = asyncio.get_running_loop().time()
        context = await source(session, base, timeout=0.3).context(
            member(generator_url=graph_link(base, "up == 0"))
        )
        waited = asyncio.get_running_loop().time() - started
    assert stalled.is_set()
    assert context.reason == "Prometheus did not answer within 300ms"
    assert not context.available
    assert waited < 3


async def test_an_answer_that_is_not_json_is_unavailable(aiohttp_server):
    async def proxy_error(request: web.Request) -> web.Response:
        return web.Response(status=502, text="<html>Bad Gateway</html>")

    app = web.Application()
    app.router.add_get("/api/v1/query", proxy_error)
    app.router.add_get("/api/v1/query_range", proxy_error)
    server = await aiohttp_server(app, host="127.0.0.1")
    base = str(server.make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as session:
        context = await source(session, base).context(member(generator_url=graph_link(base, "up")))
    assert (context.available, context.reason) == (
        False,
        "Prometheus answered HTTP 502 without JSON",
    )


async def test_no_expression_or_no_prometheus_url_is_unavailable():
    async with aiohttp.ClientSession() as session:
        prometheus = source(session, None)
        bare = await prometheus.context(member(generator_url=""))
        elsewhere = await prometheus.context(
            member(generator_url="https://vmalert.example/api/v1/alert?g0.expr=up")
        )
    assert bare.reason == "the alert's generatorURL carries no expression (g0.expr)"
    # The host in a generatorURL is never followed: alert text is untrusted.
    assert elsewhere.reason == "SCOUT_PROMETHEUS_URL is not set"
    assert not bare.available
    assert not elsewhere.available


@pytest.mark.parametrize(
    ("expr", "queried"),
    [
        ("up == 0", "up"),
        ('rate(ifInErrors{ifName!="lo"}[5m]) > 0.1', 'rate(ifInErrors{ifName!="lo"}[5m])'),
        ("sum by (instance) (rate(x[5m])) >= 10", "sum by (instance) (rate(x[5m]))"),
        ('x{l="a>b"} > 3', 'x{l="a>b"}'),
        ("probe_success < 1 # down > 1m", "probe_success"),
        ("0.5 < on(instance) rate(x[5m])", "rate(x[5m])"),
        # Left alone: already a value, a set operation, a chain, or wrapped.
        ("up == bool 0", "up == bool 0"),
        ("a > 1 and b < 2", "a > 1 and b < 2"),
        ("a > 1 < 5", "a > 1 < 5"),
        ("(up == 0)", "(up == 0)"),
        ("bandwidth_bytes", "bandwidth_bytes"),
    ],
)
def test_value_side_of_a_comparison(expr, queried):
    assert value_expression(expr) == queried


def test_links_give_the_expression_and_prometheus():
    link = graph_link("http://prom:9090/prometheus", "up == 0")
    assert expression_of(link) == "up == 0"
    assert expression_of("http://prom:9090/graph?g0.tab=1") is None


@pytest.mark.parametrize(
    ("values", "trend"),
    [
        ([1.0, 0.0], "falling"),
        ([0.0, 5.0], "rising"),
        ([100.0, 104.0], "flat"),
        ([100.0, 106.0], "rising"),
        ([0.0, 0.0], "flat"),
        ([3.0], None),
    ],
)
def test_trend_first_to_last(values, trend):
    assert trend_of(values) == trend


def test_series_without_a_trend_says_only_its_value():
    assert SeriesContext({}, 2.5).describe(timedelta(minutes=15)) == "now 2.5"
    assert SeriesContext({}, None).describe(timedelta(minutes=15)) == "no current value"

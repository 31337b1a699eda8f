"""The PromQL client against real engines: Prometheus and VictoriaMetrics, same cases.

Both engines get the same data: two series sampled every 15 s for four hours
ending about an hour ago, with a half-hour hole in the middle, and beside them
what the sidecar's own queries read (the topology's LLDP rows, identities and
``up``; an anomaly signal's recording rules and the flags the scorer exported).
Prometheus reads it from blocks that ``promtool`` backfills before it starts;
VictoriaMetrics takes it through its import API. The sidecar's context,
topology and anomaly-history reads must give each engine's data the same
answer, the one the data implies.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from ai_sidecar.anomaly.history import FetchOptions, Window, fetch_history
from ai_sidecar.anomaly.signals import series_key
from ai_sidecar.anomaly.trainer import exclude_flagged
from ai_sidecar.config import AnomalyConfig, CorrelationConfig
from ai_sidecar.context import PrometheusContext, SeriesContext
from ai_sidecar.correlate.refresh import read_snapshot
from ai_sidecar.correlate.topology import Poller, build_snapshot
from ai_sidecar.promql import (
    BadQueryError,
    BasicAuth,
    BearerToken,
    HttpPromQLClient,
    QueryTimeoutError,
    Series,
    UnavailableError,
)
from scripts.localstack import Service, free_port, prometheus_service
from tests.ai_sidecar.builders import member
from tests.peers.history import backfill, import_into_victoria_metrics, victoria_metrics_service

METRIC = "scout_promql_test"
INTERVAL = 15
# Whole hours, so every step used below lands on a sample.
START = datetime.fromtimestamp((int(time.time()) - 5 * 3600) // 3600 * 3600, UTC)
END = START + timedelta(hours=4)
HOLE = (START + timedelta(hours=2), START + timedelta(hours=2, minutes=30))
SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
BOX = timedelta(seconds=20)


def sample_times() -> Iterator[tuple[int, int]]:
    """(sample index, Unix seconds) of every sample outside the hole."""
    for index in range(int((END - START).total_seconds()) // INTERVAL + 1):
        at = START + timedelta(seconds=index * INTERVAL)
        if not HOLE[0] <= at < HOLE[1]:
            yield index, int(at.timestamp())


def samples() -> Iterator[tuple[str, float, int]]:
    """(labels, value, Unix seconds): "a" counts samples up, "b" counts down."""
    for instance, sign in (("a", 1), ("b", -1)):
        for index, at in sample_times():
            yield f'{{instance="{instance}"}}', float(sign * index), at


def value_at(at: float) -> float:
    """Series "a"'s sample at ``at``: the sample index."""
    return (at - START.timestamp()) / INTERVAL


# -- what the sidecar's own reads find -------------------------------------------------

# The topology: dist-1 sees acc-1 (scraped by address) on a cable, through two
# pollers whose rows differ only in labels the query aggregates away.
NEIGHBOUR = {
    "instance": "dist-1",
    "local_port": "Gi1/0/1",
    "remote_sysname": "ACC-1.example",
    "remote_port": "Gi0/48",
    "remote_address": "10.0.0.2",
    "remote_chassis_id": "00:11:22:33:44:55",
}
IDENTITIES = (
    {"instance": "dist-1", "local_sysname": "dist-1.example", "local_chassis_id": "aa:aa"},
    {"instance": "10.0.0.2", "local_sysname": "acc-1.example", "local_chassis_id": "bb:bb"},
)
# Each names the exporter it is scraped through, the exporter itself included.
THROUGH = {"scout_exporter": "exporter-1:9116"}
TARGETS = (
    {"__name__": "up", "job": "snmp", "instance": "dist-1", "site": "hq", **THROUGH},
    {
        "__name__": "up",
        "job": "snmp",
        "instance": "10.0.0.2",
        "site": "hq",
        "upstream": "dist-1",
        **THROUGH,
    },
    {"__name__": "up", "job": "scout-exporter", "instance": "exporter-1:9116", **THROUGH},
)
# What the exporter resolved dist-1's name to, through two jobs; the rows stop
# 20 minutes before the topology is read (a DNS outage), which the read's
# lookback must bridge.
ADDRESSES = ({"instance": "dist-1", "address": "10.0.0.1"},)
ADDRESSES_STOP = timedelta(minutes=40)
# An anomaly signal's recording rules: ifIndex 1 and 2 of dist-1, in and out.
RULES = {"in": "instance_ifIndex:if_in_bits:rate5m", "out": "instance_ifIndex:if_out_bits:rate5m"}
PORTS = ("1", "2")
# The scorer flagged ifIndex 1 inbound at these sample indexes (0 elsewhere).
FLAGGED = frozenset({40, 41, 400})


def bits(direction: str, port: str, index: int) -> float:
    """The signal's value: distinct per series and per sample."""
    return 1e6 * (1 + int(port)) + (index if direction == "in" else -index)


def port_labels(direction: str | None, port: str) -> dict[str, str]:
    labels = {"job": "snmp", "instance": "dist-1", "ifIndex": port, "ifName": f"Gi1/0/{port}"}
    return labels if direction is None else {**labels, "direction": direction}


def selector(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def sidecar_samples() -> Iterator[tuple[str, str, float, int]]:
    """(metric, labels, value, Unix seconds) of the series the sidecar's reads find."""
    for index, at in sample_times():
        for poller in ("snmp", "snmp-backup"):
            yield "scout_lldp_neighbor_info", selector({**NEIGHBOUR, "job": poller}), 1.0, at
        for identity in IDENTITIES:
            yield "scout_lldp_local_info", selector({**identity, "job": "snmp"}), 1.0, at
        for target in TARGETS:
            labels = {k: v for k, v in target.items() if k != "__name__"}
            yield "up", selector(labels), 1.0, at
        if at < (START + ADDRESSES_STOP).timestamp():
            for job in ("snmp", "icmp"):
                for row in ADDRESSES:
                    yield "scout_target_address_info", selector({**row, "job": job}), 1.0, at
        for direction, metric in RULES.items():
            for port in PORTS:
                yield metric, selector(port_labels(None, port)), bits(direction, port, index), at
        flag = float(index in FLAGGED)
        flagged = {"signal": "interface_bits", **port_labels("in", "1")}
        yield "scout_anomaly_flag", selector(flagged), flag, at


def all_samples() -> Iterator[tuple[str, str, float, int]]:
    """Every sample either engine holds, as (metric, labels, value, Unix seconds)."""
    for labels, value, at in samples():
        yield METRIC, labels, value, at
    yield from sidecar_samples()


@dataclass
class Engine:
    name: str
    url: str


def start_prometheus(directory: Path) -> tuple[Service, str]:
    """Prometheus under the path prefix /prom, on blocks backfilled with the samples."""
    openmetrics = directory / "samples.om"
    families: dict[str, list[str]] = {}
    for metric, labels, value, at in all_samples():
        families.setdefault(metric, []).append(f"{metric}{labels} {value} {at}")
    lines = [line for m, rows in families.items() for line in [f"# TYPE {m} gauge", *rows]]
    openmetrics.write_text("\n".join([*lines, "# EOF", ""]))
    backfill(openmetrics, directory / "prometheus")
    config = directory / "prometheus.yml"
    config.write_text("global: {scrape_interval: 1m}\n")
    port = free_port()
    service = prometheus_service(config, directory, port, ["--web.route-prefix=/prom"])
    service.ready_url = f"http://127.0.0.1:{port}/prom/-/ready"
    return service, f"http://127.0.0.1:{port}/prom"


def vm_lines() -> str:
    return "".join(f"{m}{labels} {value!r} {at * 1000}\n" for m, labels, value, at in all_samples())


@pytest.fixture(scope="module", params=["prometheus", "victoria-metrics"])
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    directory = tmp_path_factory.mktemp(request.param)
    if request.param == "prometheus":
        service, url = start_prometheus(directory)
    else:
        service, url = victoria_metrics_service(directory)
    service.start()
    try:
        service.wait_ready()
        if request.param == "victoria-metrics":
            import_into_victoria_metrics(url, vm_lines())
        yield Engine(request.param, url)
    finally:
        service.stop(grace=5)


class Requests:
    """What a session sent: (method, path) counts and the most in flight at once."""

    def __init__(self) -> None:
        self.sent: Counter[tuple[str, str]] = Counter()
        self.in_flight = 0
        self.most_in_flight = 0

    def trace(self) -> aiohttp.TraceConfig:
        config = aiohttp.TraceConfig()

        async def started(_: Any, __: SimpleNamespace, params: Any) -> None:
            self.sent[(params.method, params.url.path.rsplit("/api/", 1)[-1])] += 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)

        async def ended(*_: Any) -> None:
            self.in_flight -= 1

        config.on_request_start.append(started)
        config.on_request_end.append(ended)
        config.on_request_exception.append(ended)
        return config


@pytest.fixture
def requests() -> Requests:
    return Requests()


@pytest.fixture
async def session(requests: Requests) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(trace_configs=[requests.trace()]) as session:
        yield session


def by_instance(series: tuple[Series, ...]) -> dict[str, Series]:
    return {s.labels["instance"]: s for s in series}


@pytest.mark.peers
async def test_instant_query_gives_each_series_its_value(engine, session):
    client = HttpPromQLClient(engine.url, session)
    at = START + timedelta(hours=1)
    found = await client.instant(METRIC, at, time_box=BOX)
    assert {s.labels["instance"]: s.value for s in found} == {
        "a": value_at(at.timestamp()),
        "b": -value_at(at.timestamp()),
    }
    assert {s.labels["__name__"] for s in found} == {METRIC}
    assert {s.timestamp for s in found} == {at.timestamp()}


@pytest.mark.peers
async def test_range_query_keeps_gaps_as_gaps(engine, session):
    client = HttpPromQLClient(engine.url, session)
    start, end = START + timedelta(hours=1), START + timedelta(hours=3)
    found = by_instance(await client.range(METRIC, start, end, MINUTE, time_box=BOX))
    series = found["a"]
    assert series.timestamps == tuple(sorted(set(series.timestamps)))
    assert series.timestamps[0] == start.timestamp()
    assert series.timestamps[-1] == end.timestamp()
    # Inside the hole there is no point at all: no zero, no carried value.
    inside = [t for t in series.timestamps if HOLE[0].timestamp() + 600 <= t < HOLE[1].timestamp()]
    assert inside == []
    steps = {b - a for a, b in zip(series.timestamps, series.timestamps[1:], strict=False)}
    assert max(steps) > 60
    # Elsewhere each step lands on a sample and has its value.
    for at, value in zip(series.timestamps, series.values, strict=True):
        if not HOLE[0].timestamp() <= at < HOLE[1].timestamp():
            assert value == value_at(at)


@pytest.mark.peers
async def test_nan_and_infinity_come_back_as_such(engine, session):
    client = HttpPromQLClient(engine.url, session)
    at = START + timedelta(hours=1)
    [infinite] = await client.instant(f'{METRIC}{{instance="a"}} / 0', at, time_box=BOX)
    assert infinite.value == math.inf
    nan = await client.range(
        f'{METRIC}{{instance="a"}} * 0 / 0', at, at + timedelta(minutes=10), MINUTE, time_box=BOX
    )
    values = [v for s in nan for v in s.values]
    # Never a number made up for NaN. VictoriaMetrics leaves NaN out of its
    # answers (a gap); Prometheus sends it.
    assert all(math.isnan(v) for v in values)
    if engine.name == "prometheus":
        assert len(values) == 11


@pytest.mark.peers
async def test_a_chunked_range_equals_one_request(engine, session, requests):
    start = START
    end = start + 9999 * SECOND  # 10,000 points per series: one request may carry it
    whole = await HttpPromQLClient(engine.url, session).range(
        METRIC, start, end, SECOND, time_box=BOX
    )
    assert requests.sent == {("GET", "v1/query_range"): 1}
    requests.sent.clear()
    chunked = await HttpPromQLClient(engine.url, session, max_points=3000).range(
        METRIC, start, end, SECOND, time_box=BOX
    )
    assert requests.sent == {("GET", "v1/query_range"): 4}
    assert requests.most_in_flight <= 4
    assert by_instance(chunked) == by_instance(whole)
    # From the first step to the last; the hole in the data stays a hole.
    assert by_instance(whole)["a"].timestamps[0] == start.timestamp()
    assert by_instance(whole)["a"].timestamps[-1] == end.timestamp()


@pytest.mark.peers
async def test_a_range_past_11000_points_is_split_and_stitched(engine, session, requests):
    start = START
    end = start + 11_400 * SECOND
    client = HttpPromQLClient(engine.url, session)
    stitched = by_instance(await client.range(METRIC, start, end, SECOND, time_box=BOX))
    assert requests.sent == {("GET", "v1/query_range"): 2}
    # The first request's share, asked for alone, is the same; the second
    # request starts one step later, so no boundary point appears twice.
    requests.sent.clear()
    head = by_instance(
        await client.range(METRIC, start, start + 10_999 * SECOND, SECOND, time_box=BOX)
    )
    assert requests.sent == {("GET", "v1/query_range"): 1}
    for instance in ("a", "b"):
        whole, first = stitched[instance], head[instance]
        assert whole.timestamps[: len(first.timestamps)] == first.timestamps
        assert whole.values[: len(first.values)] == first.values
        assert len(set(whole.timestamps)) == len(whole.timestamps)
        assert whole.timestamps[-1] == end.timestamp()
    assert stitched["a"].timestamps[0] == start.timestamp()
    unchunked = HttpPromQLClient(engine.url, session, max_points=20_000)
    if engine.name == "prometheus":
        # Why the client splits: Prometheus refuses one request this long.
        with pytest.raises(BadQueryError, match="11,000 points"):
            await unchunked.range(METRIC, start, end, SECOND, time_box=BOX)
    else:
        # VictoriaMetrics allows 30,000 points: one request gives the same.
        assert by_instance(await unchunked.range(METRIC, start, end, SECOND, time_box=BOX)) == (
            stitched
        )


@pytest.mark.peers
async def test_a_long_query_goes_as_a_post_form(engine, session, requests):
    client = HttpPromQLClient(engine.url, session)
    at = START + timedelta(hours=1)
    others = "|".join(f"absent-{i:04}" for i in range(600))
    long_query = f'{METRIC}{{instance=~"a|{others}"}}'
    assert len(long_query) > 4096
    [found] = await client.instant(long_query, at, time_box=BOX)
    assert requests.sent == {("POST", "v1/query"): 1}
    assert (found.labels["instance"], found.value) == ("a", value_at(at.timestamp()))


@pytest.mark.peers
async def test_a_bad_query_is_refused_with_the_engines_reason(engine, session):
    client = HttpPromQLClient(engine.url, session)
    with pytest.raises(BadQueryError) as refused:
        await client.instant("sum(", START, time_box=BOX)
    assert 400 <= refused.value.status < 500
    assert refused.value.error
    assert str(refused.value).startswith(
        f"Prometheus refused the query (HTTP {refused.value.status}"
    )


@pytest.mark.peers
async def test_a_call_that_outlasts_its_time_box_is_cut_off(engine, session):
    client = HttpPromQLClient(engine.url, session)
    started = time.monotonic()
    with pytest.raises(QueryTimeoutError, match="did not answer within 1ms"):
        await client.range(METRIC, START, END, SECOND, time_box=timedelta(milliseconds=1))
    assert time.monotonic() - started < 5


@pytest.mark.peers
async def test_a_series_that_stopped_is_stale_after_five_minutes(engine, session):
    client = HttpPromQLClient(engine.url, session)
    query = f'{METRIC}{{instance="a"}}'
    # The last sample before the hole still answers four minutes on, as an
    # instant query's lookback allows; ten minutes on there is no value on
    # either engine, not the last one carried forward.
    [recent] = await client.instant(query, HOLE[0] + timedelta(minutes=4), time_box=BOX)
    assert recent.value == value_at(HOLE[0].timestamp() - INTERVAL)
    assert await client.instant(query, HOLE[0] + timedelta(minutes=10), time_box=BOX) == ()
    assert await client.instant(query, END + timedelta(minutes=10), time_box=BOX) == ()


# -- the sidecar's own reads, the same on both engines -----------------------------


@pytest.mark.peers
async def test_the_analysts_context_is_the_same_on_both_engines(engine, session):
    at = START + timedelta(hours=1)
    context = PrometheusContext(
        HttpPromQLClient(engine.url, session),
        timeout=BOX,
        range=timedelta(minutes=20),
        step=MINUTE,
        clock=lambda: at,
    )
    expr = f'{METRIC}{{instance="a"}} > 10'
    alert = member(generator_url=f"http://prometheus/graph?g0.expr={quote(expr)}", instance="a")
    found = await context.context(alert)
    assert found.available, found.reason
    assert found.query == f'{METRIC}{{instance="a"}}'
    twenty_minutes_ago = at.timestamp() - 1200
    assert found.series == (
        SeriesContext(
            labels={"instance": "a"},
            value=value_at(at.timestamp()),
            first=value_at(twenty_minutes_ago),
            last=value_at(at.timestamp()),
            trend="rising",
        ),
    )


@pytest.mark.peers
async def test_the_topology_read_is_the_same_on_both_engines(engine, session):
    at = START + timedelta(hours=1)
    config = CorrelationConfig.model_validate(
        {"topology": {"pollers": [{"job": "scout-exporter", "polls": "snmp"}]}}
    )
    found = await read_snapshot(HttpPromQLClient(engine.url, session), config, at)
    # What the data implies: one neighbour row (the two pollers' rows are one
    # by the queried labels), both identities, every target, one poller (with
    # the scout_exporter its targets carry), and the address dist-1 resolved to
    # until 20 minutes ago.
    expected = build_snapshot(
        neighbours=[NEIGHBOUR],
        local_identities=IDENTITIES,
        targets=TARGETS,
        pollers=[Poller("exporter-1:9116", re.compile("snmp"), "exporter-1:9116")],
        addresses=ADDRESSES,
        built_at=at,
    )
    assert found == expected
    assert found.edges > 0
    assert found.device("ACC-1.example") == found.device("10.0.0.2")
    assert found.device("10.0.0.1") == found.device("dist-1") == "dev:dist-1"


def expected_history(first: int, last: int, step: int) -> dict[tuple[str, str], list[float]]:
    """(ifIndex, direction) -> the signal's values at sample indexes first..last by step."""
    indexes = range(first, last + 1, step)
    return {(port, d): [bits(d, port, i) for i in indexes] for port in PORTS for d in RULES}


@pytest.mark.peers
@pytest.mark.parametrize("samples_per_request", [1_000_000, 50])
async def test_an_anomaly_signals_history_is_the_same_on_both_engines(
    engine, session, samples_per_request
):
    signal = AnomalyConfig().signal("interface_bits")
    step = int(signal.step.total_seconds())
    first, last = 8, 8 + 4 * 59  # an hour of one-minute steps, every 4th sample
    options = FetchOptions(time_box=BOX, samples_per_request=samples_per_request)
    history = await fetch_history(
        HttpPromQLClient(engine.url, session),
        signal.query,
        start=START.timestamp() + first * INTERVAL,
        end=START.timestamp() + last * INTERVAL,
        step=step,
        keep_labels=signal.keep_labels,
        max_series=10,
        options=options,
    )
    # 50 samples per request: the series are counted first, then read in windows.
    assert history.requests == (1 if samples_per_request > 1000 else 1 + 60 * 4 // 50 + 1)
    assert history.timestamps.tolist() == [
        START.timestamp() + i * INTERVAL for i in range(first, last + 1, 4)
    ]
    found = {
        (dict(key)["ifIndex"], dict(key)["direction"]): row.tolist()
        for key, row in zip(history.keys, history.values, strict=True)
    }
    assert found == expected_history(first, last, 4)
    assert {key: dict(key) for key in history.keys} == {
        key: port_labels(dict(key)["direction"], dict(key)["ifIndex"]) for key in history.keys
    }
    assert history.dropped == 0


@pytest.mark.peers
async def test_the_flags_training_leaves_out_are_the_same_on_both_engines(engine, session):
    signal = AnomalyConfig().signal("interface_bits")
    step = signal.step.total_seconds()
    first, last = 0, 4 * 120  # two hours of one-minute steps
    grid = START.timestamp() + np.arange(first, last + 1, 4) * INTERVAL
    keys = [series_key(port_labels(d, p), signal.keep_labels) for p in PORTS for d in RULES]
    window = Window(0, grid, np.ones((len(keys), grid.size)))
    options = FetchOptions(time_box=BOX)
    excluded = await exclude_flagged(
        HttpPromQLClient(engine.url, session), signal, window, keys, options
    )
    # A flag counts for the grid point whose step it fell in, (t - step, t]:
    # sample 40 for the point at 40, 41 for the one at 44, 400 for the one at
    # 400, and never for the next point too (Prometheus 2's range selectors
    # include their left end, VictoriaMetrics' do not).
    flagged_row = keys.index(series_key(port_labels("in", "1"), signal.keep_labels))
    blanked = {
        (row, round((t - START.timestamp()) / INTERVAL))
        for row, column in zip(*np.nonzero(np.isnan(window.values)), strict=True)
        for t in [float(grid[column])]
    }
    assert blanked == {(flagged_row, 40), (flagged_row, 44), (flagged_row, 400)}
    assert excluded == 3
    assert step == 60


# -- without a real engine ----------------------------------------------------------


async def test_an_engine_that_is_down_is_unavailable_without_credentials(session):
    port = free_port()
    client = HttpPromQLClient(
        f"http://127.0.0.1:{port}/prefix/", session, auth=BasicAuth("scout", "s3cret")
    )
    with pytest.raises(UnavailableError) as down:
        await client.instant("up", START, time_box=BOX)
    assert str(down.value) == (
        f"cannot reach Prometheus at http://127.0.0.1:{port}/prefix: Connection refused"
    )


def test_credentials_in_the_url_are_refused_without_being_echoed(session):
    with pytest.raises(ValueError, match=r"^give the engine's credentials as auth=") as refused:
        HttpPromQLClient("http://scout:s3cret@127.0.0.1:9090", session)
    assert "s3cret" not in str(refused.value)


async def test_an_unknown_host_says_it_cannot_be_resolved(session):
    client = HttpPromQLClient("http://no-such-host.invalid:9090", session)
    with pytest.raises(UnavailableError) as down:
        await client.instant("up", START, time_box=BOX)
    message = str(down.value)
    assert message.startswith(
        "cannot reach Prometheus at http://no-such-host.invalid:9090: cannot resolve the host: "
    )
    assert "Unknown error" not in message


@pytest.fixture
async def recorder(aiohttp_server) -> tuple[str, list[web.Request], list[int]]:
    """A stand-in engine that answers with the status the test queues (200 by default)."""
    seen: list[web.Request] = []
    statuses: list[int] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request)
        status = statuses.pop(0) if statuses else 200
        if status == 200:
            data = {"resultType": "vector", "result": []}
            return web.json_response({"status": "success", "data": data})
        if status == 502:
            return web.Response(status=502, text="<html>Bad Gateway</html>")
        body = {"status": "error", "errorType": "unavailable", "error": "too busy"}
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_route("*", "/api/v1/query", answer)
    server = await aiohttp_server(app, host="127.0.0.1")
    return str(server.make_url("")).rstrip("/"), seen, statuses


async def test_credentials_are_sent_as_headers(recorder, session):
    base, seen, _ = recorder
    await HttpPromQLClient(base, session, auth=BearerToken("t0ken")).instant(
        "up", START, time_box=BOX
    )
    await HttpPromQLClient(base, session, auth=BasicAuth("scout", "s3cret")).instant(
        "up", START, time_box=BOX
    )
    assert [r.headers.get("Authorization") for r in seen] == [
        "Bearer t0ken",
        "Basic c2NvdXQ6czNjcmV0",  # scout:s3cret
    ]
    assert "t0ken" not in repr(BearerToken("t0ken"))


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (503, "Prometheus refused the query (HTTP 503, unavailable): too busy"),
        (429, "Prometheus refused the query (HTTP 429, unavailable): too busy"),
        (502, "Prometheus answered HTTP 502 without JSON"),
    ],
)
async def test_server_side_trouble_is_unavailable_not_a_bad_query(
    recorder, session, status, message
):
    base, _, statuses = recorder
    statuses.append(status)
    with pytest.raises(UnavailableError) as failed:
        await HttpPromQLClient(base, session).instant("up", START, time_box=BOX)
    assert not isinstance(failed.value, BadQueryError)
    assert str(failed.value) == message


async def test_a_proxy_refusing_a_long_url_gets_the_query_as_a_form(recorder, session):
    base, seen, statuses = recorder
    statuses.append(414)
    await HttpPromQLClient(base, session).instant("up", START, time_box=BOX)
    assert [r.method for r in seen] == ["GET", "POST"]


async def test_a_time_box_bounds_a_stalled_engine(aiohttp_server, session):
    async def never(_: web.Request) -> web.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    app = web.Application()
    app.router.add_get("/api/v1/query_range", never)
    server = await aiohttp_server(app, host="127.0.0.1")
    client = HttpPromQLClient(str(server.make_url("")), session)
    with pytest.raises(QueryTimeoutError, match="did not answer within 300ms"):
        await client.range("up", START, END, MINUTE, time_box=timedelta(milliseconds=300))


@pytest.fixture
async def slow_engine(aiohttp_server) -> tuple[str, list[tuple[float, float]], list[str]]:
    """An engine that answers after 300 ms, as a remote Thanos or Mimir may; records
    each request's (start, end) query parameters and its arrival order."""
    ranges: list[tuple[float, float]] = []
    in_flight: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        params = request.query if request.method == "GET" else await request.post()
        if "start" in params:
            ranges.append((float(str(params["start"])), float(str(params["end"]))))
        in_flight.append(request.path)
        await asyncio.sleep(0.3)
        kind = "matrix" if "start" in params else "vector"
        return web.json_response({"status": "success", "data": {"resultType": kind, "result": []}})

    app = web.Application()
    app.router.add_route("*", "/api/v1/query", answer)
    app.router.add_route("*", "/api/v1/query_range", answer)
    server = await aiohttp_server(app, host="127.0.0.1")
    return str(server.make_url("")).rstrip("/"), ranges, in_flight


async def test_independent_calls_do_not_queue_behind_each_other(slow_engine, session):
    # 24 calls at once is what four incidents' contexts ask for together; each
    # takes 300 ms, so any shared limit of a few in flight would blow the 1 s box.
    base, _, in_flight = slow_engine
    client = HttpPromQLClient(base, session)
    box = timedelta(seconds=1)
    answers = await asyncio.gather(*(client.instant("up", START, time_box=box) for _ in range(24)))
    assert answers == [()] * 24
    assert len(in_flight) == 24


async def test_a_range_starts_on_its_step_grid_in_every_window(slow_engine, session):
    base, ranges, _ = slow_engine
    client = HttpPromQLClient(base, session, max_points=100)
    start = START + timedelta(seconds=37)  # off the minute grid
    await client.range("up", start, start + timedelta(hours=4), MINUTE, time_box=BOX)
    assert len(ranges) == 3  # 241 points in windows of 100
    first_start = START.timestamp()
    assert sorted(ranges)[0][0] == first_start  # aligned down to the minute
    assert all((lo - first_start) % 60 == 0 and (hi - first_start) % 60 == 0 for lo, hi in ranges)


async def test_a_range_needing_too_many_requests_is_refused(slow_engine, session):
    base, ranges, _ = slow_engine
    client = HttpPromQLClient(base, session)
    with pytest.raises(ValueError, match="use a step longer than 0:00:01 for this range"):
        await client.range(
            "up", START, START + timedelta(days=400), timedelta(seconds=1), time_box=BOX
        )
    assert ranges == []


async def test_malformed_pairs_in_a_range_answer_are_left_out_and_the_rest_kept(
    aiohttp_server, session
):
    # No real engine sends these; an answer mangled on its way (a proxy, a
    # buggy frontend) must cost only its bad points.
    good = [[1_800_000_000, "1.5"], [1_800_000_060, "NaN"], [1_800_000_120, "+Inf"]]
    rows = [
        {"metric": {"instance": "clean"}, "values": good},
        {"metric": {"instance": "mangled"}, "values": [*good[:1], "12", [1, "x"], [2], *good[1:]]},
        # Well-shaped pairs, one of them not a number.
        {"metric": {"instance": "unparsable"}, "values": [*good[:1], [1, "x"], *good[1:]]},
    ]

    async def answer(request: web.Request) -> web.Response:
        data = {"resultType": "matrix", "result": rows}
        return web.json_response({"status": "success", "data": data})

    app = web.Application()
    app.router.add_route("*", "/api/v1/query_range", answer)
    server = await aiohttp_server(app, host="127.0.0.1")
    client = HttpPromQLClient(str(server.make_url("")).rstrip("/"), session)
    found = await client.range("up", START, START + timedelta(minutes=2), MINUTE, time_box=BOX)
    by_instance = {series.labels["instance"]: series for series in found}
    for instance in ("clean", "mangled", "unparsable"):
        series = by_instance[instance]
        assert series.timestamps == (1_800_000_000.0, 1_800_000_060.0, 1_800_000_120.0)
        assert series.values[0] == 1.5
        assert math.isnan(series.values[1])
        assert series.values[2] == math.inf

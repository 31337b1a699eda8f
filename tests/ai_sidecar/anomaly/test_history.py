"""History against real engines: chunking, the step grid, gaps, budget, retries, time box.

Prometheus and VictoriaMetrics hold the same eight days of one-minute samples
(more than 11,000 points per series), so one range query must be split.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from urllib.parse import parse_qs

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from ai_sidecar.anomaly.history import FetchOptions, fetch_history, step_grid, windows
from ai_sidecar.promql import (
    BadQueryError,
    HttpPromQLClient,
    QueryTimeoutError,
    Sample,
    Series,
    UnavailableError,
)
from tests.ai_sidecar.test_promql import Requests
from tests.peers.promql import (
    Sample as Point,
)
from tests.peers.promql import (
    engine_holding,
)

METRIC = "scout_history_test"
STEP = 60
# Whole hours; a day past the 11,000 points one request may carry.
END = (int(time.time()) - 2 * 3600) // 3600 * 3600
START = END - 8 * 86_400
HOLE = (START + 3 * 86_400, START + 3 * 86_400 + 2 * 3600)
KEEP = ["job", "instance"]
# One series whose scout_exporter changes halfway through the last hour, as an
# upgrade that adds the label does (without staleness markers: a restart).
RELABELLED = "scout_history_relabelled"
SWITCH = END - 1800


def samples() -> Iterator[Point]:
    """a counts minutes up (with a two-hour hole), b down; c is two shards of one identity;
    d (RELABELLED) counts up too, under one scout_exporter and then another."""
    for index in range((END - START) // STEP + 1):
        at = START + index * STEP
        if not HOLE[0] <= at < HOLE[1]:
            yield METRIC, {"job": "j", "instance": "a"}, float(index), at
        yield METRIC, {"job": "j", "instance": "b"}, float(-index), at
        for shard in ("1", "2"):
            yield METRIC, {"job": "j", "instance": "c", "shard": shard}, 1.0, at
        d = {"job": "j", "instance": "d"}
        d["scout_exporter"] = "scout-a:8781" if at < SWITCH else "127.0.0.1:8781"
        yield RELABELLED, d, float(index), at


@pytest.fixture(scope="module", params=["prometheus", "victoria-metrics"])
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with engine_holding(request.param, tmp_path_factory.mktemp(request.param), samples) as url:
        yield url


class Recorder(Requests):
    """The test_promql request counts, plus the points per series each range request asked."""

    def __init__(self) -> None:
        super().__init__()
        self.points: list[int] = []

    def trace(self) -> aiohttp.TraceConfig:
        config = super().trace()

        async def started(_: object, __: object, params: aiohttp.TraceRequestStartParams) -> None:
            if params.url.path.endswith("query_range"):
                query = parse_qs(params.url.query_string)
                first, last, step = (float(query[k][0]) for k in ("start", "end", "step"))
                self.points.append(round((last - first) / step) + 1)

        config.on_request_start.append(started)
        return config


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def client(engine: str, recorder: Recorder) -> AsyncIterator[HttpPromQLClient]:
    async with aiohttp.ClientSession(trace_configs=[recorder.trace()]) as session:
        yield HttpPromQLClient(engine, session)


async def fetch(client, start=END - 3600, end=END, **overrides):
    """``fetch_history`` of METRIC on the minute grid, with the test's defaults."""
    return await fetch_history(
        client,
        overrides.pop("query", METRIC),
        start=start,
        end=end,
        step=STEP,
        keep_labels=KEEP,
        max_series=overrides.pop("max_series", 10),
        **overrides,
    )


def by_instance(history) -> dict[str, np.ndarray]:
    return {
        dict(key)["instance"]: row for key, row in zip(history.keys, history.values, strict=True)
    }


async def test_eight_days_come_chunked_on_the_grid_with_gaps_as_nan(client, recorder):
    history = await fetch(client, start=START)
    points = (END - START) // STEP + 1
    assert points > 11_000
    assert np.array_equal(history.timestamps, START + STEP * np.arange(points))
    assert history.values.shape == (3, points)
    # No request past 11,000 points per series; more than one was needed.
    assert len(recorder.points) >= 2
    assert max(recorder.points) <= 11_000
    rows = by_instance(history)
    index = np.arange(points, dtype=float)
    hole = (history.timestamps >= HOLE[0] + 600) & (history.timestamps < HOLE[1])
    assert np.isnan(rows["a"][hole]).all()
    outside = (history.timestamps < HOLE[0]) | (history.timestamps >= HOLE[1])
    assert np.array_equal(rows["a"][outside], index[outside])
    assert np.array_equal(rows["b"], -index)
    # The two shards of c agree on the kept labels: one row, one dropped.
    assert np.array_equal(rows["c"], np.ones(points))
    assert history.dropped == 1
    # ... and the label that would have kept them apart is named.
    assert history.merged_by == ("shard",)


@pytest.mark.parametrize(
    "options",
    [FetchOptions(), FetchOptions(samples_per_request=4 * 7)],
    ids=["one window", "small windows"],
)
async def test_a_series_whose_labels_changed_once_carries_on_in_one_row(client, options):
    """Two series under one kept label set one after the other are one series whose
    labels changed: one row holding both, nothing dropped, no label to keep. Where
    the engine's lookback still repeats the old one after the switch, the new
    one's points win."""
    history = await fetch(client, query=RELABELLED, options=options)
    assert [dict(key)["instance"] for key in history.keys] == ["d"]
    assert np.array_equal(history.values[0], (history.timestamps - START) / STEP)
    assert history.dropped == 0
    assert history.merged_by == ()


async def test_small_windows_keep_to_the_concurrency_and_give_the_same(client, recorder):
    options = FetchOptions(samples_per_request=4 * 600, concurrency=2)
    small = await fetch(client, start=START, options=options)
    assert len(recorder.points) > 15
    assert max(recorder.points) <= 600
    assert recorder.most_in_flight <= 2
    whole = await fetch(client, start=START)
    assert small.keys == whole.keys
    assert np.array_equal(small.values, whole.values, equal_nan=True)


async def test_a_range_off_the_grid_is_rounded_onto_it(client):
    history = await fetch(client, start=END - 3600 - 17, end=END - 29)
    assert history.timestamps[0] == END - 3600
    assert history.timestamps[-1] == END - 60
    assert by_instance(history)["b"][0] == -((END - 3600 - START) // STEP)


async def test_the_budget_keeps_the_freshest_series(client):
    # Across the start of a's hole: a has points in the first windows only.
    history = await fetch(
        client,
        start=HOLE[0] - 3600,
        end=HOLE[0] + 3600,
        max_series=2,
        options=FetchOptions(samples_per_request=3 * 30),
    )
    # By name a would come first; b and c still had points at the end.
    assert sorted(by_instance(history)) == ["b", "c"]
    assert history.dropped == 2  # a, and c's second shard


class Flaky:
    """A real client whose first ``failures`` range calls find the engine unavailable."""

    def __init__(self, client: HttpPromQLClient, failures: int) -> None:
        self._client = client
        self.failures = failures
        self.calls = 0

    async def instant(self, query: str, at: datetime, *, time_box: timedelta) -> tuple[Sample, ...]:
        return await self._client.instant(query, at, time_box=time_box)

    async def range(
        self, query: str, start: datetime, end: datetime, step: timedelta, *, time_box: timedelta
    ) -> tuple[Series, ...]:
        self.calls += 1
        if self.calls <= self.failures:
            raise UnavailableError("engine restarting")
        return await self._client.range(query, start, end, step, time_box=time_box)


async def test_an_unavailable_engine_is_retried_and_a_refusal_is_not(client, monkeypatch):
    monkeypatch.setattr("ai_sidecar.anomaly.history.RETRY_BACKOFF", 0.01)
    flaky = Flaky(client, failures=2)
    history = await fetch(flaky, options=FetchOptions(retries=2))
    assert flaky.calls == 3
    assert len(history.keys) == 3
    failing = Flaky(client, failures=5)
    with pytest.raises(UnavailableError, match="engine restarting"):
        await fetch(failing, options=FetchOptions(retries=2))
    assert failing.calls == 3
    refused = Flaky(client, failures=0)
    with pytest.raises(BadQueryError):
        await fetch(refused, query="rate(", options=FetchOptions(retries=2))
    assert refused.calls == 1  # refused once, not retried


async def test_a_stalled_engine_is_cut_off_by_the_time_box(aiohttp_server, monkeypatch):
    monkeypatch.setattr("ai_sidecar.anomaly.history.RETRY_BACKOFF", 0.01)

    async def stall(_: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/api/v1/{tail:.*}", stall)
    server = await aiohttp_server(app)
    began = time.monotonic()
    async with aiohttp.ClientSession() as session:
        client = HttpPromQLClient(str(server.make_url("/")), session)
        with pytest.raises(QueryTimeoutError):
            await fetch(
                client,
                start=END - 600,
                options=FetchOptions(time_box=timedelta(seconds=0.2), retries=1),
            )
    assert time.monotonic() - began < 5


def test_grid_and_windows():
    assert step_grid(61, 300, 60).tolist() == [120, 180, 240, 300]
    assert step_grid(301, 310, 60).size == 0
    assert windows(5, 2) == [(0, 1), (2, 3), (4, 4)]
    assert windows(3, 11_000) == [(0, 2)]

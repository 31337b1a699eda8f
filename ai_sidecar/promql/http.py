"""The PromQL client over HTTP, for any engine that speaks the Prometheus API.

It uses nothing but ``/api/v1/query`` and ``/api/v1/query_range`` under the
base URL, so a path prefix (Mimir's ``/prometheus``, a reverse proxy's route)
is just part of that URL. Requests are GETs; a query too long for a URL goes as
a POST form, which every engine accepts and no proxy truncates.

A range query is split into windows of at most ``max_points`` steps per series
(Prometheus refuses more than 11,000), and the answers are stitched back
together. Its start is aligned down to a multiple of the step, as query
frontends (Thanos, Mimir) and VictoriaMetrics align it anyway, so every window
lies on one grid; each window starts one step after the previous one ended, so
the evaluation times are exactly those of one big query and no boundary point
appears twice. Only a range query's own windows share a concurrency limit:
independent calls never queue behind each other inside their time boxes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import ssl
from collections.abc import Awaitable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp

from ai_sidecar.promql.base import (
    BadQueryError,
    BasicAuth,
    BearerToken,
    PromQLAuth,
    QueryTimeoutError,
    Sample,
    Series,
    UnavailableError,
)

# Prometheus refuses range queries with more points per series than this.
MAX_POINTS_PER_SERIES = 11_000
# Longest GET URL sent: under the 8 KiB that common proxies allow, with room for headers.
MAX_GET_URL = 4096
# Windows of one range query in flight at once.
CONCURRENCY = 4
# More windows than this is a mistake (a tiny step over a long span), not a query.
MAX_WINDOWS = 1000
# Statuses that mean "try again later" rather than "the query is wrong".
_RETRYABLE_CLIENT_STATUSES = (408, 429)
_FORM = {"Content-Type": "application/x-www-form-urlencoded"}

T = TypeVar("T")
LabelKey = tuple[tuple[str, str], ...]


class HttpPromQLClient:
    """:class:`~ai_sidecar.promql.base.PromQLClient` over aiohttp.

    ``base_url`` may carry a path prefix; credentials go in ``auth``, never in
    the URL, which appears in messages. The session is the caller's.
    """

    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        *,
        auth: PromQLAuth | None = None,
        max_points: int = MAX_POINTS_PER_SERIES,
        concurrency: int = CONCURRENCY,
    ) -> None:
        if max_points < 2:
            raise ValueError(f"max_points must be at least 2, got {max_points}")
        parts = urlsplit(base_url)
        if "@" in parts.netloc:
            # Not echoed: the part before the @ is a secret.
            raise ValueError("give the engine's credentials as auth=, not in the URL")
        self._base = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        self._session = session
        self._headers = _auth_headers(auth)
        self._max_points = max_points
        self._concurrency = concurrency

    async def instant(self, query: str, at: datetime, *, time_box: timedelta) -> tuple[Sample, ...]:
        params = [("query", query), ("time", _unix_ms(round(at.timestamp() * 1000)))]
        data = await _time_boxed(self._call("/api/v1/query", params, None), time_box)
        return _samples(data)

    async def range(
        self, query: str, start: datetime, end: datetime, step: timedelta, *, time_box: timedelta
    ) -> tuple[Series, ...]:
        step_ms = round(step.total_seconds() * 1000)
        start_ms, end_ms = round(start.timestamp() * 1000), round(end.timestamp() * 1000)
        if step_ms <= 0:
            raise ValueError(f"step must be positive, got {step}")
        if end_ms < start_ms:
            raise ValueError(f"end ({end}) is before start ({start})")
        start_ms -= start_ms % step_ms
        end_ms -= (end_ms - start_ms) % step_ms  # the last evaluation time, on the grid
        windows = self._windows(start_ms, end_ms, step_ms)
        if len(windows) > MAX_WINDOWS:
            raise ValueError(
                f"{len(windows)} requests of {self._max_points} points would be needed;"
                f" use a step longer than {step} for this range"
            )
        limit = asyncio.Semaphore(self._concurrency)
        calls = [
            self._call(
                "/api/v1/query_range",
                [
                    ("query", query),
                    ("start", _unix_ms(first)),
                    ("end", _unix_ms(last)),
                    ("step", _unix_ms(step_ms)),
                ],
                limit,
            )
            for first, last in windows
        ]
        answers = await _time_boxed(gather_all(calls), time_box)
        return _stitch([_matrix(data) for data in answers])

    def _windows(self, start_ms: int, end_ms: int, step_ms: int) -> list[tuple[int, int]]:
        """(first, last) evaluation times in milliseconds of each request of a range query."""
        span = (self._max_points - 1) * step_ms
        return [
            (first, min(end_ms, first + span))
            for first in range(start_ms, end_ms + 1, span + step_ms)
        ]

    async def _call(
        self, path: str, params: Sequence[tuple[str, str]], limit: asyncio.Semaphore | None
    ) -> Any:
        async with limit or contextlib.nullcontext():
            return await self._request(path, params)

    async def _request(self, path: str, params: Sequence[tuple[str, str]]) -> Any:
        url = self._base + path
        form = urlencode(params)
        if len(url) + 1 + len(form) <= MAX_GET_URL:
            status, body = await self._send("GET", f"{url}?{form}")
            if status != 414:  # URI Too Long: a proxy with a shorter limit than ours
                return _data(status, body)
        status, body = await self._send("POST", url, form)
        return _data(status, body)

    async def _send(self, method: str, url: str, form: str | None = None) -> tuple[int, bytes]:
        headers = self._headers if form is None else {**self._headers, **_FORM}
        try:
            async with self._session.request(method, url, data=form, headers=headers) as response:
                return response.status, await response.read()
        except aiohttp.ClientError as exc:
            reason = _client_error(exc)
            raise UnavailableError(f"cannot reach Prometheus at {self._base}: {reason}") from None


async def gather_all(calls: Sequence[Awaitable[T]]) -> list[T]:
    """Await all; the first failure cancels the others and is raised as itself."""

    async def run(call: Awaitable[T]) -> T:
        return await call

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(run(call)) for call in calls]
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


async def _time_boxed(call: Awaitable[T], time_box: timedelta) -> T:
    try:
        async with asyncio.timeout(time_box.total_seconds()):
            return await call
    except TimeoutError:
        raise QueryTimeoutError(time_box) from None


def _auth_headers(auth: PromQLAuth | None) -> dict[str, str]:
    if isinstance(auth, BearerToken):
        return {"Authorization": f"Bearer {auth.token}"}
    if isinstance(auth, BasicAuth):
        pair = f"{auth.username}:{auth.password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
    return {}


def _unix_ms(millis: int) -> str:
    seconds, rest = divmod(millis, 1000)
    return f"{seconds}.{rest:03d}" if rest else str(seconds)


def _client_error(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate not trusted: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        cause = exc.os_error
        if isinstance(cause, socket.gaierror):  # its errno is a resolver code, not an OS errno
            return f"cannot resolve the host: {cause.strerror}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS failed: {cause.reason or cause}"
        # asyncio's own text repeats the address; the errno's text says why.
        errno = cause.errno
        return os.strerror(errno) if errno else str(cause) or type(cause).__name__
    return str(exc) or type(exc).__name__


def _data(status: int, body: bytes) -> Any:
    """The ``data`` of a successful answer; otherwise the matching error."""
    try:
        payload = json.loads(body)
    except ValueError:
        raise UnavailableError(f"Prometheus answered HTTP {status} without JSON") from None
    if not isinstance(payload, dict):
        raise UnavailableError(f"Prometheus answered HTTP {status} with JSON that is no object")
    if payload.get("status") == "success" and status < 300:
        return payload.get("data")
    kind = str(payload.get("errorType") or "no error type")
    error = str(payload.get("error") or "no message")
    if 400 <= status < 500 and status not in _RETRYABLE_CLIENT_STATUSES:
        raise BadQueryError(status, kind, error)
    raise UnavailableError(f"Prometheus refused the query (HTTP {status}, {kind}): {error}")


def _labels(row: dict[str, Any]) -> dict[str, str]:
    metric = row.get("metric")
    return {str(k): str(v) for k, v in metric.items()} if isinstance(metric, dict) else {}


def _rows(data: Any, kind: str) -> list[dict[str, Any]]:
    if not isinstance(data, dict) or data.get("resultType") != kind:
        return []
    result = data.get("result")
    return [row for row in result if isinstance(row, dict)] if isinstance(result, list) else []


def _point(pair: Any) -> tuple[float, float] | None:
    if not isinstance(pair, list) or len(pair) != 2:
        return None
    try:
        return float(pair[0]), float(pair[1])  # "NaN", "+Inf" and "-Inf" parse as such
    except (TypeError, ValueError):
        return None


def _samples(data: Any) -> tuple[Sample, ...]:
    if isinstance(data, dict) and data.get("resultType") == "scalar":
        point = _point(data.get("result"))
        return () if point is None else (Sample({}, *point),)
    samples = []
    for row in _rows(data, "vector"):
        point = _point(row.get("value"))
        if point is not None:
            samples.append(Sample(_labels(row), *point))
    return tuple(samples)


def _matrix(data: Any) -> list[Series]:
    series = []
    for row in _rows(data, "matrix"):
        values = row.get("values")
        timestamps, found = _columns(values if isinstance(values, list) else [])
        series.append(Series(_labels(row), timestamps, found))
    return series


def _columns(pairs: list[Any]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Timestamps and values of ``[time, "value"]`` pairs; a malformed pair is left out.

    Weeks of history are hundreds of millions of pairs: the whole list goes
    through ``zip`` and ``float`` in C at once, and only an answer with a
    malformed pair takes the pair-by-pair way.
    """
    try:
        if all(isinstance(pair, list) and len(pair) == 2 for pair in pairs):
            times, values = zip(*pairs, strict=True) if pairs else ((), ())
            return tuple(map(float, times)), tuple(map(float, values))
    except (TypeError, ValueError):
        pass
    points = [p for p in map(_point, pairs) if p]
    return tuple(t for t, _ in points), tuple(v for _, v in points)


def _stitch(windows: Sequence[Sequence[Series]]) -> tuple[Series, ...]:
    """One series per label set, windows in order, each timestamp once."""
    labels: dict[LabelKey, dict[str, str]] = {}
    times: dict[LabelKey, list[float]] = {}
    values: dict[LabelKey, list[float]] = {}
    if len(windows) == 1:
        # One window (the usual answer): nothing to stitch, label sets are unique.
        unique = {tuple(sorted(series.labels.items())): series for series in windows[0]}
        if len(unique) == len(windows[0]):
            return tuple(windows[0])
    for window in windows:
        for series in window:
            key = tuple(sorted(series.labels.items()))
            if key not in labels:
                labels[key], times[key], values[key] = dict(series.labels), [], []
            have_times, have_values = times[key], values[key]
            for timestamp, value in zip(series.timestamps, series.values, strict=True):
                if not have_times or timestamp > have_times[-1]:
                    have_times.append(timestamp)
                    have_values.append(value)
    return tuple(Series(labels[k], tuple(times[k]), tuple(values[k])) for k in labels)

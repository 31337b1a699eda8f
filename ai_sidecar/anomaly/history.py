"""History for the anomaly models: a signal's range queries as a (series x points) matrix.

The same code reads years of training history and the few new points of a
scoring cycle, from any engine the PromQL client speaks to (Prometheus,
Thanos, Mimir, VictoriaMetrics):

- the range is cut into windows on the step grid, each small enough that no
  request passes ``MAX_POINTS_PER_SERIES`` points per series nor, with the
  number of series the expression has now (a ``count`` query, skipped when
  the range is too short to matter), ``samples_per_request`` samples in all
  (an answer of tens of millions of samples is gigabytes of JSON);
- windows run ``concurrency`` at a time, each in its own time box, and one the
  engine could not answer is retried with backoff (a refused query is not);
- every series is placed on the grid: a step without a sample is NaN, never
  filled in, so an imputed point is never scored nor learned;
- series are known by their kept labels (:func:`~ai_sidecar.anomaly.signals.series_key`);
  beyond ``max_series`` the most recently active ones are kept and the others
  counted as dropped;
- with ``owned``, only the series it accepts are kept (a replica's share,
  :mod:`~ai_sidecar.anomaly.shards`): the others are skipped as each answer
  arrives, so memory holds the share alone and they count as nothing.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from ai_sidecar.anomaly.signals import SeriesKey, series_key
from ai_sidecar.promql import (
    MAX_POINTS_PER_SERIES,
    PromQLClient,
    Series,
    UnavailableError,
)

# About 40 MB of JSON per answer: big enough that a request's overhead is noise.
SAMPLES_PER_REQUEST = 1_000_000
RETRY_BACKOFF = 0.5  # seconds before the first retry; doubles after each

T = TypeVar("T")

Progress = Callable[[int, int], None]
"""Called with (windows done, windows in all) as history arrives."""


@dataclass(frozen=True, slots=True)
class History:
    """A signal's points on its step grid.

    ``values[i, j]`` is series ``keys[i]`` at ``timestamps[j]`` (Unix seconds),
    NaN where the engine had no sample. ``dropped`` counts series beyond the
    budget or repeating a kept label set; ``requests`` the range queries sent.
    ``merged_by`` names the labels (outside the kept ones) that told apart
    series sharing a kept label set at the same time: keeping them too would
    keep those series. Series sharing one one after another (a label that
    changed once) are one row, not a repeat.
    """

    keys: tuple[SeriesKey, ...]
    timestamps: NDArray[np.float64]
    values: NDArray[np.float64]
    dropped: int = 0
    requests: int = 0
    merged_by: tuple[str, ...] = ()

    @property
    def end(self) -> float | None:
        """The last grid time, or None for an empty grid."""
        return float(self.timestamps[-1]) if self.timestamps.size else None


@dataclass(frozen=True, slots=True)
class FetchOptions:
    """How history is read: time box per request, retries, requests in flight, sizes."""

    time_box: timedelta = timedelta(seconds=30)
    retries: int = 3
    concurrency: int = 2
    samples_per_request: int = SAMPLES_PER_REQUEST
    max_points: int = MAX_POINTS_PER_SERIES


def step_grid(start: float, end: float, step: float) -> NDArray[np.float64]:
    """Multiples of ``step`` from ``start`` (rounded up) to ``end`` (rounded down)."""
    first = math.ceil(start / step) * step
    last = math.floor(end / step) * step
    if last < first:
        return np.empty(0, dtype=np.float64)
    count = round((last - first) / step) + 1
    return first + step * np.arange(count, dtype=np.float64)


def windows(points: int, per_window: int) -> list[tuple[int, int]]:
    """(first, last) grid indices, both included, of consecutive windows."""
    per_window = max(1, per_window)
    return [(i, min(points, i + per_window) - 1) for i in range(0, points, per_window)]


@dataclass(frozen=True, slots=True)
class Window:
    """One range request's points: ``values[i, j]`` is row ``i`` of the stream at ``timestamps[j]``.

    Rows are the series seen so far, in the order they first appeared (so a
    window has at least the rows of the one before); ``first`` is the grid
    index of its first point.
    """

    first: int
    timestamps: NDArray[np.float64]
    values: NDArray[np.float64]


class HistoryStream:
    """``query`` every ``step`` seconds over [start, end], one window at a time, oldest first.

    What :func:`fetch_history` collects into one matrix, for a reader that
    folds each window into its state and lets it go (the trainer): memory is
    a few windows, however long the history. Up to ``options.concurrency``
    requests are in flight and one answer waits ahead of the reader, so the
    next windows arrive while the reader works on this one.

    After the windows: ``keys`` (every series seen, a row each),
    :meth:`kept` (the series the budget keeps), ``dropped_repeats`` and
    ``merged_by`` (series repeating a kept label set), ``requests``.
    """

    def __init__(
        self,
        client: PromQLClient,
        query: str,
        *,
        start: float,
        end: float,
        step: float,
        keep_labels: Sequence[str] | None,
        max_series: int,
        options: FetchOptions | None = None,
        progress: Progress | None = None,
        owned: Callable[[SeriesKey], bool] | None = None,
    ) -> None:
        self._client = client
        self._owned = owned
        # owned() per series once, not once per window.
        self._verdicts: dict[SeriesKey, bool] = {}
        self._query = query
        self._step = step
        self._keep_labels = keep_labels
        self._max_series = max_series
        self._options = options or FetchOptions()
        self._progress = progress
        self.grid = step_grid(start, end, step)
        self.keys: list[SeriesKey] = []
        self.requests = 0
        self._row: dict[SeriesKey, int] = {}
        # Per row: index of the last window it had a point in (the budget keeps the freshest).
        self._latest: list[int] = []
        self._duplicates = 0
        self._windows = 0
        self._merged_by: set[str] = set()

    @property
    def merged_by(self) -> tuple[str, ...]:
        """Labels (outside the kept ones) that told apart series sharing a kept label set."""
        return tuple(sorted(self._merged_by))

    @property
    def dropped_repeats(self) -> int:
        """Series left out for repeating another's kept label set."""
        # A series that repeated a kept label set in one window did so in every window.
        return self._duplicates // max(1, self._windows)

    def kept(self, max_series: int) -> tuple[NDArray[np.intp], int]:
        """The rows the budget keeps, in key order, and how many series are dropped in all."""
        rows = sorted(range(len(self.keys)), key=lambda row: (-self._latest[row], self.keys[row]))
        kept = sorted(rows[:max_series], key=lambda row: self.keys[row])
        dropped = len(self.keys) - len(kept) + self.dropped_repeats
        return np.asarray(kept, dtype=np.intp), dropped

    async def windows(self) -> AsyncIterator[Window]:
        """The windows in time order (once: a stream is read a single time)."""
        grid, options = self.grid, self._options
        if grid.size == 0:
            return
        # A scoring cycle's few points: one request, small whatever the series count.
        counted = grid.size * self._max_series > options.samples_per_request
        per_window = options.max_points
        if counted:
            series_now = await _series_count(self._client, self._query, float(grid[-1]), options)
            per_window = min(options.max_points, max(2, options.samples_per_request // series_now))
        parts = windows(grid.size, per_window)
        self.requests = len(parts) + counted
        limit = asyncio.Semaphore(options.concurrency)

        async def fetch(first: int, last: int) -> tuple[Series, ...]:
            async with limit:
                return await _range(
                    self._client, self._query, grid[first], grid[last], self._step, options
                )

        ahead: deque[asyncio.Task[tuple[Series, ...]]] = deque()
        started = 0
        try:
            for index, (first, last) in enumerate(parts):
                while started < len(parts) and started <= index + options.concurrency:
                    ahead.append(asyncio.ensure_future(fetch(*parts[started])))
                    started += 1
                answer = await ahead.popleft()
                window = self._place_window(index, first, last, answer)
                self._windows += 1
                if self._progress is not None:
                    self._progress(index + 1, len(parts))
                yield window
        finally:
            for task in ahead:
                task.cancel()
            await asyncio.gather(*ahead, return_exceptions=True)

    def _place_window(
        self, index: int, first: int, last: int, answer: tuple[Series, ...]
    ) -> Window:
        groups: dict[SeriesKey, list[Series]] = {}
        for series in answer:
            key = series_key(series.labels, self._keep_labels)
            if self._owned is not None and not _verdict(self._verdicts, key, self._owned):
                continue
            groups.setdefault(key, []).append(series)
        placed: list[tuple[int, Series]] = []
        for key, group in groups.items():
            if len(group) > 1:
                group = _successive(group) or self._first_of(group)
            row = self._row.get(key)
            if row is None:
                row = self._row[key] = len(self.keys)
                self.keys.append(key)
                self._latest.append(-1)
            placed.extend((row, series) for series in group)
        values = np.full((len(self.keys), last - first + 1), np.nan)
        # In order: a later series of a succession overwrites its predecessor.
        for row, series in placed:
            if _place(values[row], series, float(self.grid[first]), self._step):
                self._latest[row] = index
        return Window(first, self.grid[first : last + 1], values)

    def _first_of(self, group: list[Series]) -> list[Series]:
        """Series side by side under one kept label set: the first stands for them."""
        self._duplicates += len(group) - 1
        for other in group[1:]:
            self._merged_by.update(_differing(group[0].labels, other.labels))
        return group[:1]


def _successive(group: list[Series]) -> list[Series] | None:
    """``group`` in time order if each series took over from the one before (it
    starts and ends later), else None: one series under labels that changed once,
    as a label added on upgrade (``scout_exporter``) or a target moved to another
    shard do. They are one series to the models; where they overlap (the engine's
    lookback repeats the earlier one's last sample for a few minutes after it
    ends), the later one's fresh points win."""
    spanned = sorted(((_span(series), series) for series in group), key=lambda pair: pair[0])
    if all(a[0] < b[0] and a[1] < b[1] for (a, _), (b, _) in pairwise(spanned)):
        return [series for _, series in spanned]
    return None


def _span(series: Series) -> tuple[float, float]:
    """The first and last time ``series`` has a finite point (infinite for none)."""
    times = [t for t, v in zip(series.timestamps, series.values, strict=True) if math.isfinite(v)]
    return (times[0], times[-1]) if times else (math.inf, math.inf)


async def fetch_history(
    client: PromQLClient,
    query: str,
    *,
    start: float,
    end: float,
    step: float,
    keep_labels: Sequence[str] | None,
    max_series: int,
    options: FetchOptions | None = None,
    progress: Progress | None = None,
    owned: Callable[[SeriesKey], bool] | None = None,
) -> History:
    """``query`` every ``step`` seconds over [start, end] on the step grid, as one matrix."""
    stream = HistoryStream(
        client,
        query,
        start=start,
        end=end,
        step=step,
        keep_labels=keep_labels,
        max_series=max_series,
        options=options,
        progress=progress,
        owned=owned,
    )
    grid = stream.grid
    # Rows grow as series appear; the capacity doubles so placing stays a slice copy.
    matrix = np.full((0, grid.size), np.nan)
    async for window in stream.windows():
        rows = window.values.shape[0]
        if rows > matrix.shape[0]:
            grown = np.full((max(rows, 2 * matrix.shape[0]), grid.size), np.nan)
            grown[: matrix.shape[0]] = matrix
            matrix = grown
        matrix[:rows, window.first : window.first + window.timestamps.size] = window.values
    kept, dropped = stream.kept(max_series)
    return History(
        keys=tuple(stream.keys[row] for row in kept),
        timestamps=grid,
        values=matrix[kept] if kept.size else np.empty((0, grid.size)),
        dropped=dropped,
        requests=stream.requests,
        merged_by=stream.merged_by,
    )


def _verdict(
    verdicts: dict[SeriesKey, bool], key: SeriesKey, owned: Callable[[SeriesKey], bool]
) -> bool:
    verdict = verdicts.get(key)
    if verdict is None:
        verdict = verdicts[key] = owned(key)
    return verdict


def _differing(first: Mapping[str, str], other: Mapping[str, str]) -> set[str]:
    """Label names whose values differ between two series (the metric name aside)."""
    names = (first.keys() | other.keys()) - {"__name__"}
    return {name for name in names if first.get(name) != other.get(name)}


def _place(row: NDArray[np.float64], series: Series, first: float, step: float) -> bool:
    """Write ``series`` into ``row`` on the grid; True if it had any finite point."""
    if not series.timestamps:
        return False
    times = np.asarray(series.timestamps, dtype=np.float64)
    values = np.asarray(series.values, dtype=np.float64)
    index = np.rint((times - first) / step).astype(np.intp)
    usable = (index >= 0) & (index < row.size) & np.isfinite(values)
    row[index[usable]] = values[usable]
    return bool(usable.any())


async def _series_count(client: PromQLClient, query: str, at: float, options: FetchOptions) -> int:
    """How many series ``query`` has at ``at`` (at least 1): sizes the windows."""
    samples = await _retried(
        lambda: client.instant(f"count(({query}))", _utc(at), time_box=options.time_box),
        options.retries,
    )
    found = max((s.value for s in samples if math.isfinite(s.value)), default=1.0)
    return max(1, int(found))


async def _range(
    client: PromQLClient, query: str, first: float, last: float, step: float, options: FetchOptions
) -> tuple[Series, ...]:
    return await _retried(
        lambda: client.range(
            query,
            _utc(first),
            _utc(last),
            timedelta(seconds=step),
            time_box=options.time_box,
        ),
        options.retries,
    )


async def _retried(call: Callable[[], Awaitable[T]], retries: int) -> T:
    """``call()``, again after a backoff while the engine cannot answer; a refusal is final."""
    for attempt in range(retries + 1):
        try:
            return await call()
        except UnavailableError:
            if attempt == retries:
                raise
            await asyncio.sleep(RETRY_BACKOFF * 2**attempt)
    raise AssertionError("unreachable")  # the loop returns or raises


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)

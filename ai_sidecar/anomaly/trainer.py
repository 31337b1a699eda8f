"""Training: a signal's history through the detector's batch fit, into the registry.

``train_signal`` is the one code path: ``scout-sidecar anomaly train`` runs it
in the CLI's process; the scoring loop runs it through
:class:`TrainingProcess`, a process of its own, so a fit over weeks of
history never holds the GIL the webhook or the worker need. Steps:

1. read ``history`` of the signal up to ``query_delay`` ago, a window at a
   time (:class:`~.history.HistoryStream`), keeping this replica's share of
   the series (``anomaly.shard``, :mod:`.shards`);
2. leave out each window's points the live loop flagged as anomalous (its
   own ``scout_anomaly_flag``, read back from Prometheus), so an incident is
   not learned as normal;
3. fit on all but the last ``HOLDOUT`` of it, a day of windows per fit call,
   then run the holdout through ``Detector.update`` as the live loop would:
   its residuals are the drift reference and its scores the quality
   statistics, and the state ends warm at the last point. Each window is let
   go once folded in: memory holds the state and a day of points, never the
   whole history;
4. keep the series the budget keeps, and store the state and metadata as a
   new version (:mod:`.registry`).

Errors: :class:`TrainingError` (a ``SidecarError``) when a training process
ends without a result; a signal's own failure (Prometheus unavailable, a
refused query) is reported in :class:`TrainingResult`, not raised.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from numpy.typing import NDArray

from ai_sidecar.anomaly.detector import (
    SPLIT_CHUNK_POINTS,
    Detector,
    DetectorParams,
    FitReport,
    ReplayWorkers,
)
from ai_sidecar.anomaly.drift import reference, residual_per_point
from ai_sidecar.anomaly.fit_workers import FitProcesses, fit_worker_count
from ai_sidecar.anomaly.history import (
    FetchOptions,
    HistoryStream,
    Progress,
    Window,
    fetch_history,
)
from ai_sidecar.anomaly.registry import ModelMeta, ModelRegistry
from ai_sidecar.anomaly.shards import Share
from ai_sidecar.anomaly.signals import SeriesKey
from ai_sidecar.config import AnomalyConfig, SignalConfig
from ai_sidecar.errors import SidecarError
from ai_sidecar.promql import BearerToken, HttpPromQLClient, PromQLClient
from ai_sidecar.worker_process import STOP_GRACE, die_with_parent

log = logging.getLogger("ai_sidecar.anomaly")

# The tail of the history replayed point by point after the fit: a day, at
# most a seventh of what there is.
HOLDOUT_SECONDS = 86_400.0
HOLDOUT_SHARE = 7
# History gathered before a fit call: the fit ships each worker's share of
# the state there and back once per this many points anyway.
FIT_CHUNK_POINTS = SPLIT_CHUNK_POINTS


def detector_params(signal: SignalConfig) -> DetectorParams:
    """The detector's parameters for ``signal``: the config's, the rest left to the detector."""
    return DetectorParams(
        step=signal.step.total_seconds(),
        seasonality=signal.seasonality,
        transform=signal.transform,
        min_deviation=signal.min_deviation,
        min_level=signal.min_level,
    )


def params_json(params: DetectorParams) -> dict[str, Any]:
    return {name: _plain(value) for name, value in asdict(params).items()}


def fetch_options(config: AnomalyConfig) -> FetchOptions:
    return FetchOptions(
        time_box=config.query_timeout, retries=config.retries, concurrency=config.concurrency
    )


def owned_by(share: Share) -> Callable[[SeriesKey], bool] | None:
    """The series filter for ``share``: None when it is every series."""
    return None if share.everything else share.owns


def training_end(config: AnomalyConfig, now: float) -> float:
    """The newest moment training asks for: points younger than ``query_delay`` may still move."""
    return now - config.query_delay.total_seconds()


async def train_signal(
    client: PromQLClient,
    signal: SignalConfig,
    registry: ModelRegistry,
    config: AnomalyConfig,
    *,
    now: float,
    progress: Progress | None = None,
    share: Share | None = None,
    options: FetchOptions | None = None,
    chunk_points: int = FIT_CHUNK_POINTS,
) -> ModelMeta | None:
    """Fit ``signal`` on its history and store it as a new version; None if it has no series.

    ``share``: the series to keep (default: the config's ``anomaly.shard``).
    The history streams through: each window is folded into the detector
    once ``chunk_points`` of them have gathered and is then let go, so memory
    holds the model and a chunk, not weeks of every series. The model is the
    same whatever ``chunk_points`` (a test holds it to that); ``options``
    default to the config's.
    """
    began = time.monotonic()
    end = training_end(config, now)
    step = signal.step.total_seconds()
    options = options or fetch_options(config)
    share = config.share if share is None else share
    stream = HistoryStream(
        client,
        signal.query,
        start=end - signal.history.total_seconds(),
        end=end,
        step=step,
        keep_labels=signal.keep_labels,
        max_series=signal.max_series,
        options=options,
        progress=progress,
        owned=owned_by(share),
    )
    fit = _StreamedFit(signal, stream.grid, chunk_points)
    excluded = 0
    with FitProcesses(fit_worker_count()) as workers:
        async for window in stream.windows():
            excluded += await exclude_flagged(client, signal, window, stream.keys, options)
            await asyncio.to_thread(fit.add, window, workers)
        await asyncio.to_thread(fit.flush, workers)
    if not stream.keys:
        log.warning("no series to train on", extra={"signal": signal.name})
        return None
    kept, dropped = stream.kept(signal.max_series)
    if stream.merged_by:
        # Series told apart only by labels outside keep_labels look like one series:
        # all but one are dropped. Say so once per training, with the way out.
        log.warning(
            "series dropped: they share their kept labels",
            extra={
                "signal": signal.name,
                "dropped": dropped,
                "hint": "add to keep_labels: " + ", ".join(stream.merged_by),
            },
        )
    fitted = fit.result(kept)
    meta = ModelMeta(
        signal=signal.name,
        version=0,
        trained_at=now,
        range_start=float(stream.grid[0]),
        range_end=float(stream.grid[-1]),
        step=step,
        series=int(kept.size),
        training_seconds=time.monotonic() - began,
        params=params_json(detector_params(signal)),
        quality={
            **fitted.quality,
            "points_excluded_flagged": float(excluded),
            "series_dropped": float(dropped),
        },
        keys=tuple(stream.keys[row] for row in kept),
        drift_edges=fitted.drift_edges,
        drift_reference=fitted.drift_reference,
        shares=tuple(sorted(share.indexes)),
        share_count=share.count,
    )
    stored = registry.save(meta, fitted.state)
    log.info(
        "trained",
        extra={
            "signal": signal.name,
            "version": stored.version,
            "series": stored.series,
            "seconds": round(stored.training_seconds, 3),
        },
    )
    return stored


@dataclass(frozen=True, slots=True)
class _Fitted:
    state: Mapping[str, NDArray[Any]]
    quality: dict[str, float]
    drift_edges: tuple[float, ...]
    drift_reference: tuple[float, ...]


class _StreamedFit:
    """The detector fed a history window by window: a batch fit, then the holdout replayed.

    Up to the last ``HOLDOUT`` of the grid, windows gather until they span
    ``chunk_points`` and go through ``Detector.fit`` together (a fit call per
    window would ship the state to the fit worker and back each time); the
    holdout goes through ``Detector.update`` as the live loop would: its
    residuals are the drift reference and its scores the quality statistics,
    and the state ends warm at the last point. Series that appear in a later
    window join as if they had been missing until then. The budget is applied
    at the end (:meth:`result`): which series it keeps depends on the last
    windows.
    """

    def __init__(self, signal: SignalConfig, grid: NDArray[np.float64], chunk_points: int) -> None:
        points = grid.size
        self._step = signal.step.total_seconds()
        self._holdout = min(int(HOLDOUT_SECONDS // self._step), points // HOLDOUT_SHARE)
        self._split = points - self._holdout
        self._points = points
        self._chunk_points = max(1, chunk_points)
        self._detector = Detector(detector_params(signal), 0)
        self._seen_until: float | None = None  # the last time of the windows so far
        self._pending: list[Window] = []
        # Per row: points in the history, and in its fitted part.
        self._finite = np.zeros(0, dtype=np.int64)
        self._fit_finite = np.zeros(0, dtype=np.int64)
        self._report: FitReport | None = None
        self._fit_counts = np.zeros(2)  # points excluded as anomalous, alarms (every series)
        self._fit_seconds = 0.0
        # Per holdout point, every row's residual and score (NaN where none):
        # the budget decides at the end which rows count.
        self._residuals: list[NDArray[np.float64]] = []
        self._scores: list[NDArray[np.float64]] = []
        self._flags = np.zeros(0, dtype=np.int64)

    def add(self, window: Window, workers: ReplayWorkers) -> None:
        rows = window.values.shape[0]
        if rows > self._detector.n_series:
            # Pending windows have fewer rows: they go in before the newcomers join.
            self.flush(workers)
            self._add_rows(rows - self._detector.n_series)
        finite = np.isfinite(window.values)
        self._finite[:rows] += np.count_nonzero(finite, axis=1)
        fitted = max(0, min(window.timestamps.size, self._split - window.first))
        self._fit_finite[:rows] += np.count_nonzero(finite[:, :fitted], axis=1)
        if fitted:
            self._pending.append(
                Window(window.first, window.timestamps[:fitted], window.values[:, :fitted])
            )
            if sum(part.timestamps.size for part in self._pending) >= self._chunk_points:
                self.flush(workers)
        if fitted < window.timestamps.size:
            self.flush(workers)
            for column in range(fitted, window.timestamps.size):
                self._update(float(window.timestamps[column]), window.values[:, column])
        self._seen_until = float(window.timestamps[-1])

    def flush(self, workers: ReplayWorkers) -> None:
        """Fit the windows gathered so far."""
        if not self._pending:
            return
        timestamps = np.concatenate([part.timestamps for part in self._pending])
        values = np.concatenate([part.values for part in self._pending], axis=1)
        self._pending.clear()
        report = self._detector.fit(timestamps, values, workers)
        self._fit_counts += (report.points_excluded, report.alarms)
        self._fit_seconds += report.seconds
        self._report = report

    def result(self, kept: NDArray[np.intp]) -> _Fitted:
        """The state and statistics of the rows ``kept`` (in that order), the others left out."""
        self._detector.reindex(kept, 0)
        training_residuals = _kept_finite(self._residuals, kept)
        holdout_scores = _kept_finite(self._scores, kept)
        edges, shares = reference(training_residuals)
        series_days = kept.size * self._holdout * self._step / 86_400.0
        flags = int(self._flags[kept[kept < self._flags.size]].sum())
        finite = int(self._finite[kept].sum())
        fit_finite = int(self._fit_finite[kept].sum())
        report = self._report
        quality = {
            "fit_points_used": float(fit_finite),
            "fit_points_missing": float(kept.size * self._split - fit_finite),
            "fit_points_excluded": float(self._fit_counts[0]),
            "fit_alarms": float(self._fit_counts[1]),
            "fit_residual_spread": report.residual_spread if report else math.nan,
            "fit_seconds": self._fit_seconds,
            "points": float(finite),
            "points_missing": float(kept.size * self._points - finite),
            "holdout_points": float(self._holdout),
            "holdout_mean_score": _mean(holdout_scores),
            "holdout_p99_score": _quantile(holdout_scores, 0.99),
            "holdout_flags_per_series_day": flags / series_days if series_days else 0.0,
            "residual_spread": _mad(training_residuals),
        }
        return _Fitted(self._detector.state(), quality, edges, shares)

    def _add_rows(self, added: int) -> None:
        # Every earlier window is in the detector (``add`` flushed them).
        if self._seen_until is None:
            self._detector.reindex(np.arange(self._detector.n_series), added)
        else:
            self._detector.add_missing_until(added, self._seen_until)
        self._finite = np.concatenate([self._finite, np.zeros(added, dtype=np.int64)])
        self._fit_finite = np.concatenate([self._fit_finite, np.zeros(added, dtype=np.int64)])
        self._flags = np.concatenate([self._flags, np.zeros(added, dtype=np.int64)])

    def _update(self, timestamp: float, values: NDArray[np.float64]) -> None:
        result = self._detector.update(timestamp, values)
        self._residuals.append(
            residual_per_point(values, result.expected, result.upper, result.lower)
        )
        self._scores.append(np.where(result.warming, np.nan, result.score))
        self._flags += result.flag.astype(np.int64)


def _kept_finite(columns: list[NDArray[np.float64]], kept: NDArray[np.intp]) -> NDArray[np.float64]:
    """The finite values of the ``kept`` rows of every column, in order, as one array.

    Each column is let go once copied (``columns`` ends empty): the holdout's
    columns are a day of every series, as big as the result.
    """
    sizes = [
        int(np.count_nonzero(np.isfinite(column[kept[kept < column.size]]))) for column in columns
    ]
    joined = np.empty(sum(sizes))
    at = 0
    columns.reverse()
    for size in sizes:
        column = columns.pop()
        chosen = column[kept[kept < column.size]]
        joined[at : at + size] = chosen[np.isfinite(chosen)]
        at += size
    return joined


async def exclude_flagged(
    client: PromQLClient,
    signal: SignalConfig,
    window: Window,
    keys: Sequence[SeriesKey],
    options: FetchOptions,
) -> int:
    """Blank the window's points the live loop flagged (its exported flag, read back); how many."""
    step = signal.step.total_seconds()
    # The step's own window, (t - step, t]: a millisecond short of the step, so
    # a flag on the grid is not counted again at the next point by Prometheus 2,
    # whose range selectors include their left end (VictoriaMetrics' do not).
    # Only the flagged points come back (``>= 1``): the flags of every series
    # would be as big an answer as the history itself.
    span = f"{round(step * 1000) - 1}ms"
    query = f'max_over_time(scout_anomaly_flag{{signal="{signal.name}"}}[{span}]) >= 1'
    try:
        flags = await fetch_history(
            client,
            query,
            start=float(window.timestamps[0]),
            end=float(window.timestamps[-1]),
            step=step,
            keep_labels=signal.keep_labels,
            max_series=max(1, len(keys)),
            options=options,
            # Only the flags of the series trained: those of series beyond the
            # budget, or of another replica's share, would crowd them out.
            owned=frozenset(keys).__contains__,
        )
    except Exception as exc:  # the flags are a refinement: training goes on without them
        log.warning("cannot read past flags", extra={"signal": signal.name, "error": str(exc)})
        return 0
    # The window's rows are the stream's series so far, in order of appearance;
    # the flags come on the window's own grid.
    row_of: dict[SeriesKey, int] = {key: row for row, key in enumerate(keys)}
    excluded = 0
    for key, flagged in zip(flags.keys, flags.values, strict=True):
        row = row_of.get(key)
        if row is not None:
            hit = flagged >= 1
            excluded += int(np.count_nonzero(hit & np.isfinite(window.values[row])))
            window.values[row, hit] = np.nan
    return excluded


# -- the training process ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrainingJob:
    """Everything a training process needs, picklable: where, what, with which config."""

    prometheus_url: str
    data_dir: Path
    config: AnomalyConfig
    signals: tuple[str, ...]
    now: float
    bearer_token: str | None = field(default=None, repr=False)
    share: Share | None = None


@dataclass(frozen=True, slots=True)
class TrainingResult:
    """Per signal: the stored version, None when it had no series, or the error's text."""

    trained: Mapping[str, ModelMeta | None]
    failed: Mapping[str, str]


async def train(
    job: TrainingJob, progress: Callable[[str], Progress | None] | None = None
) -> TrainingResult:
    """Train ``job.signals`` one after another; a failing signal does not stop the others."""
    registry = ModelRegistry(job.data_dir, job.config.keep_versions)
    trained: dict[str, ModelMeta | None] = {}
    failed: dict[str, str] = {}
    auth = None if job.bearer_token is None else BearerToken(job.bearer_token)
    async with aiohttp.ClientSession() as session:
        client = HttpPromQLClient(job.prometheus_url, session, auth=auth)
        for name in job.signals:
            signal = job.config.signal(name)
            try:
                trained[name] = await train_signal(
                    client,
                    signal,
                    registry,
                    job.config,
                    now=job.now,
                    progress=None if progress is None else progress(name),
                    share=job.share,
                )
            except Exception as exc:  # one signal's failure is reported, not fatal
                log.error("training failed", extra={"signal": name, "error": str(exc)})
                failed[name] = str(exc) or type(exc).__name__
    return TrainingResult(trained, failed)


def run_training(job: TrainingJob) -> TrainingResult:
    """The training process's entry point."""
    return asyncio.run(train(job))


class TrainingError(SidecarError):
    """A training process ended without a result (killed, or crashed)."""


class TrainingProcess:
    """Runs a :class:`TrainingJob` in a spawned process of its own, one at a time.

    A process per job rather than a pool: :meth:`close` (shutdown, or the
    caller giving up) ends a fit at once instead of waiting for it, and the
    process dies with its parent, so a kill -9 of the scoring process never
    leaves a fit running.
    """

    def __init__(self) -> None:
        self._process: multiprocessing.process.BaseProcess | None = None

    async def run(self, job: TrainingJob) -> TrainingResult:
        # spawn, not fork: the caller has threads and an event loop.
        context = multiprocessing.get_context("spawn")
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=_train_in_child, args=(job, sender), name="scout-sidecar-training"
        )
        process.start()
        sender.close()
        self._process = process
        try:
            result = await asyncio.to_thread(_receive, receiver)
            await asyncio.to_thread(process.join, STOP_GRACE)
            return result
        finally:
            await asyncio.to_thread(self.close)
            receiver.close()

    def close(self) -> None:
        """End the running fit, if any."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.is_alive():
            process.terminate()
            process.join(STOP_GRACE)
        if process.is_alive():
            process.kill()
            process.join()


def _train_in_child(job: TrainingJob, results: multiprocessing.connection.Connection) -> None:
    die_with_parent()
    results.send(run_training(job))
    results.close()


def _receive(receiver: multiprocessing.connection.Connection) -> TrainingResult:
    try:
        result: TrainingResult = receiver.recv()
    except (EOFError, OSError):
        raise TrainingError("the training process ended without a result") from None
    return result


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value


def _mean(values: NDArray[np.float64]) -> float:
    return float(values.mean()) if values.size else math.nan


def _quantile(values: NDArray[np.float64], q: float) -> float:
    return float(np.quantile(values, q)) if values.size else math.nan


def _mad(values: NDArray[np.float64]) -> float:
    if not values.size:
        return math.nan
    return float(np.median(np.abs(values - np.median(values))))

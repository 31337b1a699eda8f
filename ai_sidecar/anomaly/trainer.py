"""Training: a signal's history through the detector's batch fit, into the registry.

``train_signal`` is the one code path: ``scout-sidecar anomaly train`` runs it
in the CLI's process; the scoring loop runs it through
:class:`TrainingProcess`, a process of its own, so a fit over weeks of
history never holds the GIL the webhook or the worker need. Steps:

1. fetch ``history`` of the signal up to ``query_delay`` ago (:mod:`.history`),
   keeping this replica's share of the series (``anomaly.shard``, :mod:`.shards`);
2. leave out the points the live loop flagged as anomalous (its own
   ``scout_anomaly_flag``, read back from Prometheus), so an incident is not
   learned as normal;
3. fit on all but the last ``HOLDOUT`` of it, then run the holdout through
   ``Detector.update`` as the live loop would: its residuals are the drift
   reference and its scores the quality statistics, and the state ends warm
   at the last point;
4. store the state and metadata as a new version (:mod:`.registry`).

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
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from numpy.typing import NDArray

from ai_sidecar.anomaly.detector import Detector, DetectorParams
from ai_sidecar.anomaly.drift import reference, residuals
from ai_sidecar.anomaly.fit_workers import FitProcesses, fit_worker_count
from ai_sidecar.anomaly.history import FetchOptions, History, Progress, fetch_history
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
) -> ModelMeta | None:
    """Fit ``signal`` on its history and store it as a new version; None if it has no series.

    ``share``: the series to keep (default: the config's ``anomaly.shard``).
    """
    began = time.monotonic()
    end = training_end(config, now)
    step = signal.step.total_seconds()
    options = fetch_options(config)
    history = await fetch_history(
        client,
        signal.query,
        start=end - signal.history.total_seconds(),
        end=end,
        step=step,
        keep_labels=signal.keep_labels,
        max_series=signal.max_series,
        options=options,
        progress=progress,
        owned=owned_by(config.share if share is None else share),
    )
    if not history.keys:
        log.warning("no series to train on", extra={"signal": signal.name})
        return None
    if history.merged_by:
        # Series told apart only by labels outside keep_labels look like one series:
        # all but one are dropped. Say so once per training, with the way out.
        log.warning(
            "series dropped: they share their kept labels",
            extra={
                "signal": signal.name,
                "dropped": history.dropped,
                "hint": "add to keep_labels: " + ", ".join(history.merged_by),
            },
        )
    excluded = await exclude_flagged(client, signal, history, options)
    share = config.share if share is None else share
    fitted = await asyncio.to_thread(_fit, signal, history)
    meta = ModelMeta(
        signal=signal.name,
        version=0,
        trained_at=now,
        range_start=float(history.timestamps[0]),
        range_end=float(history.timestamps[-1]),
        step=step,
        series=len(history.keys),
        training_seconds=time.monotonic() - began,
        params=params_json(detector_params(signal)),
        quality={
            **fitted.quality,
            "points_excluded_flagged": float(excluded),
            "series_dropped": float(history.dropped),
        },
        keys=history.keys,
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


def _fit(signal: SignalConfig, history: History) -> _Fitted:
    step = signal.step.total_seconds()
    points = history.timestamps.size
    holdout = min(int(HOLDOUT_SECONDS // step), points // HOLDOUT_SHARE)
    split = points - holdout
    detector = Detector(detector_params(signal), len(history.keys))
    # The series split between this process and a worker on the second core
    # (the result is the single-process one, bit for bit).
    with FitProcesses(fit_worker_count()) as workers:
        report = detector.fit(history.timestamps[:split], history.values[:, :split], workers)
    found: list[NDArray[np.float64]] = []
    scores: list[NDArray[np.float64]] = []
    flags = 0
    for column in range(split, points):
        values = history.values[:, column]
        result = detector.update(float(history.timestamps[column]), values)
        found.append(residuals(values, result.expected, result.upper, result.lower))
        scores.append(result.score[np.isfinite(result.score) & ~result.warming])
        flags += int(np.count_nonzero(result.flag))
    training_residuals = np.concatenate(found) if found else np.empty(0)
    holdout_scores = np.concatenate(scores) if scores else np.empty(0)
    edges, shares = reference(training_residuals)
    series_days = len(history.keys) * holdout * step / 86_400.0
    quality = {
        **_numbers(report),
        "points": float(np.count_nonzero(np.isfinite(history.values))),
        "points_missing": float(np.count_nonzero(np.isnan(history.values))),
        "holdout_points": float(holdout),
        "holdout_mean_score": _mean(holdout_scores),
        "holdout_p99_score": _quantile(holdout_scores, 0.99),
        "holdout_flags_per_series_day": flags / series_days if series_days else 0.0,
        "residual_spread": _mad(training_residuals),
    }
    return _Fitted(detector.state(), quality, edges, shares)


async def exclude_flagged(
    client: PromQLClient, signal: SignalConfig, history: History, options: FetchOptions
) -> int:
    """Blank the points the live loop flagged (its exported flag, read back); how many."""
    step = history.timestamps[1] - history.timestamps[0] if history.timestamps.size > 1 else 60.0
    # The step's own window, (t - step, t]: a millisecond short of the step, so
    # a flag on the grid is not counted again at the next point by Prometheus 2,
    # whose range selectors include their left end (VictoriaMetrics' do not).
    window = f"{round(step * 1000) - 1}ms"
    query = f'max_over_time(scout_anomaly_flag{{signal="{signal.name}"}}[{window}])'
    try:
        flags = await fetch_history(
            client,
            query,
            start=float(history.timestamps[0]),
            end=float(history.timestamps[-1]),
            step=float(step),
            keep_labels=signal.keep_labels,
            max_series=len(history.keys),
            options=options,
            # Only the flags of the series trained: those of series beyond the
            # budget, or of another replica's share, would crowd them out.
            owned=frozenset(history.keys).__contains__,
        )
    except Exception as exc:  # the flags are a refinement: training goes on without them
        log.warning("cannot read past flags", extra={"signal": signal.name, "error": str(exc)})
        return 0
    row_of: dict[SeriesKey, int] = {key: row for row, key in enumerate(history.keys)}
    excluded = 0
    for key, flagged in zip(flags.keys, flags.values, strict=True):
        row = row_of.get(key)
        if row is not None:
            hit = flagged >= 1
            excluded += int(np.count_nonzero(hit & np.isfinite(history.values[row])))
            history.values[row, hit] = np.nan
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


def _numbers(report: object) -> dict[str, float]:
    """The numeric fields of the detector's fit report, for the quality statistics."""
    fields: Mapping[str, Any]
    if is_dataclass(report) and not isinstance(report, type):
        fields = asdict(report)
    elif isinstance(report, Mapping):
        fields = report
    else:
        return {}
    return {
        f"fit_{name}": float(value)
        for name, value in fields.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


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

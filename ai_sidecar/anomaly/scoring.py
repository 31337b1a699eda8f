"""The live anomaly loop: new points in, scores and bands out on ``/metrics``.

Every ``score_interval`` the loop, for each signal:

1. uses the registry's current version: a new one (trained, or rolled back to)
   replaces the detector, from the last checkpoint of that version if there
   is one, so a restart fetches only the points it missed;
2. fetches the points since the last one it scored, on the signal's grid
   (:func:`~ai_sidecar.anomaly.history.fetch_history`, the training code path);
3. maps series to detector rows by their kept labels: a new series gets a new
   (warming) row while the budget ``max_series`` allows, else it is counted as
   dropped; a series with no point for ``series_grace`` loses its row;
4. runs each new grid time through ``Detector.update`` and keeps the latest
   result of every row, and the residuals' drift against training;
5. builds the metric families below, once, and hands them to the collector:
   a scrape only reads the last list built, it never computes.

With ``anomaly.shard`` the loop models this replica's share of the series
alone (:mod:`.shards`): other series are skipped as they are fetched, rows of
a model or checkpoint from another share are dropped as it loads, and a model
trained for a share that lacks some of this one's series is retrained at
once. Shares claimed through PostgreSQL (``index: auto``) change while the
loop runs (:meth:`use_share`): rows of shares given up leave at once, and a
change wakes the loop.

Retraining is scheduled here and run elsewhere (a :class:`Trainer`; the
sidecar's runs it in a process of its own): a signal without a model or whose
model no longer matches its config first, then daily at ``retrain.at`` (or
every ``retrain.every``), and early when drift passes ``drift_threshold``.

Exposition (the contract docs/anomaly.md and the dashboards rely on)::

    # HELP scout_anomaly_score Anomaly score of the series' latest point, 0..1 (calibrated).
    # TYPE scout_anomaly_score gauge
    scout_anomaly_score{signal="wan_throughput",job="snmp",instance="fw-1",direction="in"} 0.97
    scout_anomaly_expected{...} 8.1e+07
    scout_anomaly_upper{...} 1.2e+08
    scout_anomaly_lower{...} 5.0e+07
    scout_anomaly_observed{...} 2.3e+08
    scout_anomaly_flag{...} 1
    scout_anomaly_warming{...} 0
    scout_anomaly_model_version{signal="wan_throughput"} 3
    scout_anomaly_model_age_seconds{signal="wan_throughput"} 5400
    scout_anomaly_training_duration_seconds{signal="wan_throughput"} 12.5
    scout_anomaly_series_tracked{signal="wan_throughput"} 42
    scout_anomaly_series_dropped_total{signal="wan_throughput"} 0
    scout_anomaly_missing_points_total{signal="wan_throughput"} 17
    scout_anomaly_scoring_lag_seconds{signal="wan_throughput"} 41
    scout_anomaly_drift{signal="wan_throughput"} 0.04
    scout_anomaly_shares_held 1
    scout_anomaly_shares 1
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

import numpy as np
from numpy.typing import NDArray
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from ai_sidecar.anomaly.detector import Detector
from ai_sidecar.anomaly.drift import DriftMonitor, residuals
from ai_sidecar.anomaly.history import fetch_history
from ai_sidecar.anomaly.hosts import HostModels
from ai_sidecar.anomaly.registry import Checkpoint, ModelMeta, ModelRegistry, RegistryError
from ai_sidecar.anomaly.shards import Share
from ai_sidecar.anomaly.signals import SeriesKey
from ai_sidecar.anomaly.trainer import (
    TrainingResult,
    detector_params,
    fetch_options,
    owned_by,
    params_json,
)
from ai_sidecar.config import AnomalyConfig, SignalConfig
from ai_sidecar.promql import PromQLClient, PromQLError

log = logging.getLogger("ai_sidecar.anomaly")

# The online state is written to disk this often (and on shutdown).
CHECKPOINT_INTERVAL = 900.0
# A signal whose training failed, or found no series, is tried again after this.
TRAINING_RETRY = 300.0
# A series' numbers stay on /metrics this many steps after its last point,
# as Prometheus' own lookback keeps a sample.
STALE_STEPS = 5
# Drift is measured over this many of the latest cycles' residuals.
DRIFT_CYCLES = 60

PER_SERIES: tuple[tuple[str, str], ...] = (
    ("score", "Anomaly score of the series' latest point, 0..1 (calibrated)."),
    ("expected", "Expected value of the series' latest point, in the signal's units."),
    ("upper", "Upper end of the normal band, in the signal's units."),
    ("lower", "Lower end of the normal band, in the signal's units."),
    ("observed", "The series' latest point as the detector scored it, in the signal's units."),
    ("flag", "1 after a point the detector raised an alarm on (after the rest period), else 0."),
    ("warming", "1 while the series has too little history for its score to be trusted."),
)
# The per-series numbers, as _Latest names them.
FIELDS = tuple(name for name, _ in PER_SERIES)


class Trainer(Protocol):
    """Trains signals and stores them in the registry (where the scoring loop finds them)."""

    async def train(self, signals: Sequence[str], now: float, share: Share) -> TrainingResult:
        """Fit ``share`` of each of ``signals`` on its history up to ``now``; failures are
        in the result."""
        ...


@dataclass(slots=True)
class _Latest:
    """Per row: the numbers of its latest scored point.

    ``score`` is the detector's calibrated score before the rest period damps
    it (``Scores.sustained``): it stays high for as long as an event lasts, as
    a ``for: 5m`` rule and the incidents' evidence need. The rest period shows
    in ``flag`` alone: one alarm per event. ``flag`` is 1 when any point scored
    in the row's latest cycle raised an alarm, so a cycle that scores several
    points (after a slow query, a restart) does not lose it.
    """

    score: NDArray[np.float64]
    expected: NDArray[np.float64]
    upper: NDArray[np.float64]
    lower: NDArray[np.float64]
    observed: NDArray[np.float64]
    flag: NDArray[np.bool_]
    warming: NDArray[np.bool_]

    @classmethod
    def empty(cls, rows: int) -> _Latest:
        def nan() -> NDArray[np.float64]:
            return np.full(rows, np.nan)

        return cls(nan(), nan(), nan(), nan(), nan(), np.zeros(rows, bool), np.ones(rows, bool))

    def take(self, keep: NDArray[np.intp], added: int) -> _Latest:
        fresh = _Latest.empty(added)
        return _Latest(
            *(np.concatenate([getattr(self, name)[keep], getattr(fresh, name)]) for name in FIELDS)
        )


@dataclass(slots=True)
class SignalState:
    """One signal in the loop: its model, detector rows, latest numbers and counters."""

    signal: SignalConfig
    meta: ModelMeta
    detector: Detector
    keys: list[SeriesKey]
    last_timestamp: float
    last_seen: NDArray[np.float64]
    latest: _Latest
    drift: DriftMonitor
    refused: set[SeriesKey] = field(default_factory=set)
    dropped_total: int = 0
    missing_total: int = 0
    lag: float = math.nan
    checkpointed_at: float = 0.0

    @property
    def name(self) -> str:
        return self.signal.name

    def latest_residuals(self) -> tuple[NDArray[np.intp], NDArray[np.float64], NDArray[np.bool_]]:
        """Rows scored at the latest grid time, their standardised residuals, their flags.

        Warming rows are left out: their bands are not to be trusted yet.
        """
        with np.errstate(invalid="ignore"):
            rows = np.flatnonzero(self.last_seen >= self.last_timestamp)
        latest = self.latest
        half_band = (latest.upper[rows] - latest.lower[rows]) / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            residual = (latest.observed[rows] - latest.expected[rows]) / half_band
        usable = np.isfinite(residual) & (half_band > 0) & ~latest.warming[rows]
        return rows[usable], residual[usable], latest.flag[rows][usable]

    def reindex(self, keep: NDArray[np.intp], added: Sequence[SeriesKey]) -> None:
        self.detector.reindex(keep, len(added))
        self.keys = [self.keys[row] for row in keep] + list(added)
        self.last_seen = np.concatenate([self.last_seen[keep], np.full(len(added), np.nan)])
        self.latest = self.latest.take(keep, len(added))


class AnomalyScorer:
    """The scoring loop's state and one cycle of it; :meth:`run` repeats it."""

    def __init__(
        self,
        config: AnomalyConfig,
        client: PromQLClient,
        registry: ModelRegistry,
        trainer: Trainer,
        *,
        clock: Callable[[], float] = time.time,
        share: Share | None = None,
    ) -> None:
        self._config = config
        self._client = client
        self._registry = registry
        self._trainer = trainer
        self._clock = clock
        self._states: dict[str, SignalState] = {}
        self._retry_after: dict[str, float] = {}
        self._training: asyncio.Task[TrainingResult] | None = None
        self._training_names: tuple[str, ...] = ()
        self._share = config.share if share is None else share
        # The share use_share was last given: the next cycle takes it, so no
        # row changes under a cycle's fetch or scoring.
        self._next_share = self._share
        self._share_changed = asyncio.Event()
        # The share of the families last published: their rows stay on /metrics
        # until the next cycle publishes.
        self._published_share = self._share
        self._publish: Callable[[list[Metric]], None] | None = None
        self._hosts = HostModels(config.hosts) if config.hosts.enabled else None
        self._hosts_restored = False
        # A shutdown does not wait for a cancelled cycle's worker thread: the
        # final save waits for it here, or it could write the hosts half read
        # back (or not yet) over the file they come from.
        self._hosts_lock = threading.Lock()
        self._hosts_saved_at = clock()
        self.families: list[Metric] = build_families([], 0.0)

    @property
    def states(self) -> dict[str, SignalState]:
        return self._states

    @property
    def share(self) -> Share:
        return self._share

    @property
    def shares_in_use(self) -> frozenset[int]:
        """Shares whose rows may be on /metrics: the last published cycle's and the
        running one's (a share given up leaves only once the next cycle publishes)."""
        return self._published_share.indexes | self._share.indexes

    def use_share(self, share: Share) -> None:
        """Model ``share`` from the next cycle on, which :meth:`run` starts at once: rows of
        series it lacks leave, models trained for less than it are retrained."""
        if share != self._next_share:
            self._next_share = share
            self._share_changed.set()
            if not share.indexes and self._publish is not None:
                # Given up (the store does not answer): another replica may claim
                # the shares within seconds, so their rows leave /metrics now, not
                # when a cycle ends; a cycle running now publishes nothing.
                self._publish([*build_families([], self._clock()), *share_families(share)])
                self._published_share = share

    def _take_share(self) -> None:
        share = self._next_share
        if share == self._share:
            return
        log.info("anomaly share changed", extra={"from": str(self._share), "to": str(share)})
        self._share = share
        for state in self._states.values():
            self._drop_foreign(state)
        if self._hosts is not None:
            with self._hosts_lock:
                self._drop_foreign_hosts(self._hosts)

    async def run(self, publish: Callable[[list[Metric]], None]) -> None:
        """Cycle every ``score_interval`` until cancelled, publishing each cycle's families."""
        interval = self._config.score_interval.total_seconds()
        self._publish = publish
        try:
            while True:
                began = time.monotonic()
                await self.cycle()
                # Not when shares were given up under it: its rows include theirs.
                if self._share.indexes <= self._next_share.indexes:
                    publish(self.families)
                    self._published_share = self._share
                # A changed share is scored at once, not a whole interval later.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, interval - (time.monotonic() - began))):
                        await self._share_changed.wait()
                self._share_changed.clear()
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop a training run's wait and write every signal's checkpoint."""
        if self._training is not None:
            self._training.cancel()
        for state in self._states.values():
            await asyncio.to_thread(self._checkpoint, state)
        await asyncio.to_thread(self._save_hosts)

    async def wait_for_training(self) -> TrainingResult | None:
        """The running training's result, once it is done (None if none runs)."""
        if self._training is None:
            return None
        return await asyncio.shield(self._training)

    async def cycle(self) -> None:
        """Train what needs it (in the background), then score every signal's new points."""
        now = self._clock()
        self._collect_training(now)
        self._take_share()
        if not self._share.indexes:  # claiming through PostgreSQL, nothing claimed yet
            self._states.clear()
            self.families = [*build_families([], now), *share_families(self._share)]
            return
        self._schedule_training(now)
        for signal in self._config.signals:
            try:
                await self._score_signal(signal, now)
            except (PromQLError, RegistryError) as exc:
                log.warning("scoring skipped", extra={"signal": signal.name, "error": str(exc)})
        families = build_families(list(self._states.values()), now, self._stale_after())
        if self._hosts is not None:
            await asyncio.to_thread(self._observe_hosts, self._hosts, now)
            families += self._hosts.families()
        self.families = [*families, *share_families(self._share)]

    # -- per-host multivariate models -----------------------------------------

    def _observe_hosts(self, hosts: HostModels, now: float) -> None:
        with self._hosts_lock:
            self._observe_hosts_locked(hosts, now)

    def _observe_hosts_locked(self, hosts: HostModels, now: float) -> None:
        if not self._hosts_restored:
            self._hosts_restored = True
            try:
                saved = self._registry.load_host_samples()
            except RegistryError as exc:
                log.warning("host samples unreadable, starting afresh", extra={"error": str(exc)})
                saved = None
            if saved is not None:
                hosts.restore(saved, now)
                self._drop_foreign_hosts(hosts)
        hosts.observe(list(self._states.values()), now)
        if now - self._hosts_saved_at >= CHECKPOINT_INTERVAL:
            self._write_hosts()
            self._hosts_saved_at = now

    def _drop_foreign_hosts(self, hosts: HostModels) -> None:
        """Hosts of other shares leave: their scores and models are another replica's,
        and they would take places of this share's hosts in ``max_hosts``."""
        if not self._share.everything:
            label = self._config.hosts.host_label
            hosts.keep(lambda host: self._share.owns(((label, host),)))

    def _save_hosts(self) -> None:
        with self._hosts_lock:
            self._write_hosts()

    def _write_hosts(self) -> None:
        if self._hosts is None or not self._hosts_restored:
            return  # nothing learned yet, and the file on disk may hold what was
        try:
            self._registry.save_host_samples(self._hosts.state())
        except OSError as exc:
            log.warning("host samples not saved", extra={"error": str(exc)})

    def _stale_after(self) -> float:
        return STALE_STEPS * max(
            self._config.score_interval.total_seconds(),
            *(s.step.total_seconds() for s in self._config.signals),
        )

    # -- training -------------------------------------------------------------

    def _collect_training(self, now: float) -> None:
        task = self._training
        if task is None or not task.done():
            return
        self._training = None
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("training run failed", extra={"error": str(error)})
            for name in self._training_names:
                self._retry_after[name] = now + TRAINING_RETRY
            return
        result = task.result()
        for name, meta in result.trained.items():
            if meta is None:
                self._retry_after[name] = now + TRAINING_RETRY
        for name in result.failed:
            self._retry_after[name] = now + TRAINING_RETRY

    def _schedule_training(self, now: float) -> None:
        if self._training is not None:
            return
        due = [s.name for s in self._config.signals if self._training_due(s, now)]
        if due:
            log.info("training", extra={"signals": ",".join(due)})
            self._training_names = tuple(due)
            self._training = asyncio.create_task(self._trainer.train(due, now, self._share))

    def _training_due(self, signal: SignalConfig, now: float) -> bool:
        if now < self._retry_after.get(signal.name, 0.0):
            return False
        meta = self._registry.current(signal.name)
        if meta is None or meta.params != params_json(detector_params(signal)):
            return True
        if not self._share.within(meta.shares, meta.share_count):
            return True  # trained for another split, without some of this share's series
        retrain = self._config.retrain
        # A rolled-back version counts from the rollback: else, trained before the
        # last refit time, it would be replaced at the very next cycle.
        since = max(meta.trained_at, self._registry.rolled_back_at(signal.name) or 0.0)
        if _scheduled(retrain.every, retrain.daily_at, since, now):
            return True
        state = self._states.get(signal.name)
        return (
            state is not None
            and state.drift.value > retrain.drift_threshold
            and now - since >= retrain.min_interval.total_seconds()
        )

    # -- scoring --------------------------------------------------------------

    async def _score_signal(self, signal: SignalConfig, now: float) -> None:
        state = await self._current_state(signal)
        if state is None:
            return
        step = signal.step.total_seconds()
        end = now - self._config.query_delay.total_seconds()
        start = max(state.last_timestamp + step, end - signal.history.total_seconds())
        if end >= start:
            found = await fetch_history(
                self._client,
                signal.query,
                start=start,
                end=end,
                step=step,
                keep_labels=signal.keep_labels,
                max_series=signal.max_series * 2 + len(state.refused),
                options=fetch_options(self._config),
                owned=owned_by(self._share),
            )
            if found.timestamps.size:
                await asyncio.to_thread(_apply, state, found.keys, found.timestamps, found.values)
                state.lag = now - state.last_timestamp
        self._drop_vanished(state, now)
        if now - state.checkpointed_at >= CHECKPOINT_INTERVAL:
            await asyncio.to_thread(self._checkpoint, state)
            state.checkpointed_at = now

    async def _current_state(self, signal: SignalConfig) -> SignalState | None:
        version = self._registry.current_version(signal.name)
        state = self._states.get(signal.name)
        if version is None:
            self._states.pop(signal.name, None)
            return None
        if state is not None and state.meta.version == version:
            return state
        if state is not None and state.meta.version != version:
            log.info(
                "model changed",
                extra={"signal": signal.name, "from": state.meta.version, "to": version},
            )
        state = await asyncio.to_thread(self._load, signal)
        self._states[signal.name] = state
        return state

    def _load(self, signal: SignalConfig) -> SignalState:
        meta, model_state = self._registry.load(signal.name)
        checkpoint = self._registry.load_checkpoint(signal.name)
        params = detector_params(signal)
        if checkpoint is not None:
            keys, last, seen, arrays = (
                list(checkpoint.keys),
                checkpoint.last_timestamp,
                checkpoint.last_seen,
                checkpoint.state,
            )
        else:
            keys, last, arrays = list(meta.keys), meta.range_end, model_state
            seen = np.full(len(keys), meta.range_end)
        detector = Detector.from_state(params, arrays)
        drift = DriftMonitor(meta.drift_edges, meta.drift_reference, DRIFT_CYCLES)
        state = SignalState(
            signal=signal,
            meta=meta,
            detector=detector,
            keys=keys,
            last_timestamp=last,
            last_seen=seen,
            latest=_Latest.empty(len(keys)),
            drift=drift,
            checkpointed_at=self._clock(),
        )
        self._drop_foreign(state)
        return state

    def _drop_foreign(self, state: SignalState) -> None:
        """Drop the rows of series of other shares: another replica scores them now,
        and a series must never be on two replicas' /metrics."""
        if not self._share.foreign(state.keys):
            return
        owned = np.flatnonzero([self._share.owns(key) for key in state.keys])
        log.info(
            "series of other shares dropped",
            extra={"signal": state.signal.name, "series": len(state.keys) - owned.size},
        )
        state.reindex(owned, [])

    def _drop_vanished(self, state: SignalState, now: float) -> None:
        grace = self._config.series_grace.total_seconds()
        with np.errstate(invalid="ignore"):
            alive = ~(state.last_seen < now - grace)
        if not alive.all():
            gone = [state.keys[row] for row in np.flatnonzero(~alive)]
            log.info("series dropped", extra={"signal": state.signal.name, "series": len(gone)})
            state.reindex(np.flatnonzero(alive), [])

    def _checkpoint(self, state: SignalState) -> None:
        self._registry.save_checkpoint(
            state.signal.name,
            Checkpoint(
                version=state.meta.version,
                keys=tuple(state.keys),
                last_timestamp=state.last_timestamp,
                last_seen=state.last_seen,
                state=state.detector.state(),
            ),
        )


def _apply(
    state: SignalState,
    keys: Sequence[SeriesKey],
    timestamps: NDArray[np.float64],
    values: NDArray[np.float64],
) -> None:
    """Score new grid columns: new series get rows within the budget, then update per time."""
    row_of = {key: row for row, key in enumerate(state.keys)}
    new = [key for key in keys if key not in row_of and key not in state.refused]
    room = max(0, state.signal.max_series - len(state.keys))
    if len(new) > room:
        refused = new[room:]
        state.refused.update(refused)
        state.dropped_total += len(refused)
        new = new[:room]
    if new:
        state.reindex(np.arange(len(state.keys), dtype=np.intp), new)
        row_of = {key: row for row, key in enumerate(state.keys)}
    matrix = np.full((len(state.keys), timestamps.size), np.nan)
    for source, key in enumerate(keys):
        row = row_of.get(key)
        if row is not None:
            matrix[row] = values[source]
    latest = state.latest
    scored = np.zeros(len(state.keys), bool)
    alarmed = np.zeros(len(state.keys), bool)
    for column, at in enumerate(timestamps):
        points = matrix[:, column]
        result = state.detector.update(float(at), points)
        present = np.isfinite(points)
        state.missing_total += int(points.size - np.count_nonzero(present))
        state.drift.add(residuals(points, result.expected, result.upper, result.lower))
        state.last_seen[present] = at
        scored |= present
        alarmed |= result.flag & present
        latest.score[present] = result.sustained[present]
        latest.observed[present] = points[present]
        for name in ("expected", "upper", "lower", "warming"):
            getattr(latest, name)[present] = getattr(result, name)[present]
    latest.flag[scored] = alarmed[scored]
    state.last_timestamp = float(timestamps[-1])


def build_families(
    states: Sequence[SignalState], now: float, stale_after: float = math.inf
) -> list[Metric]:
    """Every ``scout_anomaly_*`` family, from the loop's latest numbers (see the docstring)."""
    series = {name: GaugeMetricFamily(f"scout_anomaly_{name}", text) for name, text in PER_SERIES}
    signal_label = ["signal"]
    version = GaugeMetricFamily(
        "scout_anomaly_model_version", "Version of the model in use.", labels=signal_label
    )
    age = GaugeMetricFamily(
        "scout_anomaly_model_age_seconds",
        "Seconds since the model in use was trained.",
        labels=signal_label,
    )
    duration = GaugeMetricFamily(
        "scout_anomaly_training_duration_seconds",
        "How long training the model in use took, fetching history included.",
        labels=signal_label,
    )
    tracked = GaugeMetricFamily(
        "scout_anomaly_series_tracked", "Series the detector has rows for.", labels=signal_label
    )
    dropped = CounterMetricFamily(
        "scout_anomaly_series_dropped",
        "Series left unscored because the signal's max_series budget was full.",
        labels=signal_label,
    )
    missing = CounterMetricFamily(
        "scout_anomaly_missing_points",
        "Grid points a tracked series had no sample for (never scored, never learned).",
        labels=signal_label,
    )
    lag = GaugeMetricFamily(
        "scout_anomaly_scoring_lag_seconds",
        "Seconds between the newest point scored and the end of the cycle that scored it.",
        labels=signal_label,
    )
    drift = GaugeMetricFamily(
        "scout_anomaly_drift",
        "PSI of the recent residuals against the training residuals (above 0.25: refit).",
        labels=signal_label,
    )
    for state in states:
        name = state.signal.name
        version.add_metric([name], state.meta.version)
        age.add_metric([name], max(0.0, now - state.meta.trained_at))
        duration.add_metric([name], state.meta.training_seconds)
        tracked.add_metric([name], len(state.keys))
        dropped.add_metric([name], state.dropped_total)
        missing.add_metric([name], state.missing_total)
        lag.add_metric([name], state.lag)
        drift.add_metric([name], state.drift.value)
        latest = state.latest
        with np.errstate(invalid="ignore"):
            shown = np.flatnonzero(state.last_seen >= state.last_timestamp - stale_after)
        columns = {name: getattr(latest, name).astype(np.float64) for name in FIELDS}
        for row in shown:
            labels = {"signal": name, **dict(state.keys[row])}
            for metric, values in columns.items():
                series[metric].add_sample(f"scout_anomaly_{metric}", labels, float(values[row]))
    return [*series.values(), version, age, duration, tracked, dropped, missing, lag, drift]


def share_families(share: Share) -> list[Metric]:
    """This replica's shares, so that sum(held) below the count shows a share nobody scores."""
    held = GaugeMetricFamily(
        "scout_anomaly_shares_held",
        "Shares of the series this replica trains and scores (anomaly.shard).",
    )
    held.add_metric([], len(share.indexes))
    count = GaugeMetricFamily(
        "scout_anomaly_shares", "Shares the series are split into (anomaly.shard.count)."
    )
    count.add_metric([], share.count)
    return [held, count]


def _scheduled(
    every: timedelta | None, daily_at: tuple[int, int] | None, trained_at: float, now: float
) -> bool:
    """Whether a scheduled refit is due for a model trained at ``trained_at``."""
    if every is not None:
        return now - trained_at >= every.total_seconds()
    return daily_at is not None and trained_at < _last_daily(now, *daily_at)


def _last_daily(now: float, hour: int, minute: int) -> float:
    """The latest moment at or before ``now`` that is ``hour:minute`` UTC."""
    moment = datetime.fromtimestamp(now, UTC).replace(
        hour=hour, minute=minute, second=0, microsecond=0
    )
    if moment.timestamp() > now:
        moment -= timedelta(days=1)
    return moment.timestamp()

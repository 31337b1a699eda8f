"""The streaming anomaly detector: one code path for the live scoring loop and the CLI.

Every series of a signal is one column of numpy state arrays, so a scoring
cycle over thousands of series is a fixed number of vector operations, O(1)
per new point per series, and ``scout-sidecar anomaly score`` runs the very
same :meth:`Detector.update` on one series, row by row, so the score of row i
depends only on rows 0..i.

How a point becomes a score (the channels are described in docs/anomaly.md):

1. Base channels, each turned into a *surprise* (``-log10`` of a tail
   probability) before they meet, so none dominates by its units:
   - the expected value from three competing models, each an additive
     level + seasonal profile (none, slot-of-day, slot-of-week; robust
     Holt-Winters with Huber-clipped updates). ``seasonality="auto"`` picks,
     per series, the model whose recent absolute error is clearly lowest, so
     daily or weekly structure is used only where the data shows it;
   - a step/spike channel on first differences;
   - a spread channel (a burst of larger-than-usual residuals: variance change);
   - a stuck channel (a run of identical values where repeats are rare).
   Every spread has a floor (half the series' quantum, a sliver of its range)
   so flat or quantised series don't explode.
2. The strongest surprise, Bonferroni-corrected for the number of channels, is
   the raw score. The **anomaly likelihood** compares a short moving average of
   it with the long-run distribution of that average (a Gaussian tail) and
   log-scales the tail to 0..1: a series that is always a bit noisy adapts,
   a sustained change accumulates evidence. A point's contribution is capped
   and discounted by the largest surprise of the recent past, so benign
   spikes that recur stop alarming; the window's surprise never exceeds the
   sum of its points'.
3. **Range novelty**: a value beyond everything seen so far, by more than a
   margin (which widens after each novelty), scores 1.
4. **Rest period**: after a score above ``rest_trigger`` the detector stays
   quiet (scores damped) for ``rest_period`` seconds unless the event gets
   clearly stronger, so one event is one alarm.
5. A sustained shift of the residuals re-baselines the level instead of
   alarming for days.

Missing points (NaN) are never scored and never learned.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from ai_sidecar.anomaly.params import DEFAULT_REST_STEPS, DetectorParams, default_rest_period

__all__ = [
    "DEFAULT_REST_STEPS",
    "Detector",
    "DetectorParams",
    "FitReport",
    "ReplayWorkers",
    "Scores",
    "default_rest_period",
    "replay_part",
    "score_series",
]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
StateArrays = dict[str, FloatArray]

DAY = 86_400.0
WEEK = 7 * DAY
MODEL_NONE, MODEL_DAILY, MODEL_WEEKLY = 0, 1, 2
N_MODELS = 3
# Channels the raw score takes the strongest of (level, difference, spread, stuck).
N_CHANNELS = 4
# Mean absolute deviation to standard deviation, for Gaussian noise.
MAD_TO_SIGMA = math.sqrt(math.pi / 2)
# |z| of Gaussian noise: its mean and standard deviation (the spread channel's null).
ABS_Z_MEAN = math.sqrt(2 / math.pi)
ABS_Z_STD = math.sqrt(1 - 2 / math.pi)
LN10 = math.log(10.0)
LOG10_2 = math.log10(2.0)
STATE_VERSION = 1
# Decades taken off the spread channel: its 16-point average is autocorrelated.
SPREAD_DISCOUNT = math.log10(16.0)
# Raw-score level (decades) above which the point channel fits its tail.
EXCEED_LEVEL = 1.5
# Pseudo-points of the tail's prior (the channels' own calibration).
PRIOR_POINTS = 200.0
# A residual within this many sigmas has a two-sided surprise under half a
# decade (0.4985 at 1), less than the raw score subtracts (log10(N_CHANNELS),
# 0.602): whatever its exact value, the raw score it gives is 0, so the tail
# is evaluated only beyond it. The same bound holds for the spread channel,
# whose upper tail at 1 (0.80 decades) is under its discount (1.20).
QUIET_Z = 1.0
# A fit is split over worker processes only with at least this many series
# per part: below it a process's start and the state's round trip cost more
# than the replay they save.
MIN_SERIES_PER_PART = 500
# Points of history per round trip to the workers: bounds the copies in flight
# (a part's values and state) whatever the length of the history.
SPLIT_CHUNK_POINTS = 1440


@dataclass(frozen=True, slots=True)
class Scores:
    """One cycle's output; every array has shape ``(n_series,)``."""

    # 0..1, calibrated, after the rest period; NaN where the point was missing.
    score: FloatArray
    # The band, in the signal's units (after undoing the transform).
    expected: FloatArray
    upper: FloatArray
    lower: FloatArray
    # An alarm: score at or above ``alarm_threshold``, not quieted by the rest period.
    flag: BoolArray
    # Not enough history yet to trust the score (the score is then 0).
    warming: BoolArray
    # The score before the rest period damped it: stays high for as long as an
    # event lasts (what a "for: 5m" alert rule wants); NaN where missing.
    sustained: FloatArray


@dataclass(frozen=True, slots=True)
class FitReport:
    """Quality statistics of a batch :meth:`Detector.fit`."""

    points_used: int
    points_missing: int
    # Points scored as anomalous and kept out of the seasonal profiles.
    points_excluded: int
    alarms: int
    # Median over series of the residual's standard deviation (transformed units).
    residual_spread: float
    # How many series ended on each model: none, daily, weekly.
    series_per_model: tuple[int, int, int]
    seconds: float


class ReplayWorkers(Protocol):
    """Processes beside the caller that each replay one slice of a fit's series.

    The series of a signal are independent, so a fit splits exactly: the
    caller replays the first slice itself while each worker replays another
    through :func:`replay_part`, and the joined state is the one a single
    replay would have left, bit for bit.
    """

    @property
    def count(self) -> int:
        """How many workers there are (0: the caller replays everything)."""
        ...

    def submit(
        self,
        params: DetectorParams,
        state: StateArrays,
        timestamps: FloatArray,
        values: FloatArray,
    ) -> Future[tuple[StateArrays, NDArray[np.int64]]]:
        """Run :func:`replay_part` on these arguments in a worker."""
        ...


@dataclass(frozen=True, slots=True)
class _SlotLayout:
    """Slot counts of the daily and weekly profiles (0 disables a profile)."""

    daily: int
    weekly: int

    @classmethod
    def for_step(cls, step: float) -> _SlotLayout:
        # Slots of at least 15 minutes (day) and 30 minutes (week), and never
        # shorter than a step: a profile needs a few points per slot, and
        # neighbouring slots are interpolated, so coarse slots cost little.
        daily = round(DAY / max(step, 900.0))
        weekly = round(WEEK / max(step, 1800.0))
        return cls(daily=daily if daily >= 8 else 0, weekly=weekly if weekly >= 14 else 0)


def _state_shapes(n: int, layout: _SlotLayout) -> dict[str, tuple[tuple[int, ...], float]]:
    """Every state array: shape and initial value. The last axis is always the series."""
    return {
        "count": ((n,), 0.0),  # finite points seen
        "first_t": ((n,), math.nan),
        "last_x": ((n,), math.nan),  # last finite value (transformed)
        "low": ((n,), math.inf),  # range seen so far
        "high": ((n,), -math.inf),
        # The range of values held for two points in a row: one glitch (a
        # counter misread, a sensor's 1e6) does not widen it, a step does.
        "held_low": ((n,), math.inf),
        "held_high": ((n,), -math.inf),
        "quantum": ((n,), math.inf),  # smallest non-zero |difference| seen
        "level": ((N_MODELS, n), 0.0),
        "spread": ((N_MODELS, n), 0.0),  # EWMA of |residual|
        "error": ((N_MODELS, n), 0.0),  # model-selection error (EWMA of |residual|)
        "shift": ((N_MODELS, n), 0.0),  # EWMA of the standardised residual
        "model": ((n,), 0.0),  # chosen model index
        "season_day": ((layout.daily, n), 0.0),
        "visits_day": ((layout.daily, n), 0.0),
        "season_week": ((layout.weekly, n), 0.0),
        "visits_week": ((layout.weekly, n), 0.0),
        "diff_mean": ((n,), 0.0),
        "diff_spread": ((n,), 0.0),
        "repeat_rate": ((n,), 0.0),  # how often a value repeats the previous one
        "run": ((n,), 0.0),  # current run of repeats
        "abs_z": ((n,), ABS_Z_MEAN),  # short EWMA of |z|: the spread channel
        "abs_z_mean": ((n,), ABS_Z_MEAN),  # its long-run mean and variance
        "abs_z_var": ((n,), ABS_Z_STD**2 / 31.0),
        "short": ((n,), 0.0),  # short EWMA of the raw score
        "recent_peak": ((n,), 0.0),  # largest recent raw score, fading
        "novelty_factor": ((n,), 1.0),  # widens the novelty margin after each novelty
        "last_raw": ((n,), 0.0),  # the previous finite point's raw score
        "exceed_rate": ((n,), 10.0**-EXCEED_LEVEL),  # how often raw >= EXCEED_LEVEL
        "exceed_mean": ((n,), 1.0 / LN10),  # mean excess above it
        "long_count": ((n,), 0.0),
        "long_mean": ((n,), 0.0),
        "long_var": ((n,), 0.0),
        "rest_until": ((n,), -math.inf),
        "peak": ((n,), 0.0),
        "last_z": ((n,), math.nan),  # last signed standardised residual (drift)
    }


# The state a missing point leaves as it was. A step computes every series
# (a gap as the value 0) and puts these columns back for the missing ones
# afterwards: a few small copies instead of masking each of the ~30 updates.
# The profiles are only ever written where a point is learned, the model is
# chosen for missing points too, and ``last_z`` records the gap as NaN.
_KEPT_OVER_GAPS = tuple(
    name
    for name in _state_shapes(0, _SlotLayout(daily=0, weekly=0))
    if name not in {"model", "last_z", "season_day", "visits_day", "season_week", "visits_week"}
)


# State arrays added since STATE_VERSION 1 was first saved, and the saved
# array each starts from when a model saved without it is loaded.
_DERIVED_WHEN_MISSING = {"held_low": "low", "held_high": "high"}


def _log10_erfc(x: FloatArray) -> FloatArray:
    """log10(erfc(x)) for x >= 0, accurate in the far tail (no underflow).

    Abramowitz and Stegun 7.1.26: erfc(x) = t * poly(t) * exp(-x^2), relative
    error below 1e-6 over the whole range we use.
    """
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    result: FloatArray = np.log10(poly) - x * x / LN10
    return result


def _clamp(values: FloatArray, limit: FloatArray) -> FloatArray:
    """``values`` limited to [-limit, limit] (np.clip costs more per call)."""
    result: FloatArray = np.minimum(np.maximum(values, -limit), limit)
    return result


def _where(mask: BoolArray, when_true: Any, otherwise: Any) -> Any:
    """``np.where``, without its pass over the arrays when ``mask`` is all one way.

    In a long fit most masks (first point, warming, gaps, novelty, level
    shift) are the same for every series at nearly every step, and a test of
    the mask costs a fraction of a ``where``. Returns the branch itself, not a
    copy, when it already has the result's shape.
    """
    if isinstance(otherwise, np.ndarray) and otherwise.shape == mask.shape and not mask.any():
        return otherwise
    if isinstance(when_true, np.ndarray) and when_true.shape == mask.shape and mask.all():
        return when_true
    return np.where(mask, when_true, otherwise)


def _pick(per_model: FloatArray, model: NDArray[np.intp]) -> FloatArray:
    """Each series' entry of a (model, series) array, for its chosen model."""
    first = int(model[0]) if model.size else 0
    result: FloatArray
    if model.size and bool((model == first).all()):
        result = per_model[first]
    else:
        # Two selections cost far less than np.choose.
        result = np.where(model == MODEL_WEEKLY, per_model[MODEL_WEEKLY], per_model[MODEL_NONE])
        result = np.where(model == MODEL_DAILY, per_model[MODEL_DAILY], result)
    return result


def _two_sided_surprise(z: FloatArray) -> FloatArray:
    """-log10 of the two-sided Gaussian tail probability of |z|."""
    return -_log10_erfc(np.abs(z) * (1 / math.sqrt(2)))


def _upper_tail_surprise(z: FloatArray) -> FloatArray:
    """-log10 of the one-sided upper Gaussian tail of z (0 or so for z <= 0)."""
    log_erfc = _log10_erfc(np.abs(z) * (1 / math.sqrt(2)))
    upper = LOG10_2 - log_erfc
    # Below the mean the tail is 1 - erfc/2: a surprise between 0 and log10(2).
    lower = -np.log10(1.0 - 0.5 * np.power(10.0, log_erfc))
    return np.where(z > 0, upper, lower)


def _upper_tail_above_mean(z: FloatArray) -> FloatArray:
    """``_upper_tail_surprise`` for z > 0 only, without the other side's costly calls."""
    result: FloatArray = LOG10_2 - _log10_erfc(np.abs(z) * (1 / math.sqrt(2)))
    return result


def _spread_surprise(z: FloatArray) -> FloatArray:
    """The spread channel's surprise for z > 0: the upper tail less ``SPREAD_DISCOUNT``, or 0."""
    return np.maximum(_upper_tail_above_mean(z) - SPREAD_DISCOUNT, 0.0)


def _surprise_where(
    wanted: BoolArray, z: FloatArray, surprise: Callable[[FloatArray], FloatArray]
) -> FloatArray:
    """``surprise(z)`` where ``wanted``, 0 elsewhere: the tail only for the series it can matter to.

    Each element is computed by the same calls as over the whole array, so
    the values kept are the same, bit for bit.
    """
    result = np.zeros(z.shape)
    index = np.flatnonzero(wanted)
    if index.size:
        result[index] = surprise(z[index])
    return result


class Detector:
    """Streaming detector for ``n_series`` series that share timestamps (one signal)."""

    __slots__ = (
        "_layout",
        "_level_rates",
        "_params",
        "_quiet_below_mean",
        "_rest_shrink",
        "_state",
    )

    def __init__(self, params: DetectorParams, n_series: int) -> None:
        if n_series < 0:
            raise ValueError("n_series must be 0 or more")
        self._params = params
        self._layout = _SlotLayout.for_step(params.step)
        self._rest_shrink = 2.0 ** (-params.rest_margin / params.half_score_decades)
        # Below its long-run mean the likelihood's surprise is at most log10(2):
        # whether such a score can reach the rest or the alarm level.
        self._quiet_below_mean = 1.0 - 2.0 ** (-LOG10_2 / params.half_score_decades) < min(
            params.rest_trigger, params.alarm_threshold
        )
        # A seasonal model's level moves slower (a quarter of a day): a level
        # that chases the daily curve leaves the profile learning its own lag.
        seasonal_points = max(params.level_points, 0.25 * DAY / params.step)
        self._level_rates = np.array(
            [1.0 / params.level_points, 1.0 / seasonal_points, 1.0 / seasonal_points]
        )
        self._state: dict[str, FloatArray] = {
            name: np.full(shape, value)
            for name, (shape, value) in _state_shapes(n_series, self._layout).items()
        }

    @property
    def params(self) -> DetectorParams:
        return self._params

    @property
    def n_series(self) -> int:
        return int(self._state["count"].shape[0])

    # -- the online path ---------------------------------------------------

    def update(self, timestamp: float, values: NDArray[np.float64]) -> Scores:
        """One point per series (NaN = missing, never scored, never learned). O(1) per series."""
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (self.n_series,):
            raise ValueError(f"expected {self.n_series} values, got shape {values.shape}")
        scores = self._step(float(timestamp), values)
        assert scores is not None
        return scores

    def fit(
        self,
        timestamps: NDArray[np.float64],
        values: NDArray[np.float64],
        workers: ReplayWorkers | None = None,
    ) -> FitReport:
        """Batch training from history: ``values`` has shape ``(n_series, n_points)``, NaN = gap.

        Equivalent to :meth:`update` on every column in turn (the detector is
        left exactly as that replay would leave it, so ``fit`` then ``update``
        equals a pure online replay): the seasonal profiles are learned from
        the points that were not anomalous at the time, the online state ends
        warm. Call it again with the next chunk of history to continue.
        With ``workers`` the series are split between this process and them
        (same result, bit for bit).
        """
        started = time.perf_counter()
        timestamps = np.asarray(timestamps, dtype=np.float64)
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape != (self.n_series, timestamps.shape[0]):
            raise ValueError(
                f"values must have shape ({self.n_series}, {timestamps.shape[0]}), "
                f"got {values.shape}"
            )
        parts = (
            1 if workers is None else min(workers.count + 1, self.n_series // MIN_SERIES_PER_PART)
        )
        if parts > 1 and workers is not None:
            counters = self._replay_split(timestamps, values, workers, parts)
        else:
            counters = self._replay(timestamps, values)
        finite = int(np.isfinite(values).sum())
        spread = MAD_TO_SIGMA * np.take_along_axis(
            self._state["spread"], self._state["model"].astype(np.intp)[None, :], axis=0
        )
        models = np.bincount(self._state["model"].astype(np.intp), minlength=N_MODELS)
        return FitReport(
            points_used=finite,
            points_missing=int(values.size - finite),
            points_excluded=int(counters[0].sum()),
            alarms=int(counters[1].sum()),
            residual_spread=float(np.median(spread)) if spread.size else 0.0,
            series_per_model=(int(models[0]), int(models[1]), int(models[2])),
            seconds=time.perf_counter() - started,
        )

    def _replay(
        self, timestamps: NDArray[np.float64], values: NDArray[np.float64]
    ) -> NDArray[np.int64]:
        """``update`` over every column without output; per series: points excluded, alarms."""
        counters = np.zeros((2, self.n_series), dtype=np.int64)
        # Column by column; a contiguous copy of each column keeps the loop cheap.
        columns = np.ascontiguousarray(values.T)
        for index in range(timestamps.shape[0]):
            self._step(float(timestamps[index]), columns[index], counters=counters)
        return counters

    def _replay_split(
        self,
        timestamps: FloatArray,
        values: FloatArray,
        workers: ReplayWorkers,
        parts: int,
    ) -> NDArray[np.int64]:
        """``_replay`` with the series in ``parts`` slices, all but the first replayed by workers.

        The history goes over in chunks of time, each slice's state making the
        round trip, so the copies in flight stay small however long the
        history is. ``self`` keeps its state until every slice has finished.
        """
        n = self.n_series
        edges = [n * part // parts for part in range(parts + 1)]
        slices = list(itertools.pairwise(edges))
        states = [
            {
                name: np.ascontiguousarray(array[..., low:high])
                for name, array in self._state.items()
            }
            for low, high in slices
        ]
        own = Detector(self._params, 0)
        own._state = states[0]
        counters = np.zeros((2, n), dtype=np.int64)
        for start in range(0, timestamps.shape[0], SPLIT_CHUNK_POINTS):
            columns = slice(start, start + SPLIT_CHUNK_POINTS)
            pending = [
                workers.submit(
                    self._params, states[part], timestamps[columns], values[low:high, columns]
                )
                for part, (low, high) in enumerate(slices[1:], start=1)
            ]
            low, high = slices[0]
            counters[:, low:high] += own._replay(timestamps[columns], values[low:high, columns])
            for part, future in enumerate(pending, start=1):
                states[part], part_counters = future.result()
                low, high = slices[part]
                counters[:, low:high] += part_counters
        states[0] = own._state
        self._state = {
            name: np.concatenate([state[name] for state in states], axis=-1) for name in self._state
        }
        return counters

    def _step(
        self,
        t: float,
        raw: FloatArray,
        counters: NDArray[np.int64] | None = None,
    ) -> Scores | None:
        """Advance every series by one point at time ``t``; ``counters`` means "fit: no output"."""
        p = self._params
        s = self._state
        # A copy: the state keeps x (last_x), and the caller may reuse its array.
        x = np.log1p(np.maximum(raw, 0.0)) if p.transform == "log1p" else raw.copy()
        finite = np.isfinite(x)
        all_finite = bool(finite.all())
        xv = x if all_finite else np.where(finite, x, 0.0)
        gaps = None if all_finite else np.flatnonzero(~finite)
        kept = {} if gaps is None else {name: s[name][..., gaps] for name in _KEPT_OVER_GAPS}

        count = s["count"]
        started = count > 0
        count_next = count + 1.0

        # -- seasonal geometry (shared by every series: one timestamp) -------
        level = s["level"]
        expected = level.copy()
        day_slots = self._slots(t, DAY, self._layout.daily)
        week_slots = self._slots(t, WEEK, self._layout.weekly)
        if day_slots is not None:
            k0, k1, w = day_slots
            expected[MODEL_DAILY] += (1 - w) * s["season_day"][k0] + w * s["season_day"][k1]
        if week_slots is not None:
            k0, k1, w = week_slots
            expected[MODEL_WEEKLY] += (1 - w) * s["season_week"][k0] + w * s["season_week"][k1]

        # -- spread floors: flat and quantised series must not explode -------
        low, high = s["low"], s["high"]
        seen_range = _where(started, high - low, 0.0)
        held_low, held_high = s["held_low"], s["held_high"]
        held_range = _where(held_high >= held_low, held_high - held_low, 0.0)
        quantum = s["quantum"]
        # The floor follows the held range, not the seen one: a single glitch
        # a million times the signal would otherwise lift every spread's floor
        # above the series' real spikes for as long as the range is kept.
        floor = np.maximum(
            _where(np.isfinite(quantum), 0.5 * quantum, 0.0),
            1e-3 * held_range,
        )
        floor = np.maximum(floor, 1e-9 * np.abs(_where(started, level[MODEL_NONE], xv)) + 1e-12)

        residual = xv - expected
        sigma = np.maximum(MAD_TO_SIGMA * s["spread"], floor)
        z = residual / sigma

        model = s["model"].astype(np.intp)
        z_chosen = _pick(z, model)
        # (Within QUIET_Z the surprise is counted as 0: its raw score is 0
        # either way, and it is far from the novelty test's 2 decades.)
        level_surprise = _surprise_where(np.abs(z_chosen) > QUIET_Z, z_chosen, _two_sided_surprise)

        # -- differences: steps and spikes -----------------------------------
        last_x = s["last_x"]
        has_last = np.isfinite(last_x)
        diff = _where(has_last, xv - last_x, 0.0)
        diff_dev = diff - s["diff_mean"]
        diff_sigma = np.maximum(MAD_TO_SIGMA * s["diff_spread"], floor)
        diff_z = _where(has_last, diff_dev / diff_sigma, 0.0)
        # The way back from an outlier is no second event: the outlier's own
        # surprise already counted it.
        diff_surprise = _surprise_where(
            (np.abs(diff_z) > QUIET_Z) & (s["last_raw"] < 1.5), diff_z, _two_sided_surprise
        )

        # -- spread: a burst of large residuals ------------------------------
        # Residuals are autocorrelated in real data (a model misfits for a
        # stretch), so the short average of |z| is compared with its own
        # long-run distribution, not with the independent-noise null.
        abs_z = s["abs_z"] + (1.0 / 16.0) * (np.minimum(np.abs(z_chosen), 6.0) - s["abs_z"])
        abs_z_std = np.maximum(np.sqrt(s["abs_z_var"]), 0.05)
        spread_z = (abs_z - s["abs_z_mean"]) / abs_z_std
        # Successive values of a 16-point average are far from independent, so
        # the short window would count one excursion many times: discount it
        # by log10(16) decades. (Within QUIET_Z the discount leaves 0.)
        spread_surprise = _surprise_where(spread_z > QUIET_Z, spread_z, _spread_surprise)

        # -- stuck: identical values where repeats are rare ------------------
        repeat = has_last & (diff == 0.0)
        run = np.where(repeat, s["run"] + 1.0, 0.0)
        raw_surprise = np.maximum(level_surprise, diff_surprise)
        if run.any():
            # Without a run the channel is 0 and the spread channel (>= 0) wins it.
            stuck_surprise = run * -np.log10(np.minimum(np.maximum(s["repeat_rate"], 0.05), 0.99))
            raw_surprise = np.maximum(raw_surprise, np.maximum(spread_surprise, stuck_surprise))
        else:
            raw_surprise = np.maximum(raw_surprise, spread_surprise)
        raw_score = np.minimum(np.maximum(raw_surprise - math.log10(N_CHANNELS), 0.0), 40.0)

        # -- one point: the raw surprise against this series' own tail ------
        # Peaks over a threshold: how often the raw score passes EXCEED_LEVEL
        # and by how much on average (an exponential excess). Under the
        # channels' own null that is 10^-level and 1/ln(10); a heavy-tailed
        # series passes more often and further, and is scored down for it.
        # (Only with ``tail_fit``; the statistics are learned either way.)

        # -- anomaly likelihood: sustained evidence ---------------------------
        # A single point enters the short average at most at ``short_cap``,
        # less part of the largest surprise of the recent past: a series whose
        # benign spikes recur stops being surprised by spikes of that size.
        evidence = np.minimum(raw_score, p.short_cap)
        if p.recurrence_discount > 0:
            evidence = np.maximum(evidence - p.recurrence_discount * s["recent_peak"], 0.0)
        short = s["short"] + (1.0 / p.short_points) * (evidence - s["short"])
        long_count = s["long_count"]
        long_std = np.maximum(np.sqrt(s["long_var"]), 0.1)
        likelihood_z = _where(long_count > 0, (short - s["long_mean"]) / long_std, 0.0)
        if counters is not None and self._quiet_below_mean:
            # A fit keeps no score, only what passes the rest or alarm level,
            # which no point below the long-run mean reaches: that side's
            # surprise is counted as 0 instead of being computed.
            likelihood_surprise = _surprise_where(
                likelihood_z > 0, likelihood_z, _upper_tail_above_mean
            )
        else:
            likelihood_surprise = _upper_tail_surprise(likelihood_z)
        if p.evidence_cap:
            # The Gaussian tail of the short average overstates what a single
            # moderately rare point means; the window can never be more
            # surprising than its points' surprises added up.
            likelihood_surprise = np.minimum(likelihood_surprise, short * p.short_points)
        if p.tail_fit:
            rate_surprise = -np.log10(s["exceed_rate"])
            point_surprise = np.where(
                raw_score >= EXCEED_LEVEL,
                rate_surprise + (raw_score - EXCEED_LEVEL) / (s["exceed_mean"] * LN10),
                raw_score * (rate_surprise / EXCEED_LEVEL),
            )
            likelihood_surprise = np.maximum(point_surprise, likelihood_surprise)
        # Saturating, never clipped: a tail ``half_score_decades`` out scores
        # 0.5 (the alarm level), each further as many decades halves the rest,
        # so strong anomalies still rank above merely large ones.
        likelihood = 1.0 - np.exp2(-likelihood_surprise / p.half_score_decades)

        # -- range novelty -----------------------------------------------------
        # The margin doubles with every novelty: a heavy-tailed series sets
        # records often and soon needs a real departure to score 1 again.
        margin = p.novelty_margin * s["novelty_factor"] * seen_range + floor
        novel = started & ((xv > high + margin) | (xv < low - margin)) & (level_surprise > 2.0)
        warming = count_next <= p.warmup_points
        score = _where(novel, 1.0, likelihood)
        score = _where(warming, 0.0, score)

        # -- floors in the signal's units ----------------------------------
        expected_chosen = _pick(expected, model)
        if p.min_deviation > 0 or p.min_level > 0:
            value_units = raw if all_finite else np.where(finite, raw, 0.0)
            expected_units = self._untransform(expected_chosen)
            quiet = np.abs(value_units - expected_units) < p.min_deviation
            quiet |= (np.abs(value_units) < p.min_level) & (np.abs(expected_units) < p.min_level)
            score = np.where(quiet, 0.0, score)

        # -- rest period -------------------------------------------------------
        resting = t < s["rest_until"]
        # "Clearly stronger" is measured in decades of the tail, as the score's
        # scale is: the gap to 1 must shrink by ``rest_margin`` decades' worth.
        stronger = 1.0 - score <= (1.0 - s["peak"]) * self._rest_shrink
        emitted = ~resting | stronger
        output = np.where(emitted, score, p.rest_damping * score)
        starts_rest = emitted & (score >= p.rest_trigger) & finite
        flag = emitted & (score >= p.alarm_threshold) & finite

        # -- learning (finite points only) -------------------------------------
        # Anomalous points stay out of the seasonal profiles (spreads and levels
        # learn from them, clipped, so a new regime is eventually absorbed).
        anomalous = (raw_score >= 3.0) & ~warming
        learn = finite & ~anomalous
        self._learn(
            t=t,
            x=xv,
            finite=finite,
            all_finite=all_finite,
            learn=learn,
            residual=residual,
            z=z,
            sigma=sigma,
            diff=diff,
            diff_dev=diff_dev,
            diff_sigma=diff_sigma,
            has_last=has_last,
            repeat=repeat,
            run=run,
            abs_z=abs_z,
            short=short,
            raw_score=raw_score,
            day_slots=day_slots,
            week_slots=week_slots,
            count_next=count_next,
        )
        s["rest_until"] = np.where(starts_rest, t + p.rest_period, s["rest_until"])
        scored_novel = novel & ~warming
        relaxed = 1.0 + (s["novelty_factor"] - 1.0) * (1.0 - 1.0 / p.long_points)
        s["novelty_factor"] = np.where(scored_novel, 2.0 * s["novelty_factor"], relaxed)
        s["peak"] = np.where(starts_rest, score, s["peak"])
        s["last_z"] = z_chosen.copy()
        if gaps is not None:
            for name, columns in kept.items():
                s[name][..., gaps] = columns
            s["last_z"][gaps] = math.nan

        if counters is not None:
            counters[0] += finite & anomalous
            counters[1] += flag
            return None

        sigma_chosen = _pick(sigma, model)
        band = p.band_sigmas * sigma_chosen
        return Scores(
            score=np.where(finite, output, math.nan),
            expected=self._untransform(expected_chosen),
            upper=self._untransform(expected_chosen + band),
            lower=self._untransform(expected_chosen - band),
            flag=flag,
            warming=warming,
            sustained=np.where(finite, score, math.nan),
        )

    def _learn(
        self,
        *,
        t: float,
        x: FloatArray,
        finite: BoolArray,
        all_finite: bool,
        learn: BoolArray,
        residual: FloatArray,
        z: FloatArray,
        sigma: FloatArray,
        diff: FloatArray,
        diff_dev: FloatArray,
        diff_sigma: FloatArray,
        has_last: BoolArray,
        repeat: BoolArray,
        run: FloatArray,
        abs_z: FloatArray,
        short: FloatArray,
        raw_score: FloatArray,
        day_slots: tuple[int, int, float] | None,
        week_slots: tuple[int, int, float] | None,
        count_next: FloatArray,
    ) -> None:
        p = self._params
        s = self._state
        first = s["count"] == 0
        settled = count_next > 0.5 * p.warmup_points
        # Running means until a memory is full, then exponential forgetting.
        any_first = bool(first.any())
        per_count = 1.0 / count_next
        level_alpha = np.maximum(self._level_rates[:, None], per_count)
        spread_alpha = np.maximum(1.0 / p.spread_points, per_count)

        # Huber-clipped residuals: a spike moves the level and spreads only a
        # little. Not in the first points, while the spreads are still growing.
        settling = count_next <= 10
        clip_at = np.where(settling, math.inf, sigma) if settling.any() else sigma
        clipped = _clamp(residual, 3.0 * clip_at)
        level = s["level"] + level_alpha * clipped
        # A confirmed level shift: the residual has sat on one side for a while.
        shift = s["shift"] + (1.0 / p.rebaseline_points) * (
            np.minimum(np.maximum(z, -8.0), 8.0) - s["shift"]
        )
        shifted = np.abs(shift) > p.rebaseline_sigmas
        if shifted.any():
            level = np.where(shifted, s["level"] + residual, level)
            shift = np.where(shifted, 0.0, shift)
        if any_first:
            level = np.where(first, x, level)
        s["level"] = level
        s["shift"] = shift

        spread_target = np.minimum(np.abs(residual), 4.0 * clip_at)
        # A surprising point barely widens the spread: an ongoing episode must
        # not hide itself (or the next one) by inflating its own yardstick.
        spread_rate = _where(learn, spread_alpha, 0.1 * spread_alpha)
        spread = s["spread"] + spread_rate * (spread_target - s["spread"])
        if any_first:
            spread = np.where(first, 0.0, spread)
        s["spread"] = spread
        error_alpha = np.maximum(1.0 / max(50.0, 0.25 * DAY / p.step), per_count)
        s["error"] = s["error"] + error_alpha * (np.abs(residual) - s["error"])

        for name, visits_name, slots, model, cycle in (
            ("season_day", "visits_day", day_slots, MODEL_DAILY, DAY),
            ("season_week", "visits_week", week_slots, MODEL_WEEKLY, WEEK),
        ):
            if slots is None:
                continue
            k0, k1, w = slots
            season, visits = s[name], s[visits_name]
            points_per_slot = max(cycle / season.shape[0] / p.step, 1.0)
            gamma = 1.0 / (p.season_cycles * points_per_slot)
            target = np.where(first, 0.0, clipped[model]) if any_first else clipped[model]
            for k, weight in ((k0, 1.0 - w), (k1, w)):
                if weight <= 0:
                    continue
                rate = np.maximum(gamma, 1.0 / (visits[k] + 1.0)) * weight
                # In place, only where learned (the profiles are never views).
                np.add(season[k], rate * target, out=season[k], where=learn)
                np.add(visits[k], weight, out=visits[k], where=learn)

        # Model choice: a seasonal profile only where it clearly beats the simpler model.
        self._choose_model(t, finite)

        diff_alpha = np.maximum(1.0 / p.level_points, 1.0 / np.maximum(count_next - 1, 1.0))
        diff_clip_at = _where(settling, math.inf, diff_sigma)
        diff_clipped = _clamp(diff_dev, 3.0 * diff_clip_at)
        s["diff_mean"] = _where(has_last, s["diff_mean"] + diff_alpha * diff_clipped, 0.0)
        diff_target = np.minimum(np.abs(diff_dev), 4.0 * diff_clip_at)
        s["diff_spread"] = _where(
            has_last, s["diff_spread"] + spread_alpha * (diff_target - s["diff_spread"]), 0.0
        )
        abs_diff = np.abs(diff)
        s["quantum"] = _where(abs_diff > 0, np.minimum(s["quantum"], abs_diff), s["quantum"])
        repeat_alpha = np.maximum(1.0 / 1000.0, per_count)
        s["repeat_rate"] = _where(
            has_last,
            s["repeat_rate"] + repeat_alpha * (repeat.astype(np.float64) - s["repeat_rate"]),
            s["repeat_rate"],
        )
        s["run"] = run
        s["abs_z"] = np.where(first, ABS_Z_MEAN, abs_z) if any_first else abs_z
        abs_z_alpha = np.where(settled, 1.0 / p.long_points, 0.0)
        abs_z_delta = abs_z - s["abs_z_mean"]
        s["abs_z_mean"] = s["abs_z_mean"] + abs_z_alpha * abs_z_delta
        s["abs_z_var"] = (1 - abs_z_alpha) * (s["abs_z_var"] + abs_z_alpha * abs_z_delta**2)

        # The likelihood's long-run statistics start after half the warm-up: the
        # first points' spreads are still settling and would inflate them.
        s["short"] = short
        s["last_raw"] = raw_score
        fading = np.maximum(s["recent_peak"] - p.short_cap / p.long_points, 0.0)
        s["recent_peak"] = np.maximum(fading, np.minimum(raw_score, p.short_cap))
        exceeded = raw_score >= EXCEED_LEVEL
        exceed_alpha = np.maximum(1.0 / p.long_points, 1.0 / (count_next + PRIOR_POINTS))
        s["exceed_rate"] = s["exceed_rate"] + exceed_alpha * (exceeded - s["exceed_rate"])
        if exceeded.any():
            # (Without an exceedance the rate is 0: the mean would stay as it is.)
            excess_alpha = np.where(exceeded, np.maximum(exceed_alpha, 0.02), 0.0)
            s["exceed_mean"] = s["exceed_mean"] + excess_alpha * (
                np.minimum(raw_score - EXCEED_LEVEL, 6.0) - s["exceed_mean"]
            )
        long_count = s["long_count"] + settled
        long_rate = np.maximum(1.0 / p.long_points, 1.0 / np.maximum(long_count, 1.0))
        long_alpha = np.where(settled, long_rate, 0.0)
        delta = short - s["long_mean"]
        s["long_mean"] = s["long_mean"] + long_alpha * delta
        s["long_var"] = (1 - long_alpha) * (s["long_var"] + long_alpha * delta * delta)
        s["long_count"] = long_count

        s["low"] = np.minimum(s["low"], x)
        s["high"] = np.maximum(s["high"], x)
        # Two points in a row reach at least the lower of them (and at most the
        # higher). fmin/fmax skip the NaN of a first point, which holds nothing.
        s["held_high"] = np.fmax(s["held_high"], np.minimum(x, s["last_x"]))
        s["held_low"] = np.fmin(s["held_low"], np.maximum(x, s["last_x"]))
        if any_first:
            s["first_t"] = np.where(first, t, s["first_t"])
        s["last_x"] = x
        s["count"] = count_next

    def _choose_model(self, t: float, finite: BoolArray) -> None:
        p = self._params
        s = self._state
        if p.seasonality == "none" or (self._layout.daily == 0 and self._layout.weekly == 0):
            return
        forced = {"daily": MODEL_DAILY, "weekly": MODEL_WEEKLY}.get(p.seasonality)
        if forced is not None:
            available = self._layout.daily if forced == MODEL_DAILY else self._layout.weekly
            s["model"][:] = forced if available else MODEL_NONE
            return
        age = t - s["first_t"]
        error = s["error"]
        model = np.full(s["model"].shape, float(MODEL_NONE))
        best = error[MODEL_NONE]
        if self._layout.daily:
            daily = (age >= 1.5 * DAY) & (error[MODEL_DAILY] < p.season_gain * best)
            model = np.where(daily, float(MODEL_DAILY), model)
            best = np.where(daily, error[MODEL_DAILY], best)
        if self._layout.weekly:
            weekly = (age >= 1.25 * WEEK) & (error[MODEL_WEEKLY] < p.season_gain * best)
            model = np.where(weekly, float(MODEL_WEEKLY), model)
        s["model"] = np.where(finite, model, s["model"])

    @staticmethod
    def _slots(t: float, cycle: float, n_slots: int) -> tuple[int, int, float] | None:
        """The two profile slots around ``t`` and the weight of the second."""
        if n_slots == 0:
            return None
        position = (t % cycle) / cycle * n_slots - 0.5
        lower = math.floor(position)
        weight = position - lower
        return lower % n_slots, (lower + 1) % n_slots, weight

    def _untransform(self, values: FloatArray) -> FloatArray:
        if self._params.transform == "log1p":
            return np.expm1(values)
        return values

    # -- series come and go, restarts ------------------------------------------

    def reindex(self, keep: NDArray[np.intp], added: int) -> None:
        """Keep the rows listed in ``keep`` (in that order) and append ``added`` warming rows."""
        keep = np.asarray(keep, dtype=np.intp)
        if added < 0:
            raise ValueError("added must be 0 or more")
        if keep.size and (keep.min() < 0 or keep.max() >= self.n_series):
            raise IndexError("keep lists a series the detector does not have")
        fresh = _state_shapes(added, self._layout)
        self._state = {
            name: np.concatenate(
                [array[..., keep], np.full(fresh[name][0], fresh[name][1])], axis=-1
            )
            for name, array in self._state.items()
        }

    def add_missing_until(self, added: int, timestamp: float) -> None:
        """Append ``added`` rows as series with no point up to ``timestamp``.

        What a replay from the start, with those series there but missing,
        would have left: a history read a window at a time adds series as
        they appear and ends as if it had known them all along. (A fresh row
        differs in one way: a forced seasonality picks its model at every
        step, missing points included; one missing step at ``timestamp``
        leaves every other array as fresh.)
        """
        fresh = Detector(self._params, added)
        fresh._step(
            float(timestamp), np.full(added, np.nan), counters=np.zeros((2, added), np.int64)
        )
        self._state = {
            name: np.concatenate([array, fresh._state[name]], axis=-1)
            for name, array in self._state.items()
        }

    def state(self) -> dict[str, NDArray[Any]]:
        """Everything needed to resume, as arrays (``np.savez``-able)."""
        saved: dict[str, NDArray[Any]] = {name: array.copy() for name, array in self._state.items()}
        saved["version"] = np.array(STATE_VERSION)
        saved["layout"] = np.array([self._layout.daily, self._layout.weekly])
        return saved

    @classmethod
    def from_state(cls, params: DetectorParams, state: Mapping[str, NDArray[Any]]) -> Detector:
        """A detector that continues exactly where the one that saved ``state`` stopped."""
        if int(state["version"]) != STATE_VERSION:
            raise ValueError(f"unsupported detector state version {int(state['version'])}")
        layout = _SlotLayout.for_step(params.step)
        if [layout.daily, layout.weekly] != [int(v) for v in state["layout"]]:
            raise ValueError("the saved state was made with a different step")
        n = int(np.asarray(state["count"]).shape[0])
        detector = cls(params, n)
        for name, (shape, _) in _state_shapes(n, layout).items():
            # A state saved before the held range existed starts it from the
            # seen range, the floor that detector used (a range never narrows:
            # such a model keeps that floor until it is trained again).
            source = _DERIVED_WHEN_MISSING.get(name, name) if name not in state else name
            array = np.asarray(state[source], dtype=np.float64)
            if array.shape != shape:
                raise ValueError(f"state array {name!r} has shape {array.shape}, expected {shape}")
            detector._state[name] = array.copy()
        return detector

    def residuals(self) -> FloatArray:
        """The last standardised residual of each series (NaN where missing): drift input."""
        return self._state["last_z"].copy()


def replay_part(
    params: DetectorParams,
    state: StateArrays,
    timestamps: FloatArray,
    values: FloatArray,
) -> tuple[StateArrays, NDArray[np.int64]]:
    """A worker's share of a split fit: its slice's state after ``values``, and its counters."""
    detector = Detector(params, 0)
    detector._state = state
    counters = detector._replay(timestamps, values)
    return detector._state, counters


def score_series(
    timestamps: NDArray[np.float64],
    values: NDArray[np.float64],
    params: DetectorParams | None = None,
) -> FloatArray:
    """The CLI path: one series through :meth:`Detector.update`, row by row (no lookahead).

    Missing values score 0 (the CLI writes what this returns).
    """
    timestamps = np.asarray(timestamps, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if timestamps.shape != values.shape or timestamps.ndim != 1:
        raise ValueError("timestamps and values must be 1-D arrays of the same length")
    detector = Detector(params or DetectorParams(), 1)
    result = np.zeros(values.shape[0])
    column = np.empty(1)
    for index in range(values.shape[0]):
        column[0] = values[index]
        result[index] = detector.update(float(timestamps[index]), column).score[0]
    return np.nan_to_num(result, nan=0.0)

"""How the detector models a signal's series: :class:`DetectorParams`, without numpy.

Kept apart from :mod:`ai_sidecar.anomaly.detector` so that the command line
can show the defaults in its help without importing the detector's numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# The rest period's default: 2.5 hours, but never fewer than 30 steps or more
# than 60 (an hour at one minute, 2.5 hours at five, 30 hours at one hour), so
# a second event a few hours after the first is still seen on coarse data.
DEFAULT_REST_STEPS = 60
MIN_REST_STEPS = 30
DEFAULT_REST_SECONDS = 9_000.0


def default_rest_period(step: float) -> float:
    """The default ``rest_period`` (seconds) for series sampled every ``step`` seconds."""
    return step * min(max(DEFAULT_REST_SECONDS / step, MIN_REST_STEPS), DEFAULT_REST_STEPS)


@dataclass(frozen=True, slots=True)
class DetectorParams:
    """How a signal's series are modelled; the defaults suit 1-minute data.

    Durations are seconds; ``*_points`` are memories in points of ``step``.
    """

    step: float = 60.0
    seasonality: Literal["auto", "daily", "weekly", "none"] = "auto"
    transform: Literal["none", "log1p"] = "none"
    # Absolute floor in the signal's units: deviations smaller than this never flag.
    min_deviation: float = 0.0
    # Values whose |value| and expected value both stay below this never flag.
    min_level: float = 0.0
    # Seconds of quiet after an alarm.
    rest_period: float = DEFAULT_REST_STEPS * 60.0
    # Points before a series is scored (it is flagged ``warming`` until then).
    warmup_points: int = 200
    # Memory of the level (points); the trend is followed at this pace.
    level_points: float = 30.0
    # Memory of the residual spread (points).
    spread_points: float = 240.0
    # Memory of a seasonal profile, in cycles (days or weeks).
    season_cycles: float = 3.0
    # Memory of the short moving average of the raw score (points).
    short_points: float = 6.0
    # Memory of that average's long-run distribution (points).
    long_points: float = 1500.0
    # The most a single point adds to the likelihood's short average (decades).
    short_cap: float = 12.0
    # How much of the recent largest raw surprise a new point's is discounted by.
    recurrence_discount: float = 0.8
    # Cap the likelihood's surprise at the sum of the short window's raw surprises.
    evidence_cap: bool = True
    # Also score single points by their raw surprise against the series' own
    # fitted tail (off by default: on the evaluation set the likelihood alone
    # scores better; kept for series where single points matter most).
    tail_fit: bool = False
    # The likelihood's scale: a tail this many decades out scores 0.5.
    half_score_decades: float = 3.5
    # Score at and above which a point is an alarm (``Scores.flag``).
    alarm_threshold: float = 0.5
    # Score at and above which the rest period starts.
    rest_trigger: float = 0.3
    # During the rest period a point is scored again only if this many decades
    # of tail stronger than the event's peak.
    rest_margin: float = 1.0
    # Factor on the score of points quieted by the rest period.
    rest_damping: float = 0.2
    # Range novelty: margin beyond the seen range, as a fraction of that range.
    novelty_margin: float = 0.1
    # Residual EWMA (in sigmas) that confirms a level shift and re-baselines.
    rebaseline_sigmas: float = 3.0
    # Memory (points) of that residual EWMA: at 8 sigmas and more a shift is
    # confirmed after half of it, at 4 sigmas after about 1.4 times it.
    rebaseline_points: float = 10.0
    # Half-width of the band (upper/lower) in sigmas of the residual.
    band_sigmas: float = 4.0
    # A seasonal model must beat the simpler one's error by this factor to be used.
    season_gain: float = 0.8

    def __post_init__(self) -> None:
        if not self.step > 0:
            raise ValueError(f"step must be above 0, got {self.step!r}")
        if self.seasonality not in ("auto", "daily", "weekly", "none"):
            raise ValueError(f"unknown seasonality {self.seasonality!r}")
        if self.transform not in ("none", "log1p"):
            raise ValueError(f"unknown transform {self.transform!r}")
        if self.min_deviation < 0 or self.min_level < 0 or self.rest_period < 0:
            raise ValueError("min_deviation, min_level and rest_period must be 0 or more")
        if self.warmup_points < 1:
            raise ValueError("warmup_points must be at least 1")

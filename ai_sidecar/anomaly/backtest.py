"""Scoring anomaly scores against labelled events: ``anomaly backtest`` and the benchmark.

Two views of the same scores at a threshold:

- **Event level** (what an operator notices): an event is a run of labelled
  points; it is detected if an alarm falls inside its window (the labelled
  span plus a short grace for smoothing delay, 10 points + 10 % of the span).
  An alarm is the first point of a run of points at or above the threshold;
  an alarm outside every window is a false alarm. Precision = detected /
  (detected + false alarms), recall = detected / events, delay = points from
  an event's start to its first alarm.
- **NAB-style** (the public benchmark's standard profile): a window of 10 % of
  the series' length divided by its number of events, centred on each
  event's start; the first detection in a window earns a sigmoid of its
  position (about 1 at the window's start, 0 at its end), a missed window
  costs 1, every point at or above the threshold outside windows costs 0.11
  (less just after a window), the first 15 % of a series is probation and not
  scored. The corpus total is normalised to 0 for a detector that never fires
  and 100 for a perfect one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

PROBATION = 0.15
TP_WEIGHT, FP_WEIGHT, FN_WEIGHT = 1.0, 0.11, 1.0
DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Truth:
    """One series' ground truth: labelled events as inclusive (start, end) point indexes."""

    events: tuple[tuple[int, int], ...]
    n_points: int
    days: float

    @classmethod
    def from_labels(cls, labels: NDArray[np.bool_], step: float) -> Truth:
        labels = np.asarray(labels, dtype=np.bool_)
        edges = np.diff(np.concatenate([[False], labels, [False]]).astype(np.int8))
        starts = np.flatnonzero(edges == 1)
        ends = np.flatnonzero(edges == -1) - 1
        events = tuple((int(a), int(b)) for a, b in zip(starts, ends, strict=True))
        return cls(events, int(labels.shape[0]), labels.shape[0] * step / DAY)


@dataclass(frozen=True, slots=True)
class EventMetrics:
    threshold: float
    events: int
    detected: int
    false_alarms: int
    # Days scored (after probation), summed over series.
    series_days: float
    delays: tuple[int, ...]

    @property
    def precision(self) -> float:
        total = self.detected + self.false_alarms
        return self.detected / total if total else 0.0

    @property
    def recall(self) -> float:
        return self.detected / self.events if self.events else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def false_alarms_per_day(self) -> float:
        return self.false_alarms / self.series_days if self.series_days else 0.0

    @property
    def median_delay(self) -> float:
        return float(np.median(self.delays)) if self.delays else math.nan


def _grace(start: int, end: int) -> int:
    return 10 + (end - start) // 10


def event_metrics(
    truths: Sequence[Truth], scores: Sequence[NDArray[np.float64]], threshold: float
) -> EventMetrics:
    events = detected = false_alarms = 0
    delays: list[int] = []
    days = 0.0
    for truth, score in zip(truths, scores, strict=True):
        above = np.nan_to_num(score) >= threshold
        above[: int(PROBATION * truth.n_points)] = False
        onsets = np.flatnonzero(above & ~np.concatenate([[False], above[:-1]]))
        inside = np.zeros(onsets.shape[0], dtype=np.bool_)
        for start, end in truth.events:
            events += 1
            window_end = end + _grace(start, end)
            hits = (onsets >= start) & (onsets <= window_end)
            # A run that began just before the event and is still on counts too.
            ongoing = np.flatnonzero(above[start : window_end + 1])
            if ongoing.size:
                detected += 1
                delays.append(int(ongoing[0]))
            inside |= hits
        false_alarms += int((~inside).sum())
        days += truth.days * (1 - PROBATION)
    return EventMetrics(threshold, events, detected, false_alarms, days, tuple(delays))


def _scaled_sigmoid(position: float) -> float:
    if position > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def nab_windows(truth: Truth) -> list[tuple[int, int]]:
    if not truth.events:
        return []
    width = int(0.1 * truth.n_points / len(truth.events))
    windows: list[tuple[int, int]] = []
    for start, end in truth.events:
        left = max(0, start - width // 2)
        right = min(truth.n_points - 1, max(start + width // 2, end))
        if windows and left <= windows[-1][1]:
            windows[-1] = (windows[-1][0], right)
        else:
            windows.append((left, right))
    return windows


def nab_raw(truth: Truth, score: NDArray[np.float64], threshold: float) -> float:
    """The series' raw NAB standard-profile score at ``threshold``."""
    above = np.flatnonzero(np.nan_to_num(score) >= threshold)
    above = above[above >= int(PROBATION * truth.n_points)]
    windows = nab_windows(truth)
    starts = np.array([w[0] for w in windows], dtype=np.intp)
    detected = [False] * len(windows)
    total = 0.0
    for index in above:
        w = int(np.searchsorted(starts, index, side="right")) - 1
        if w < 0:
            total -= FP_WEIGHT
            continue
        left, right = windows[w]
        if index <= right:
            if not detected[w]:
                total += TP_WEIGHT * _scaled_sigmoid(-(right - index + 1) / (right - left + 1))
                detected[w] = True
        else:
            total += FP_WEIGHT * _scaled_sigmoid(abs(right - index) / max(right - left, 1))
    return total - FN_WEIGHT * detected.count(False)


def nab_score(
    truths: Sequence[Truth], scores: Sequence[NDArray[np.float64]], threshold: float
) -> float:
    """The corpus' normalised NAB-style score (0 = never fires, 100 = perfect)."""
    raw = sum(nab_raw(t, s, threshold) for t, s in zip(truths, scores, strict=True))
    windows = sum(len(nab_windows(t)) for t in truths)
    if windows == 0:
        return math.nan
    null = -FN_WEIGHT * windows
    perfect = TP_WEIGHT * _scaled_sigmoid(-1.0) * windows
    return 100.0 * (raw - null) / (perfect - null)


def candidate_thresholds(scores: Sequence[NDArray[np.float64]], count: int = 60) -> list[float]:
    """Thresholds worth trying: the top decile's quantiles and an even grid."""
    pooled = np.concatenate([np.nan_to_num(s) for s in scores])
    top = np.quantile(pooled, np.linspace(0.9, 1.0, count))
    grid = np.linspace(0.05, 1.0, 20) * pooled.max()
    return sorted({float(v) for v in np.concatenate([top, grid]) if v > 0})

"""Honest scoring of anomaly scores against labelled events.

Two views of the same scores at a threshold:

- **Event level** (what an operator notices): an event is detected if an
  alarm falls inside its window (the labelled span plus a short grace for
  smoothing delay); an alarm is the first point of a run of points at or
  above the threshold, and an alarm outside every window is a false alarm.
  Precision = detected / (detected + false alarms), recall = detected /
  events, delay = points from an event's start to its first alarm.
- **NAB-style** (the public benchmark's standard profile): a window of
  10 % of the series' length divided by its number of events, centred on each
  event's start; the first detection in a window earns a sigmoid of its
  position (about 1 at the window's start, 0 at its end), a missed window
  costs 1, every point above the threshold outside windows costs 0.11
  (less just after a window), the first 15 % is probation and not scored. The
  sum is normalised to 0 for a detector that never fires and 100 for a
  perfect one.

Each detector gets the threshold that maximises its own corpus-wide score,
as the public benchmark does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from benchmarks.anomaly.generator import LabelledSeries

PROBATION = 0.15
TP_WEIGHT, FP_WEIGHT, FN_WEIGHT = 1.0, 0.11, 1.0


@dataclass(frozen=True, slots=True)
class EventMetrics:
    threshold: float
    events: int
    detected: int
    false_alarms: int
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


def _alarm_onsets(above: NDArray[np.bool_]) -> NDArray[np.intp]:
    previous = np.concatenate([[False], above[:-1]])
    return np.flatnonzero(above & ~previous)


def event_metrics(
    corpus: Sequence[LabelledSeries], scores: Sequence[NDArray[np.float64]], threshold: float
) -> EventMetrics:
    events = detected = false_alarms = 0
    delays: list[int] = []
    days = 0.0
    for series, score in zip(corpus, scores, strict=True):
        start_scored = int(PROBATION * series.values.shape[0])
        above = np.nan_to_num(score) >= threshold
        above[:start_scored] = False
        onsets = _alarm_onsets(above)
        inside = np.zeros(onsets.shape[0], dtype=np.bool_)
        for event in series.events:
            events += 1
            window_end = event.end + _grace(event.start, event.end)
            hits = (onsets >= event.start) & (onsets <= window_end)
            # A run that began just before the event and is still on counts too.
            ongoing = above[event.start : window_end + 1]
            if hits.any() or ongoing.any():
                detected += 1
                first = np.flatnonzero(ongoing)
                delays.append(int(first[0]) if first.size else 0)
            inside |= hits
        false_alarms += int((~inside).sum())
        days += series.days * (1 - PROBATION)
    return EventMetrics(threshold, events, detected, false_alarms, days, tuple(delays))


def _scaled_sigmoid(position: float) -> float:
    if position > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def nab_windows(series: LabelledSeries) -> list[tuple[int, int]]:
    n = series.values.shape[0]
    if not series.events:
        return []
    width = int(0.1 * n / len(series.events))
    windows: list[tuple[int, int]] = []
    for event in series.events:
        left = max(0, event.start - width // 2)
        right = min(n - 1, max(event.start + width // 2, event.end))
        if windows and left <= windows[-1][1]:
            windows[-1] = (windows[-1][0], right)
        else:
            windows.append((left, right))
    return windows


def nab_raw(series: LabelledSeries, score: NDArray[np.float64], threshold: float) -> float:
    """The series' raw NAB standard-profile score at ``threshold``."""
    n = series.values.shape[0]
    probation = int(PROBATION * n)
    above = np.flatnonzero(np.nan_to_num(score) >= threshold)
    above = above[above >= probation]
    windows = nab_windows(series)
    total = 0.0
    detected = [False] * len(windows)
    starts = np.array([w[0] for w in windows])
    for index in above:
        w = int(np.searchsorted(starts, index, side="right")) - 1
        if w >= 0 and index <= windows[w][1]:
            if not detected[w]:
                left, right = windows[w]
                position = -(right - index + 1) / (right - left + 1)
                total += TP_WEIGHT * _scaled_sigmoid(position)
                detected[w] = True
        elif w >= 0:
            left, right = windows[w]
            position = abs(right - index) / max(right - left, 1)
            total += FP_WEIGHT * _scaled_sigmoid(position)
        else:
            total -= FP_WEIGHT
    total -= FN_WEIGHT * detected.count(False)
    return total


def nab_score(
    corpus: Sequence[LabelledSeries], scores: Sequence[NDArray[np.float64]], threshold: float
) -> float:
    raw = sum(nab_raw(s, score, threshold) for s, score in zip(corpus, scores, strict=True))
    windows = sum(len(nab_windows(s)) for s in corpus)
    null = -FN_WEIGHT * windows
    perfect = TP_WEIGHT * _scaled_sigmoid(-1.0) * windows
    return 100.0 * (raw - null) / (perfect - null)


def candidate_thresholds(scores: Sequence[NDArray[np.float64]], count: int = 60) -> list[float]:
    pooled = np.concatenate([np.nan_to_num(s) for s in scores])
    top = np.quantile(pooled, np.linspace(0.9, 1.0, count))
    grid = np.linspace(0.05, 1.0, 20) * pooled.max()
    return sorted({float(v) for v in np.concatenate([top, grid]) if v > 0})


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One detector's scores on the corpus, at its best thresholds."""

    name: str
    events: EventMetrics  # at the F1-best threshold
    nab: float  # at the NAB-best threshold
    nab_threshold: float
    micros_per_point: float


def evaluate(
    name: str,
    corpus: Sequence[LabelledSeries],
    scores: Sequence[NDArray[np.float64]],
    micros_per_point: float,
) -> Evaluation:
    thresholds = candidate_thresholds(scores)
    best_events = max((event_metrics(corpus, scores, t) for t in thresholds), key=lambda m: m.f1)
    nab_best, nab_threshold = max((nab_score(corpus, scores, t), t) for t in thresholds)
    return Evaluation(name, best_events, nab_best, nab_threshold, micros_per_point)

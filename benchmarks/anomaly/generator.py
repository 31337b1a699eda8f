"""A labelled evaluation set for the anomaly detector, generated from a fixed seed.

Series look like what Scout models: interface bits/s in the 1e9 range, ratios
0..1, small integer counts, latencies. Each has a base shape (daily or weekly
seasonality, bursty traffic, heavy-tailed latency, flat noise, a trend), noise,
gaps (NaN, never labelled) and zero or more labelled events: spikes, dips,
level shifts, variance changes, seasonality breaks, slow drift, a stuck
sensor, counter resets as ``rate()`` shows them. Anomaly-free series and
benign bursts (unlabelled) keep the false-alarm side honest.

Events are placed after the first 20 % of a series: the scorer's probation
(15 %) is for learning, not for detecting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ai_sidecar.anomaly.backtest import DAY, Truth

# 2026-11-02 00:00 UTC, a Monday: weekly shapes start on a weekday.
START = 1_793_577_600.0


@dataclass(frozen=True, slots=True)
class Event:
    """A labelled anomaly: points ``start`` to ``end`` inclusive."""

    start: int
    end: int
    kind: str


@dataclass(frozen=True, slots=True)
class LabelledSeries:
    name: str
    step: float
    timestamps: NDArray[np.float64]
    values: NDArray[np.float64]
    events: tuple[Event, ...]

    @property
    def labels(self) -> NDArray[np.bool_]:
        labels = np.zeros(self.values.shape[0], dtype=np.bool_)
        for event in self.events:
            labels[event.start : event.end + 1] = True
        return labels

    @property
    def truth(self) -> Truth:
        events = tuple((e.start, e.end) for e in self.events)
        return Truth(events, self.values.shape[0], self.values.shape[0] * self.step / DAY)


def _daily(t: NDArray[np.float64], peak_hour: float) -> NDArray[np.float64]:
    """0..1 diurnal curve: low at night, a broad day peak around ``peak_hour``."""
    hours = (t % DAY) / 3600.0
    return 0.5 + 0.5 * np.cos(2 * np.pi * (hours - peak_hour) / 24.0)


def _weekly(t: NDArray[np.float64]) -> NDArray[np.float64]:
    """1 on weekdays, 0.35 on weekends, smoothed over a couple of hours."""
    day_of_week = ((t - START) // DAY) % 7
    return np.where(day_of_week >= 5, 0.35, 1.0)


class _Builder:
    """One series under construction: a base shape, then events and gaps on top."""

    def __init__(self, rng: np.random.Generator, step: float, days: float) -> None:
        self.rng = rng
        self.step = step
        self.n = int(days * DAY / step)
        self.t = START + np.arange(self.n) * step
        self.events: list[Event] = []

    def slot(self, length: int) -> tuple[int, int]:
        """A random place for an event of ``length`` points, clear of earlier events."""
        for _ in range(100):
            start = int(self.rng.integers(int(0.22 * self.n), self.n - length - 5))
            end = start + length - 1
            if all(end + 50 < e.start or start > e.end + 50 for e in self.events):
                return start, end
        raise RuntimeError("no room for another event")

    def label(self, start: int, end: int, kind: str) -> None:
        self.events.append(Event(start, end, kind))

    def points(self, seconds: float) -> int:
        return max(1, int(seconds / self.step))


def _inject(b: _Builder, y: NDArray[np.float64], kind: str, scale: float, noise: float) -> None:
    """Add one labelled event of ``kind`` to ``y`` (in place)."""
    rng = b.rng
    if kind == "spike":
        start, end = b.slot(int(rng.integers(1, 3)))
        y[start : end + 1] += rng.uniform(6, 10) * noise + 0.3 * scale
    elif kind == "dip":
        start, end = b.slot(b.points(rng.uniform(300, 1800)))
        y[start : end + 1] -= rng.uniform(0.5, 0.8) * np.abs(y[start : end + 1])
    elif kind == "level_shift":
        start, end = b.slot(b.points(3600))
        y[start:] += rng.choice([-1, 1]) * (rng.uniform(5, 8) * noise + 0.25 * scale)
    elif kind == "variance":
        start, end = b.slot(b.points(rng.uniform(2, 5) * 3600))
        y[start : end + 1] += rng.normal(0, rng.uniform(4, 6) * noise, end - start + 1)
    elif kind == "season_break":
        # The day's usual peak does not come: traffic stays at its night level.
        length = b.points(rng.uniform(4, 8) * 3600)
        start, end = b.slot(length)
        y[start : end + 1] = np.minimum(y[start : end + 1], np.quantile(y[: b.n // 5], 0.1))
    elif kind == "drift":
        length = b.points(rng.uniform(6, 12) * 3600)
        start, end = b.slot(length)
        ramp = np.linspace(0, rng.uniform(0.6, 1.0) * scale + 8 * noise, length)
        y[start : end + 1] += ramp
        y[end + 1 :] += ramp[-1]
    elif kind == "stuck":
        start, end = b.slot(b.points(rng.uniform(1, 3) * 3600))
        y[start : end + 1] = y[start]
    elif kind == "counter_reset":
        # A restarted exporter loses the increments of the window rate() spans:
        # the rate dips towards 0 for a few points, then a short overshoot.
        width = int(rng.integers(2, 5))
        start, end = b.slot(width + 1)
        y[start : start + width] *= np.linspace(0.05, 0.6, width)
        y[end] *= 1.4
    else:
        raise ValueError(kind)
    b.label(start, end, kind)


def _gaps(b: _Builder, y: NDArray[np.float64], count: int) -> None:
    for _ in range(count):
        start = int(b.rng.integers(int(0.1 * b.n), b.n - 50))
        y[start : start + int(b.rng.integers(1, 40))] = np.nan


Shape = Callable[[_Builder], tuple[NDArray[np.float64], float, float]]


def _traffic(b: _Builder) -> tuple[NDArray[np.float64], float, float]:
    """Interface bits/s: daily curve x weekly factor, multiplicative noise, ~1e9."""
    scale = b.rng.uniform(2e8, 3e9)
    base = scale * (0.15 + 0.85 * _daily(b.t, b.rng.uniform(11, 16)) * _weekly(b.t))
    y = base * (1 + b.rng.normal(0, 0.03, b.n))
    return y, scale, 0.03 * scale


def _ratio(b: _Builder) -> tuple[NDArray[np.float64], float, float]:
    """A utilisation ratio 0..1 with a daily curve."""
    y = 0.2 + 0.4 * _daily(b.t, b.rng.uniform(9, 15)) + b.rng.normal(0, 0.02, b.n)
    return np.clip(y, 0, 1), 0.4, 0.02


def _counts(b: _Builder) -> tuple[NDArray[np.float64], float, float]:
    """Small integers (errors per minute, sessions): quantised, Poisson."""
    lam = 2 + 3 * _daily(b.t, 14.0)
    return b.rng.poisson(lam).astype(np.float64), 3.0, 1.5


def _flat(b: _Builder) -> tuple[NDArray[np.float64], float, float]:
    """A flat level with Gaussian noise (temperatures, memory in use)."""
    level = b.rng.uniform(10, 1000)
    noise = level * b.rng.uniform(0.005, 0.05)
    return level + b.rng.normal(0, noise, b.n), level * 0.2, noise


def _bursty(b: _Builder) -> tuple[NDArray[np.float64], float, float]:
    """Bursty traffic: a low floor with frequent short benign bursts (unlabelled)."""
    scale = b.rng.uniform(1e7, 1e9)
    y = scale * (0.2 + 0.1 * _daily(b.t, 13.0)) * (1 + b.rng.normal(0, 0.05, b.n))
    bursts = b.rng.random(b.n) < 0.01
    y += bursts * scale * b.rng.pareto(2.5, b.n) * 0.3
    return y, scale * 0.3, scale * 0.02


def _latency(b: _Builder) -> tuple[NDArray[np.float64], float, float]:
    """Probe RTT in seconds: log-normal with occasional benign spikes."""
    base = b.rng.uniform(0.005, 0.08)
    y = base * np.exp(b.rng.normal(0, 0.15, b.n))
    spikes = b.rng.random(b.n) < 0.003
    y = np.where(spikes, y * b.rng.uniform(2, 4, b.n), y)
    return y, base, base * 0.15


def _trend(b: _Builder) -> tuple[NDArray[np.float64], float, float]:
    """Filesystem use: a steady climb with small noise, and daily log rotation dips."""
    y = 0.3 + 0.2 * np.arange(b.n) / b.n + b.rng.normal(0, 0.002, b.n)
    return y, 0.1, 0.002


SHAPES: dict[str, Shape] = {
    "traffic": _traffic,
    "ratio": _ratio,
    "counts": _counts,
    "flat": _flat,
    "bursty": _bursty,
    "latency": _latency,
    "trend": _trend,
}

# (shape, events) per series; every recipe is generated at both steps.
RECIPES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("traffic", ("spike", "dip")),
    ("traffic", ("level_shift",)),
    ("traffic", ("season_break",)),
    ("traffic", ("variance",)),
    ("traffic", ("counter_reset", "spike")),
    ("traffic", ()),
    ("ratio", ("drift",)),
    ("ratio", ("spike", "stuck")),
    ("ratio", ()),
    ("counts", ("spike",)),
    ("counts", ()),
    ("flat", ("stuck", "variance")),
    ("flat", ("level_shift",)),
    ("flat", ()),
    ("bursty", ("level_shift",)),
    ("bursty", ()),
    ("latency", ("level_shift",)),
    ("latency", ("variance",)),
    ("latency", ()),
    ("trend", ("spike",)),
    ("trend", ()),
)


def generate(
    seed: int = 12, *, small: bool = False, steps: tuple[float, ...] = (60.0, 300.0)
) -> list[LabelledSeries]:
    """The evaluation set. ``small`` shortens every series (a test-sized run)."""
    rng = np.random.default_rng(seed)
    corpus = []
    durations = {60.0: 4.0 if small else 7.0, 300.0: 10.0 if small else 21.0}
    for step in steps:
        days = durations[step]
        for index, (shape, kinds) in enumerate(RECIPES):
            builder = _Builder(rng, step, days)
            y, scale, noise = SHAPES[shape](builder)
            for kind in kinds:
                _inject(builder, y, kind, scale, noise)
            if shape in ("ratio",):
                y = np.clip(y, 0, 1)
            if shape == "counts":
                y = np.round(np.maximum(y, 0))
            _gaps(builder, y, int(rng.integers(0, 4)))
            name = f"{shape}-{'-'.join(kinds) or 'clean'}-{int(step)}s-{index}"
            events = tuple(sorted(builder.events, key=lambda e: e.start))
            corpus.append(LabelledSeries(name, step, builder.t, y, events))
    return corpus

"""An in-memory PromQL engine and an in-process trainer, for the scoring loop's fast tests.

The engine answers every query with its series (the query text is not
parsed, except the series count the history code asks for and the flags the
trainer reads back), evaluated on the request's step grid like a real one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ai_sidecar.anomaly.registry import ModelRegistry
from ai_sidecar.anomaly.shards import Share
from ai_sidecar.anomaly.trainer import TrainingResult, train_signal
from ai_sidecar.config import AnomalyConfig
from ai_sidecar.promql import Sample, Series


@dataclass
class FakeSeries:
    labels: Mapping[str, str]
    value: Callable[[float], float]
    first: float = -math.inf
    last: float = math.inf


@dataclass
class FakeEngine:
    """Series defined as functions of time, alive between ``first`` and ``last``."""

    series: list[FakeSeries] = field(default_factory=list)
    ranges: list[tuple[float, float]] = field(default_factory=list)
    flagged: Mapping[str, Sequence[float]] = field(default_factory=dict)

    async def instant(self, query: str, at: datetime, *, time_box: timedelta) -> tuple[Sample, ...]:
        alive = [s for s in self.series if s.first <= at.timestamp() <= s.last]
        return (Sample({}, at.timestamp(), float(len(alive))),)

    async def range(
        self, query: str, start: datetime, end: datetime, step: timedelta, *, time_box: timedelta
    ) -> tuple[Series, ...]:
        seconds = step.total_seconds()
        first = math.floor(start.timestamp() / seconds) * seconds
        grid = [first + i * seconds for i in range(int((end.timestamp() - first) // seconds) + 1)]
        if query.startswith("max_over_time(scout_anomaly_flag"):
            return tuple(
                Series(
                    {"instance": instance},
                    tuple(grid),
                    tuple(1.0 if t in set(times) else 0.0 for t in grid),
                )
                for instance, times in self.flagged.items()
            )
        self.ranges.append((start.timestamp(), end.timestamp()))
        found = []
        for series in self.series:
            times = tuple(t for t in grid if series.first <= t <= series.last)
            if times:
                found.append(Series(series.labels, times, tuple(series.value(t) for t in times)))
        return tuple(found)


class InlineTrainer:
    """Trains in this process, at once: the scoring loop's tests need no second process."""

    def __init__(self, engine: FakeEngine, registry: ModelRegistry, config: AnomalyConfig) -> None:
        self._engine = engine
        self._registry = registry
        self._config = config
        self.calls: list[tuple[tuple[str, ...], float]] = []

    async def train(
        self, signals: Sequence[str], now: float, share: Share | None = None
    ) -> TrainingResult:
        self.calls.append((tuple(signals), now))
        trained = {}
        for name in signals:
            trained[name] = await train_signal(
                self._engine,
                self._config.signal(name),
                self._registry,
                self._config,
                now=now,
                share=share,
            )
        return TrainingResult(trained, {})

"""Time Python's cyclic garbage collector takes, exported on ``/metrics``.

An exporter polling thousands of devices holds a cache per device, and a full
collection walks all of it: whether the collector is what slows a busy exporter
is a question its own metrics should answer, not a profiler attached by hand.
``GcTimer`` counts, per generation, the collections and the seconds they took
(two clock reads per collection, from ``gc.callbacks``), and the longest pause.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

GENERATIONS = (0, 1, 2)


class GcTimer:
    """Seconds and pauses of the collector's passes since ``install()``."""

    def __init__(self) -> None:
        self.seconds = [0.0 for _ in GENERATIONS]
        self.collections = [0 for _ in GENERATIONS]
        self.longest = [0.0 for _ in GENERATIONS]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        # Collections never nest (the collector does not re-enter itself), so one
        # start time is enough, whichever thread's allocation set one off.
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        generation = info["generation"]
        self.seconds[generation] += took
        self.collections[generation] += 1
        self.longest[generation] = max(self.longest[generation], took)

    @property
    def installed(self) -> bool:
        return self in gc.callbacks

    def install(self) -> None:
        if not self.installed:
            gc.callbacks.append(self)

    def uninstall(self) -> None:
        if self.installed:
            gc.callbacks.remove(self)

    def families(self) -> list[Metric]:
        """The counters, or nothing while not installed (zeros would say "no time")."""
        if not self.installed:
            return []
        seconds = CounterMetricFamily(
            "scout_exporter_gc_seconds",
            "Seconds Python's garbage collector spent, by generation collected.",
            labels=["generation"],
        )
        collections = CounterMetricFamily(
            "scout_exporter_gc_collections",
            "Collections by Python's garbage collector, by generation collected.",
            labels=["generation"],
        )
        longest = GaugeMetricFamily(
            "scout_exporter_gc_longest_pause_seconds",
            "The longest single collection since start, by generation collected.",
            labels=["generation"],
        )
        for generation in GENERATIONS:
            seconds.add_metric([str(generation)], self.seconds[generation])
            collections.add_metric([str(generation)], self.collections[generation])
            longest.add_metric([str(generation)], self.longest[generation])
        return [seconds, collections, longest]


# The exporter's own, installed at start by ``cli.tune_garbage_collector``.
GC_TIMER = GcTimer()

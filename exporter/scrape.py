"""Runs the enabled collectors for one scrape, each bounded by the scrape deadline.

Collectors run in worker threads, all at once. At the deadline the scrape stops
waiting: a collector that has not finished is reported with
``scout_collector_success 0`` and its partial output is dropped, while the
others are served. A thread cannot be killed, so an overrunning collector keeps
its thread; it is not started again until that run ends, which bounds the
threads a stuck collector (a hung NFS mount, say) can hold to one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.collectors import Collector
from exporter.errors import CollectorBusyError

log = logging.getLogger(__name__)

# Prometheus's own default scrape_timeout, used when the header is absent.
DEFAULT_SCRAPE_TIMEOUT_SECONDS = 10.0
# The longest scrape a caller may ask for. The header is the caller's to set, so
# without a cap a request naming 1e9 s would hold a device's session for ever.
# Two minutes is well above any sensible scrape_timeout (Prometheus's default is 10 s).
MAX_SCRAPE_TIMEOUT_SECONDS = 120.0


def scrape_deadline(header: str | None, offset: float) -> float:
    """Seconds a scrape may take: Prometheus's timeout header minus ``offset``.

    A timeout not larger than the offset would leave nothing, so half of it is
    used instead. A missing or unparsable header (NaN, infinite, zero or
    negative) means Prometheus's default; a larger one than
    ``MAX_SCRAPE_TIMEOUT_SECONDS`` is cut to it.
    """
    try:
        timeout = float(header) if header else DEFAULT_SCRAPE_TIMEOUT_SECONDS
    except ValueError:
        timeout = DEFAULT_SCRAPE_TIMEOUT_SECONDS
    if not 0 < timeout < math.inf:  # also catches NaN
        timeout = DEFAULT_SCRAPE_TIMEOUT_SECONDS
    timeout = min(timeout, MAX_SCRAPE_TIMEOUT_SECONDS)
    return timeout - offset if timeout > offset else timeout / 2


@dataclass(frozen=True, slots=True)
class CollectorResult:
    name: str
    success: bool
    duration_seconds: float
    families: list[Metric]


# A collector's families (or the error it raised) and how long it ran.
_Timed = tuple[list[Metric], BaseException | None, float]


def _timed_collect(collector: Collector) -> _Timed:
    started = time.perf_counter()
    try:
        families, error = list(collector.collect()), None
    except Exception as exc:  # scrape boundary: one failing collector never fails the others
        families, error = [], exc
    return families, error, time.perf_counter() - started


class ScrapeRunner:
    def __init__(self, executor: ThreadPoolExecutor) -> None:
        self._executor = executor
        self._in_flight: dict[str, Future[_Timed]] = {}

    def _submit(self, name: str, collector: Collector) -> Future[_Timed]:
        running = self._in_flight.get(name)
        if running is not None and not running.done():
            busy: Future[_Timed] = Future()
            busy.set_exception(CollectorBusyError("still running from an earlier scrape"))
            return busy
        future = self._executor.submit(_timed_collect, collector)
        self._in_flight[name] = future
        return future

    async def scrape(
        self, collectors: Mapping[str, Collector], deadline_seconds: float
    ) -> list[CollectorResult]:
        started = time.perf_counter()
        futures = {
            name: asyncio.wrap_future(self._submit(name, c)) for name, c in collectors.items()
        }
        if futures:
            await asyncio.wait(futures.values(), timeout=deadline_seconds)
        elapsed = time.perf_counter() - started
        return [
            self._result(name, future, elapsed, deadline_seconds)
            for name, future in futures.items()
        ]

    @staticmethod
    def _result(
        name: str, future: asyncio.Future[_Timed], elapsed: float, deadline: float
    ) -> CollectorResult:
        extra = {"collector": name, "duration_seconds": round(elapsed, 3)}
        if not future.done():
            # Detach: the thread goes on, and its late result is not wanted.
            future.cancel()
            log.warning("collector missed the scrape deadline of %.2fs", deadline, extra=extra)
            return CollectorResult(name, False, elapsed, [])
        busy = future.exception()
        if busy is not None:
            log.warning("collector skipped: %s", busy, extra=extra)
            return CollectorResult(name, False, 0.0, [])
        families, error, duration = future.result()
        if error is not None:
            extra["duration_seconds"] = round(duration, 3)
            # The traceback only at debug: a broken device would flood the log at info.
            traceback = error if log.isEnabledFor(logging.DEBUG) else None
            log.warning("collector failed: %s", error, extra=extra, exc_info=traceback)
            return CollectorResult(name, False, duration, [])
        return CollectorResult(name, True, duration, families)


def collector_status_families(results: list[CollectorResult]) -> list[Metric]:
    success = GaugeMetricFamily(
        "scout_collector_success",
        "1 if the collector succeeded on this scrape.",
        labels=["collector"],
    )
    duration = GaugeMetricFamily(
        "scout_collector_duration_seconds",
        "Seconds the collector took on this scrape.",
        labels=["collector"],
    )
    for result in results:
        success.add_metric([result.name], 1.0 if result.success else 0.0)
        duration.add_metric([result.name], result.duration_seconds)
    return [success, duration]

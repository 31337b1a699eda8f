"""The health and freshness banner every console page shows.

What it says, and where each figure comes from:

- **queue**: alerts stored and not yet folded into incidents (the store's
  backlog), with the age of the oldest;
- **return trip**: failed posts of enriched copies to Alertmanager peers
  since start (``scout_sidecar_return_trip_failures``) and copies waiting in
  the outbox (``scout_sidecar_return_trip_queue``), read from the app's
  registry, which also serves the worker process's forwarded families;
- **Prometheus**: whether it answered the last probe. A background task asks
  every :data:`PROBE_INTERVAL` (an instant query of ``vector(1)`` time-boxed to
  :data:`PROBE_TIMEOUT`), so no page view waits for Prometheus;
- **freshness**: the newest incident update, in alert time (how far the
  worker got).

The summary is kept for :data:`SUMMARY_TTL`: a burst of page views reads the
store once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import aiohttp
from aiohttp import web
from prometheus_client.metrics_core import Metric

from ai_sidecar.clock import utc_now
from ai_sidecar.components import promql_client
from ai_sidecar.console.words import N_
from ai_sidecar.keys import METRICS, SETTINGS, STORE
from ai_sidecar.promql import PromQLClient, PromQLError

PROBE_INTERVAL = 30.0
PROBE_TIMEOUT = timedelta(seconds=2)
SUMMARY_TTL = 2.0
FAILURES = "scout_sidecar_return_trip_failures"
OUTBOX = "scout_sidecar_return_trip_queue"
# Behind by more than this (oldest waiting alert), the queue is called slow.
SLOW_QUEUE = timedelta(minutes=1)

ProbeState = Literal["reachable", "unreachable", "not configured", "not probed yet"]
# The states as the banner names them, for the catalogue (the page translates them).
PROBE_STATE_NAMES = (N_("not configured"), N_("not probed yet"))


@dataclass(slots=True)
class PrometheusProbe:
    """The last answer of the background probe."""

    state: ProbeState = "not probed yet"
    detail: str = ""
    at: datetime | None = None


@dataclass(slots=True)
class _Kept:
    at: float = -1e9
    summary: dict[str, Any] | None = None


PROBE = web.AppKey("console_prometheus_probe", PrometheusProbe)
_KEPT = web.AppKey("console_health_kept", _Kept)


def family_total(families: Iterable[Metric], name: str) -> float:
    """The sum of a family's samples (counters: their ``_total`` samples)."""
    total = 0.0
    for family in families:
        if family.name == name:
            total += sum(
                s.value for s in family.samples if not s.name.endswith(("_created", "_gsum"))
            )
    return total


async def why_prometheus_is_down(client: PromQLClient, at: datetime) -> str | None:
    """None when Prometheus answers a trivial query within :data:`PROBE_TIMEOUT`, else
    why not (cut short). The banner's probe, and ``scout-sidecar report``'s before a report."""
    try:
        await client.instant("vector(1)", at, time_box=PROBE_TIMEOUT)
    except PromQLError as exc:
        return str(exc)[:200]
    return None


async def probe_prometheus(app: web.Application, session: aiohttp.ClientSession) -> None:
    """Ask Prometheus once and keep what it said in ``app[PROBE]``."""
    client = promql_client(app[SETTINGS], session)
    probe = app[PROBE]
    probe.at = utc_now()
    if client is None:
        probe.state, probe.detail = "not configured", "SCOUT_PROMETHEUS_URL is not set"
        return
    why = await why_prometheus_is_down(client, probe.at)
    probe.state, probe.detail = ("reachable", "") if why is None else ("unreachable", why)


def setup_health(app: web.Application) -> None:
    """Start the Prometheus probe with the app."""
    app[PROBE] = PrometheusProbe()
    app[_KEPT] = _Kept()

    async def probing(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as session:

            async def loop() -> None:
                while True:
                    await probe_prometheus(app, session)
                    await asyncio.sleep(PROBE_INTERVAL)

            task = asyncio.create_task(loop())
            yield
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app.cleanup_ctx.append(probing)


async def health_summary(app: web.Application) -> dict[str, Any] | None:
    """What the banner shows (see the module docstring); None before the pages are set up."""
    kept = app.get(_KEPT)
    if kept is None:
        return None
    now = time.monotonic()
    if kept.summary is not None and now - kept.at < SUMMARY_TTL:
        return kept.summary
    store = app[STORE]
    backlog = await store.backlog()
    latest = await store.latest_update()
    families = list(app[METRICS].registry.collect())
    probe = app[PROBE]
    current = utc_now()
    waiting = None if backlog.oldest_received_at is None else current - backlog.oldest_received_at
    summary: dict[str, Any] = {
        "queue_depth": backlog.depth,
        "queue_slow": waiting is not None and waiting > SLOW_QUEUE,
        "return_trip_failures": int(family_total(families, FAILURES)),
        "return_trip_queue": int(family_total(families, OUTBOX)),
        "prometheus": probe.state,
        "prometheus_detail": probe.detail,
        # Times and durations, which the page writes in its language.
        "queue_waited": waiting,
        "latest": latest,
        "latest_waited": None if latest is None else max(current - latest, timedelta(0)),
    }
    kept.at, kept.summary = now, summary
    return summary

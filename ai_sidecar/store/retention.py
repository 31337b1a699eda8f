"""Retention: what is older than the configured age leaves the store, so it stops growing.

The worker process runs :func:`prune_forever` next to its other loops. Each
round asks the store to :meth:`~ai_sidecar.store.protocol.Store.prune` (and
:meth:`~ai_sidecar.store.protocol.Store.prune_llm_exchanges`, on the LLM
audit's own retention) in small batches (short transactions: the webhook's
writes slip in between) and counts the removed rows in
``scout_sidecar_store_pruned_rows_total``. The first round comes one interval
after start-up, so a restart under load catches up on its backlog first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from prometheus_client import Counter

from ai_sidecar.clock import utc_now
from ai_sidecar.store.protocol import PruneResult, Store

log = logging.getLogger("ai_sidecar.store.retention")

PRUNE_INTERVAL = timedelta(hours=1)
# Rows per transaction: a few milliseconds of write lock each.
PRUNE_BATCH = 500


async def prune_rows_in_batches(rows_batch: Callable[[], Awaitable[int]], batch: int) -> int:
    """Run ``rows_batch`` (one short transaction deleting at most ``batch`` rows) until
    a batch comes back short; how many rows went in all."""
    total = 0
    while True:
        done = await rows_batch()
        total += done
        if done < batch:
            return total
        # A write of the inline SQLite engine does not yield: let other tasks run.
        await asyncio.sleep(0)


async def prune_in_batches(
    alerts_batch: Callable[[], Awaitable[int]],
    incidents_batch: Callable[[], Awaitable[PruneResult]],
    batch: int,
) -> PruneResult:
    """What every store's :meth:`~ai_sidecar.store.protocol.Store.prune` does: old alerts,
    then resolved incidents, one short transaction of at most ``batch`` rows at a time,
    until a batch comes back short."""
    total = PruneResult(alerts=await prune_rows_in_batches(alerts_batch, batch))
    while True:
        done = await incidents_batch()
        total += done
        if done.incidents < batch:
            break
        await asyncio.sleep(0)
    return total


async def prune_once(
    store: Store,
    retention: timedelta,
    pruned: Counter,
    *,
    audit_retention: timedelta | None = None,
    batch: int = PRUNE_BATCH,
    clock: Callable[[], datetime] = utc_now,
) -> PruneResult:
    """Prune what is older than ``retention`` now, and LLM exchanges older than
    ``audit_retention`` (kept when None), and count it in ``pruned`` by kind."""
    now = clock()
    result = await store.prune(now - retention, batch)
    if audit_retention is not None:
        exchanges = await store.prune_llm_exchanges(now - audit_retention, batch)
        result += PruneResult(llm_exchanges=exchanges)
    for kind, rows in result.counts().items():
        if rows:
            pruned.labels(kind).inc(rows)
    if any(result.counts().values()):
        log.info("pruned rows older than the retention", extra=result.counts())
    return result


async def prune_forever(
    store: Store,
    retention: timedelta,
    pruned: Counter,
    *,
    audit_retention: timedelta | None = None,
    interval: timedelta = PRUNE_INTERVAL,
    batch: int = PRUNE_BATCH,
) -> None:
    """Every ``interval``, prune what is older than ``retention`` (LLM exchanges: than
    ``audit_retention``); runs until cancelled."""
    while True:
        await asyncio.sleep(interval.total_seconds())
        await prune_once(store, retention, pruned, audit_retention=audit_retention, batch=batch)

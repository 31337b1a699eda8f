"""The retention loop: it prunes on its interval and counts what went."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

import pytest

from ai_sidecar.metrics import SidecarMetrics, create_metrics
from ai_sidecar.store import PruneResult, Store
from ai_sidecar.store.retention import prune_forever, prune_once
from tests.ai_sidecar.builders import T0, alert, stored_incident
from tests.ai_sidecar.exchanges import exchange

RETENTION = timedelta(days=30)
NOW = T0 + timedelta(days=45)


def pruned(metrics: SidecarMetrics, kind: str) -> float:
    value = metrics.registry.get_sample_value(
        "scout_sidecar_store_pruned_rows_total", {"kind": kind}
    )
    return value or 0.0


async def fill(store: Store) -> None:
    """Two processed alerts and a resolved incident, all 45 days old, and one fresh alert."""
    await store.ingest([alert("InterfaceDown", instance=f"old{i}") for i in range(2)], T0)
    [*_, last] = await store.pending(10)
    old = stored_incident("inc-old", status="resolved", resolved_at=T0, updated_at=T0)
    await store.save_progress(last.seq, [old])
    await store.ingest([alert("InterfaceDown", instance="fresh")], NOW)


async def test_prune_once_counts_pruned_rows_by_kind(store: Store) -> None:
    await fill(store)
    metrics = create_metrics()

    result = await prune_once(store, RETENTION, metrics.store_pruned, batch=1, clock=lambda: NOW)

    assert result == PruneResult(alerts=2, incidents=1, members=1)
    assert (pruned(metrics, "alerts"), pruned(metrics, "incidents")) == (2, 1)
    assert pruned(metrics, "members") == 1
    assert pruned(metrics, "feedback") == 0
    assert await store.alert_count() == 1
    assert await store.incident_ids() == []


async def test_prune_once_prunes_llm_exchanges_on_the_audit_retention(store: Store) -> None:
    await fill(store)
    for age in (timedelta(days=100), timedelta(days=80), timedelta(days=10)):
        await store.record_llm_exchange(exchange("inc-old", NOW - age))
    metrics = create_metrics()

    result = await prune_once(
        store,
        RETENTION,
        metrics.store_pruned,
        audit_retention=timedelta(days=90),
        batch=1,
        clock=lambda: NOW,
    )

    assert result == PruneResult(alerts=2, incidents=1, members=1, llm_exchanges=1)
    assert pruned(metrics, "llm_exchanges") == 1
    assert [e.at for e in await store.llm_exchanges()] == [
        NOW - timedelta(days=80),
        NOW - timedelta(days=10),
    ]
    # Without an audit retention the audit is left alone.
    await prune_once(store, timedelta(days=1), metrics.store_pruned, batch=1, clock=lambda: NOW)
    assert len(await store.llm_exchanges()) == 2


async def test_prune_forever_prunes_every_interval(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await fill(store)
    await store.record_llm_exchange(exchange("inc-old", T0))
    metrics = create_metrics()
    rounds: asyncio.Queue[PruneResult] = asyncio.Queue()
    prune = store.prune

    async def counted(older_than: datetime, batch: int) -> PruneResult:
        result = await prune(older_than, batch)
        rounds.put_nowait(result)
        return result

    monkeypatch.setattr(store, "prune", counted)
    # The builders' times lie weeks before the wall clock, except NOW: a day's
    # retention prunes the old rows and keeps the fresh alert.
    loop = asyncio.create_task(
        prune_forever(
            store,
            timedelta(days=1),
            metrics.store_pruned,
            audit_retention=timedelta(days=1),
            interval=timedelta(milliseconds=20),
        )
    )
    try:
        async with asyncio.timeout(10):
            first = await rounds.get()
            second = await rounds.get()
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
    assert first == PruneResult(alerts=2, incidents=1, members=1)
    assert second == PruneResult()
    assert await store.incident_ids() == []
    assert await store.alert_count() == 1
    assert pruned(metrics, "alerts") == 2
    # The first round's audit pruning ran before the second round began.
    assert await store.llm_exchanges() == []
    assert pruned(metrics, "llm_exchanges") == 1

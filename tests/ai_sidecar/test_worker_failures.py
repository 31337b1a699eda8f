"""The worker never drops work: forgotten incidents, a busy or full store, failing incidents.

Each test drives the worker the way the pipeline does (its loops restarted by
``_run_forever`` on a crash) and checks that every incident is analysed and
every enriched copy queued once the trouble is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import pytest

import ai_sidecar.failures as failures_module
import ai_sidecar.store.sqlite.transactions as sqlite_transactions
from ai_sidecar.components import Components
from ai_sidecar.config import SidecarConfig
from ai_sidecar.enrichment.base import IncidentContext
from ai_sidecar.enrichment.chain import AnalystChain
from ai_sidecar.enrichment.local import LocalAnalyst
from ai_sidecar.metrics import SidecarMetrics, create_metrics
from ai_sidecar.models import Analysis, Incident
from ai_sidecar.notify import ReturnTrip
from ai_sidecar.pipeline import _run_forever, return_trip_policy
from ai_sidecar.priority import NoAnomalyEvidence
from ai_sidecar.settings import SidecarSettings
from ai_sidecar.store import SqliteStore, Store, StoreError
from ai_sidecar.worker import IncidentSink, Worker
from tests.ai_sidecar.builders import T0, OfflineContext, alert
from tests.ai_sidecar.test_worker import RecordingSink

SITES = 12
PEER = "http://127.0.0.1:9"  # never posted to: the tests read the outbox


class Clock:
    """Alert time the test moves forward."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class GatedAnalyst:
    """Holds every analysis until the test opens the gate; counts the ones waiting."""

    name = "gated"

    def __init__(self) -> None:
        self.waiting = 0
        self.gate = asyncio.Event()

    async def analyse(self, incident: Incident, context: IncidentContext) -> Analysis:
        self.waiting += 1
        await self.gate.wait()
        return Analysis(f"{len(incident.members)} alerts", "x", "y", (), 0.5, 0.1)


class SlowAnalyst:
    """Takes a while per incident, as an LLM would: analyses queue for their slots."""

    name = "slow"

    async def analyse(self, incident: Incident, context: IncidentContext) -> Analysis:
        await asyncio.sleep(0.02)
        return Analysis(f"{len(incident.members)} alerts", "x", "y", (), 0.5, 0.1)


def build_worker(
    db: Store,
    sink: IncidentSink,
    metrics: SidecarMetrics,
    *,
    clock: Callable[[], datetime] = lambda: T0 + timedelta(minutes=2),
    analyst: GatedAnalyst | SlowAnalyst | None = None,
    wakeup: asyncio.Event | None = None,
) -> Worker:
    config = SidecarConfig()
    chain = AnalystChain(
        fallback=LocalAnalyst(config.runbooks), preferred=() if analyst is None else (analyst,)
    )
    return Worker(
        db,
        config,
        Components(chain, OfflineContext(), NoAnomalyEvidence()),
        sink,
        metrics.worker,
        wakeup or asyncio.Event(),
        clock=clock,
    )


def storm(sites: int = SITES, per_site: int = 5) -> list[Any]:
    """An outage per site: a link down and the probes behind it (one incident each).

    Every device has a name of its own: alerts on one device join one incident
    across sites.
    """
    alerts = []
    for site in range(sites):
        alerts.append(
            alert("LinkDown", severity="critical", site=f"s{site}", instance=f"rtr-{site}")
        )
        alerts.extend(
            alert("ProbeFailed", at=timedelta(seconds=2), site=f"s{site}", instance=f"h{site}-{i}")
            for i in range(per_site - 1)
        )
    return alerts


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[None]:
    """Both loops, restarted on a crash as the pipeline does."""
    tasks = [
        asyncio.create_task(_run_forever("correlate", worker.correlate_forever)),
        asyncio.create_task(_run_forever("analyse", worker.analyse_forever)),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def eventually(check: Callable[[], Awaitable[bool] | bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        outcome = check()
        if await outcome if inspect.isawaitable(outcome) else outcome:
            return
        assert loop.time() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.05)


async def all_enriched(db: Store, expected_members: int) -> bool:
    """Every incident analysed for its latest version, every member's copy queued."""
    incidents = await db.list_incidents(limit=1000)
    if sum(len(i.members) for i in incidents) != expected_members:
        return False
    if any(i.analysis is None or i.needs_analysis for i in incidents):
        return False
    queued = {row.member for row in await db.list_posts() if row.state == "firing"}
    return all(member in queued for i in incidents for member in i.members)


def fail_calls(
    monkeypatch: pytest.MonkeyPatch, db: Store, verb: str, times: int, message: str
) -> list[int]:
    """Make ``db.<verb>`` raise StoreError(``message``) for its first ``times`` calls."""
    real = getattr(db, verb)
    calls = [0]

    async def failing(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] <= times:
            raise StoreError(message)
        return await real(*args, **kwargs)

    monkeypatch.setattr(db, verb, failing)
    return calls


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Store retries in tens of milliseconds, so a test sees many of them."""
    monkeypatch.setattr(failures_module, "STORE_RETRY_FIRST", 0.02)
    monkeypatch.setattr(failures_module, "STORE_RETRY_MAX", 0.1)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def return_trip(db: Store, metrics: SidecarMetrics, session: aiohttp.ClientSession) -> ReturnTrip:
    """The real return trip, never run: schedule() writes the outbox the tests read."""
    settings = SidecarSettings(webhook_token="t" * 32, alertmanager_urls=(PEER,))

    async def take_in(alerts: Sequence[Any]) -> None:
        raise AssertionError("reconciliation does not run in these tests")

    policy = return_trip_policy(SidecarConfig(), settings)
    return ReturnTrip(db, settings.alertmanager_urls, policy, metrics, session, take_in=take_in)


async def test_an_incident_forgotten_during_an_analysis_stops_no_other(tmp_path):
    # Four incidents being analysed fill the worker's slots; a fifth, resolved
    # long ago in alert time, waits for a slot. Meanwhile correlation moves
    # past the flap window (a backlog spanning more than 15 minutes) and
    # would forget the resolved one.
    db = await SqliteStore.open(tmp_path / "scout.db")
    clock = Clock(T0 + timedelta(minutes=2))
    analyst = GatedAnalyst()
    sink = RecordingSink()
    worker = build_worker(db, sink, create_metrics(), clock=clock, analyst=analyst)
    await worker.start()
    # One device per site: alerts on one device join one incident across sites.
    open_ones = [alert("DeviceDown", site=f"s{i}", instance=f"r{i}") for i in range(4)]
    flapped = alert("DeviceDown", site="old", instance="r9")
    resolved = alert(
        "DeviceDown", status="resolved", ends=timedelta(minutes=1), site="old", instance="r9"
    )
    await db.ingest([*open_ones, flapped, resolved], T0)
    await worker.correlate_once()
    analysing = asyncio.create_task(worker.analyse_pending())
    await eventually(lambda: analyst.waiting == 4, "four analyses waiting")

    clock.now = T0 + timedelta(minutes=30)
    later = alert("DeviceDown", at=timedelta(minutes=30), site="new", instance="r5")
    await db.ingest([later], clock.now)
    await worker.correlate_once()
    analyst.gate.set()
    assert await asyncio.wait_for(analysing, 30) == 5

    saved = {i.group["site"]: i for i in await db.list_incidents()}
    for site in ("s0", "s1", "s2", "s3", "old"):
        assert saved[site].analysis is not None, site
        assert not saved[site].needs_analysis, site
    assert saved["old"].status == "resolved"
    # Analysis goes on: the incident that arrived meanwhile is analysed next.
    assert await worker.analyse_pending() == 1
    assert {i.group["site"] for i in sink.scheduled} == {"s0", "s1", "s2", "s3", "old", "new"}
    await db.close()


def test_a_forgotten_key_is_no_longer_failing_and_fails_anew(caplog):
    failure_log = failures_module.FailureLog(logging.getLogger("test.failures"))
    caplog.set_level(logging.INFO, logger="test.failures")
    for _ in range(3):
        failure_log.failed("incident-1", "analyse", ValueError("bug"))
    assert "incident-1" in failure_log
    failure_log.forget("incident-1")
    assert "incident-1" not in failure_log
    failure_log.recovered("incident-1")  # nothing to say: it was forgotten
    assert failure_log.failed("incident-1", "analyse", ValueError("bug")) == 1
    assert [r.getMessage() for r in caplog.records] == [
        "an incident is failing; its work is kept and retried",
        "an incident is failing; its work is kept and retried",
    ]


async def test_an_incident_forgotten_by_correlation_leaves_the_failure_log(tmp_path):
    db = await SqliteStore.open(tmp_path / "scout.db")
    clock = Clock(T0 + timedelta(minutes=2))
    worker = build_worker(db, RecordingSink(), create_metrics(), clock=clock)
    await worker.start()
    firing = alert("DeviceDown", site="old", instance="r9")
    resolved = alert(
        "DeviceDown", status="resolved", ends=timedelta(minutes=1), site="old", instance="r9"
    )
    await db.ingest([firing, resolved], T0)
    await worker.correlate_once()
    assert await worker.analyse_pending() == 1
    (old,) = await db.list_incidents()
    # It failed once (say its return trip could not be scheduled) and was
    # then resolved and done with: nothing more will report its recovery.
    worker._failure_log.failed(old.id, "return_trip", ValueError("bug"))

    clock.now = T0 + timedelta(minutes=30)
    later = alert("DeviceDown", at=timedelta(minutes=30), site="new", instance="r5")
    await db.ingest([later], clock.now)
    await worker.correlate_once()
    assert old.id not in worker._failure_log
    await db.close()


async def test_a_backlog_spanning_the_flap_window_is_all_analysed(tmp_path):
    # Two hours of ordinary background alerts, each resolved a minute later,
    # arriving as a backlog while the loops fold and analyse it: analyses
    # waiting for a slot belong to incidents that later batches push out of
    # the flap window.
    db = await SqliteStore.open(tmp_path / "scout.db")
    clock = Clock(T0 + timedelta(hours=3))
    sink = RecordingSink()
    wakeup = asyncio.Event()
    worker = build_worker(
        db, sink, create_metrics(), clock=clock, analyst=SlowAnalyst(), wakeup=wakeup
    )
    await worker.start()
    backlog = []
    for minute in range(0, 120, 2):
        at, ends = timedelta(minutes=minute), timedelta(minutes=minute + 1)
        labels = {"site": f"m{minute}", "instance": "r1"}
        backlog.append(alert("DeviceDown", at=at, **labels))
        backlog.append(alert("DeviceDown", status="resolved", at=at, ends=ends, **labels))
    backlog.append(alert("DeviceDown", at=timedelta(minutes=121), site="open", instance="r2"))

    async def every_incident_analysed() -> bool:
        incidents = await db.list_incidents(limit=1000)
        return len(incidents) == 61 and all(i.analysis is not None for i in incidents)

    async with running(worker):
        for start in range(0, len(backlog), 6):
            await db.ingest(backlog[start : start + 6], T0)
            wakeup.set()
            await asyncio.sleep(0.03)
        await eventually(every_incident_analysed, "every incident of the backlog analysed")
    assert "open" in {i.group.get("site") for i in sink.scheduled}
    await db.close()


async def test_a_write_lock_held_by_another_process_delays_but_loses_nothing(
    tmp_path, monkeypatch, session
):
    # Another process (a backup, the sqlite3 shell) holds the write lock for
    # a while during a storm: every write of the worker times out meanwhile.
    monkeypatch.setattr(sqlite_transactions, "WRITE_LOCK_TIMEOUT", 0.2)
    monkeypatch.setattr(failures_module, "STORE_RETRY_MAX", 0.5)
    path = tmp_path / "scout.db"
    db = await SqliteStore.open(path, inline=True)
    metrics = create_metrics()
    worker = build_worker(db, return_trip(db, metrics, session), metrics)
    await worker.start()
    alerts = storm()
    await db.ingest(alerts, T0)
    assert await worker.correlate_once() == len(alerts)

    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    async with running(worker):
        await asyncio.sleep(2.0)
        assert await db.list_posts() == [], "nothing can be written while the lock is held"
        other.execute("ROLLBACK")
        other.close()
        await eventually(lambda: all_enriched(db, len(alerts)), "every incident enriched")
    failures = metrics.registry.get_sample_value(
        "scout_sidecar_worker_failures_total", {"stage": "return_trip"}
    )
    assert failures is not None
    assert failures >= 1
    await db.close()


@pytest.mark.parametrize(
    ("verb", "stage", "message"),
    [
        # The analysis's writes: the return trip's outbox, then the incident.
        ("enqueue_posts", "return_trip", "cannot use the store: database is locked"),
        ("save_incidents", "save", "cannot use the store: database or disk is full"),
        # Correlation's: its incidents, then the cursor.
        ("save_progress", "correlate", "cannot use the store: database or disk is full"),
    ],
)
async def test_a_store_failing_for_a_while_loses_no_enrichment(
    tmp_path, monkeypatch, fast_retries, session, verb, stage, message
):
    db = await SqliteStore.open(tmp_path / "scout.db")
    metrics = create_metrics()
    worker = build_worker(db, return_trip(db, metrics, session), metrics)
    await worker.start()
    alerts = storm()
    await db.ingest(alerts, T0)
    if stage != "correlate":
        assert await worker.correlate_once() == len(alerts)
    calls = fail_calls(monkeypatch, db, verb, 5, message)

    async def done() -> bool:
        return (
            calls[0] > 5 and (await db.backlog()).depth == 0 and await all_enriched(db, len(alerts))
        )

    async with running(worker):
        await eventually(done, "every incident enriched")
    failures = {
        name: metrics.registry.get_sample_value(
            "scout_sidecar_worker_failures_total", {"stage": name}
        )
        or 0.0
        for name in ("correlate", "analyse", "return_trip", "save")
    }
    assert failures == {name: 5.0 if name == stage else 0.0 for name in failures}
    await db.close()


async def test_a_failing_store_is_logged_once_not_per_retry(
    tmp_path, monkeypatch, fast_retries, caplog
):
    db = await SqliteStore.open(tmp_path / "scout.db")
    metrics = create_metrics()
    sink = RecordingSink()
    worker = build_worker(db, sink, metrics)
    await worker.start()
    await db.ingest(storm(sites=3), T0)
    await worker.correlate_once()
    calls = fail_calls(monkeypatch, db, "save_incidents", 30, "database or disk is full")
    with caplog.at_level(logging.INFO):
        async with running(worker):
            await eventually(lambda: calls[0] > 30, "the store works again")
            await eventually(lambda: "the store works again" in caplog.text, "recovery logged")
    records = [r for r in caplog.records if r.name.startswith("ai_sidecar")]
    warnings = [r for r in records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "the store is failing; its work is kept and retried"
    ]
    assert warnings[0].exc_info is None, "a full disk is no bug: no traceback"
    assert [r.getMessage() for r in records].count("the store works again") == 1
    assert (
        metrics.registry.get_sample_value("scout_sidecar_worker_failures_total", {"stage": "save"})
        == 30
    )
    await db.close()


class BrokenIncidentSink:
    """A return trip that fails (a bug, not the store) on one incident only."""

    def __init__(self, broken_site: str) -> None:
        self.broken_site = broken_site
        self.scheduled: list[Incident] = []

    async def schedule(self, incidents: Sequence[Incident]) -> None:
        if any(i.group.get("site") == self.broken_site for i in incidents):
            raise ValueError("cannot render this incident")
        self.scheduled.extend(incidents)


async def test_one_incident_that_cannot_be_stored_holds_up_no_other(tmp_path):
    db = await SqliteStore.open(tmp_path / "scout.db")
    metrics = create_metrics()
    sink = BrokenIncidentSink("s3")
    worker = build_worker(db, sink, metrics)
    await worker.start()
    await db.ingest(storm(sites=6), T0)
    await worker.correlate_once()
    assert await worker.analyse_pending() == 5
    assert {i.group["site"] for i in sink.scheduled} == {"s0", "s1", "s2", "s4", "s5"}
    # The broken one is still owed, and retried (later after each failure).
    assert await worker.analyse_pending() == 0
    sink.broken_site = "none"
    assert await worker.analyse_pending() == 1
    assert sink.scheduled[-1].group["site"] == "s3"
    assert (
        metrics.registry.get_sample_value(
            "scout_sidecar_worker_failures_total", {"stage": "return_trip"}
        )
        == 2
    )
    await db.close()


async def test_the_return_trip_waits_out_a_failing_store_with_one_warning(
    tmp_path, monkeypatch, fast_retries, session, caplog
):
    db = await SqliteStore.open(tmp_path / "scout.db")
    metrics = create_metrics()
    trip = return_trip(db, metrics, session)
    calls = fail_calls(monkeypatch, db, "sync_outbox_peers", 20, "database is locked")
    with caplog.at_level(logging.INFO, logger="ai_sidecar"):
        task = asyncio.create_task(trip.run())
        try:
            await eventually(lambda: calls[0] > 20, "the outbox read again")
            await eventually(lambda: "the store works again" in caplog.text, "recovery logged")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    store_records = [r for r in caplog.records if "store" in r.getMessage()]
    assert [r.getMessage() for r in store_records] == [
        "the store is failing; its work is kept and retried",
        "the store works again",
    ]
    assert all(r.exc_info is None for r in caplog.records), "no traceback for a busy store"
    assert (
        metrics.registry.get_sample_value("scout_sidecar_worker_failures_total", {"stage": "post"})
        == 20
    )
    await db.close()

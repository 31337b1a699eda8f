"""The worker: stored alerts in, prioritised and analysed incidents out, across restarts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest

from ai_sidecar.components import Components
from ai_sidecar.config import SidecarConfig
from ai_sidecar.enrichment.base import PENDING, Analyst, AnalystDeclined, IncidentContext
from ai_sidecar.enrichment.chain import AnalystChain
from ai_sidecar.enrichment.local import LocalAnalyst
from ai_sidecar.metrics import SidecarMetrics, create_metrics
from ai_sidecar.models import (
    Analysis,
    AnomalyEvidence,
    Incident,
    SkippedAnalyst,
    notified_priority,
)
from ai_sidecar.priority import AnomalyEvidenceSource, NoAnomalyEvidence
from ai_sidecar.store import SqliteStore, Store
from ai_sidecar.worker import Worker
from tests.ai_sidecar.builders import T0, FailingAnalyst, OfflineContext, alert


class RecordingSink:
    """The return trip's seam: records what would be posted back."""

    def __init__(self) -> None:
        self.scheduled: list[Incident] = []

    async def schedule(self, incidents: Sequence[Incident]) -> None:
        self.scheduled.extend(incidents)


class GatedAnalyst:
    """An analyst that waits for the test to let it finish."""

    name = "gated"

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def analyse(self, incident: Incident, context: IncidentContext) -> Analysis:
        self.started.set()
        await self.release.wait()
        return Analysis(f"{len(incident.members)} alerts", "x", "y", (), 0.5, 0.1)


class StuckAnalyst:
    name = "stuck"

    async def analyse(self, incident: Incident, context: IncidentContext) -> Analysis:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


class DecliningAnalyst:
    """An LLM analyst whose policy says the call does not pay."""

    name = "llm"

    def __init__(self) -> None:
        self.asked = 0

    async def analyse(self, incident: Incident, context: IncidentContext) -> Analysis:
        self.asked += 1
        raise AnalystDeclined("budget", "200 requests per day reached")


class DeferringAnalyst:
    """An LLM analyst that defers its first ``declines`` answers with ``reason``: a
    root cause still moving (``settling``), or a call on its way (``pending``)."""

    name = "llm"

    def __init__(self, retry_after: float, reason: str = "settling", declines: int = 1) -> None:
        self.retry_after = retry_after
        self.reason = reason
        self.declines = declines
        self.asked = 0

    async def analyse(self, incident: Incident, context: IncidentContext) -> Analysis:
        self.asked += 1
        if self.asked <= self.declines:
            raise AnalystDeclined(self.reason, "asked again soon", retry_after=self.retry_after)
        return Analysis("llm analysis", "x", "y", (), 0.5, 0.1)


def pending_analyst() -> DeferringAnalyst:
    """An LLM analyst whose answer comes in the background: pending twice, then the answer."""
    return DeferringAnalyst(0.0, PENDING, declines=2)


class SettableEvidence:
    """An anomaly evidence source that answers what the test last set."""

    def __init__(self) -> None:
        self.found: tuple[AnomalyEvidence, ...] = ()

    async def evidence(self, incident: Incident) -> Sequence[AnomalyEvidence]:
        return self.found


def make_worker(
    db: Store,
    analyst: Analyst | None = None,
    config: SidecarConfig | None = None,
    metrics: SidecarMetrics | None = None,
    analysis_timeout: float | None = None,
    fallback: Analyst | None = None,
    anomaly: AnomalyEvidenceSource | None = None,
) -> tuple[Worker, RecordingSink, SidecarMetrics]:
    """A worker whose chain is ``analyst`` (if any) before ``fallback`` (the local one)."""
    config = config or SidecarConfig()
    sink = RecordingSink()
    metrics = metrics or create_metrics()
    chain = AnalystChain(
        fallback=fallback or LocalAnalyst(config.runbooks),
        preferred=() if analyst is None else (analyst,),
    )
    worker = Worker(
        db,
        config,
        Components(chain, OfflineContext(), anomaly or NoAnomalyEvidence()),
        sink,
        metrics.worker,
        asyncio.Event(),
        clock=lambda: T0 + timedelta(minutes=2),
        analysis_timeout=analysis_timeout,
    )
    return worker, sink, metrics


def sample(metrics: SidecarMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


async def open_db(path: Path) -> Store:
    return await SqliteStore.open(path / "scout.db")


async def test_a_restart_analyses_what_the_crash_left_unanalysed(tmp_path):
    db = await open_db(tmp_path)
    link = alert("InterfaceDown", severity="critical", site="ams", instance="core1")
    probe = alert("ProbeLoss", at=timedelta(seconds=5), site="ams", instance="srv1")
    await db.ingest([link, probe], T0)
    worker, sink, _ = make_worker(db)
    await worker.start()
    assert await worker.correlate_once() == 2
    # The process dies here: correlated and saved, but never analysed or sent back.
    await db.close()

    db = await open_db(tmp_path)
    worker, sink, _ = make_worker(db)
    await worker.start()
    assert await worker.correlate_once() == 0, "the cursor survived the restart"
    assert await worker.analyse_pending() == 1
    [scheduled] = sink.scheduled
    assert set(scheduled.members) == {link.fingerprint, probe.fingerprint}
    assert scheduled.analysis is not None
    [saved] = await db.list_incidents()
    assert saved.analysis == scheduled.analysis

    # Analysed and saved: a further restart has nothing left to do.
    await db.close()
    db = await open_db(tmp_path)
    worker, sink, _ = make_worker(db)
    await worker.start()
    assert await worker.analyse_pending() == 0
    assert sink.scheduled == []
    await db.close()


@pytest.mark.parametrize("owed", [pending_analyst(), DeferringAnalyst(retry_after=60.0)])
async def test_a_restart_asks_again_for_an_answer_owed_when_it_stopped(tmp_path, owed):
    db = await open_db(tmp_path)
    worker, sink, _ = make_worker(db, owed)
    await worker.start()
    await db.ingest([alert("DeviceDown", instance="r1")], T0)
    await worker.correlate_once()
    assert await worker.analyse_pending() == 1
    assert [i.analyst for i in sink.scheduled] == ["local"]
    # The process stops with the LLM's answer still owed (a call in flight, or
    # deferred): the local analysis is stored, the answer is not.
    await db.close()

    db = await open_db(tmp_path)
    worker, sink, _ = make_worker(db, DeferringAnalyst(0.0, declines=0))
    await worker.start()
    assert await worker.analyse_pending() == 1
    [saved] = await db.list_incidents()
    assert saved.analyst == "llm"
    assert not saved.needs_analysis
    await db.close()


async def test_a_member_added_during_analysis_is_not_lost(tmp_path):
    db = await open_db(tmp_path)
    analyst = GatedAnalyst()
    worker, sink, _ = make_worker(db, analyst)
    await worker.start()
    first = alert("DeviceDown", site="ams", instance="r1")
    await db.ingest([first], T0)
    await worker.correlate_once()
    analysing = asyncio.create_task(worker.analyse_pending())
    await analyst.started.wait()

    second = alert("ProbeLoss", at=timedelta(seconds=3), site="ams", instance="srv9")
    await db.ingest([second], T0)
    await worker.correlate_once()
    analyst.release.set()
    await analysing

    [saved] = await db.list_incidents()
    assert set(saved.members) == {first.fingerprint, second.fingerprint}
    assert saved.analysis is not None
    assert saved.analysis.summary == "1 alerts"
    # The newer version is queued for its own analysis.
    assert await worker.analyse_pending() == 1
    [saved] = await db.list_incidents()
    assert saved.analysis is not None
    assert saved.analysis.summary == "2 alerts"
    assert [len(i.members) for i in sink.scheduled] == [1, 2]
    await db.close()


@pytest.mark.parametrize(
    ("analyst", "reason", "detail"),
    [
        (FailingAnalyst(), "error", "RuntimeError (details in the sidecar's log)"),
        (StuckAnalyst(), "timeout", "no analysis within 0.2s"),
    ],
)
async def test_a_failing_analyst_falls_back_to_the_local_analysis(
    tmp_path, analyst, reason, detail
):
    db = await open_db(tmp_path)
    worker, sink, metrics = make_worker(db, analyst, analysis_timeout=0.2)
    await worker.start()
    await db.ingest([alert("DeviceDown", instance="r1")], T0)
    await worker.correlate_once()
    assert await asyncio.wait_for(worker.analyse_pending(), 30) == 1
    [saved] = await db.list_incidents()
    assert saved.analyst == "local"
    assert saved.analysis is not None
    assert saved.analysis.summary.startswith("Open incident for instance=r1")
    assert saved.skipped_analysts == (SkippedAnalyst(analyst.name, reason, detail),)
    assert [i.analyst for i in sink.scheduled] == ["local"]
    assert sample(metrics, "scout_sidecar_analysis_failures_total", analyst=analyst.name) == 1
    assert (
        sample(
            metrics, "scout_sidecar_analysis_fallbacks_total", analyst=analyst.name, reason=reason
        )
        == 1
    )
    # The preferred analyst is asked again at the incident's next turn.
    assert await asyncio.wait_for(worker.analyse_pending(), 30) == 1
    assert sample(metrics, "scout_sidecar_analysis_failures_total", analyst=analyst.name) == 2
    await db.close()


class SlowLlmAnalyst:
    """An LLM analyst that answers within its own llm.timeout, but slower than the grace."""

    name = "gemini"

    async def analyse(self, incident: Incident, context: IncidentContext) -> Analysis:
        await asyncio.sleep(0.5)
        return Analysis("llm analysis", "x", "y", (), 0.5, 0.1)


async def test_an_llm_analyst_gets_its_own_time_box_from_llm_timeout(tmp_path, monkeypatch):
    # The default box (context timeout + grace) is shorter than llm.timeout: an LLM
    # answering within its own time box must not be cut off (its answer and audit lost).
    monkeypatch.setattr("ai_sidecar.worker.ANALYST_GRACE", 0.05)
    config = SidecarConfig.model_validate(
        {"analysis": {"context_timeout": "50ms"}, "llm": {"provider": "gemini", "timeout": "1s"}}
    )
    db = await open_db(tmp_path)
    worker, _, metrics = make_worker(db, SlowLlmAnalyst(), config=config)
    await worker.start()
    await db.ingest([alert("DeviceDown", instance="r1")], T0)
    await worker.correlate_once()
    assert await asyncio.wait_for(worker.analyse_pending(), 30) == 1
    [saved] = await db.list_incidents()
    assert (saved.analyst, saved.skipped_analysts) == ("gemini", ())
    assert sample(metrics, "scout_sidecar_analysis_failures_total", analyst="gemini") == 0
    await db.close()


async def test_a_declining_analyst_is_skipped_without_a_failure_or_a_retry(tmp_path):
    db = await open_db(tmp_path)
    declining = DecliningAnalyst()
    worker, sink, metrics = make_worker(db, declining)
    await worker.start()
    await db.ingest([alert("DeviceDown", instance="r1")], T0)
    await worker.correlate_once()
    assert await asyncio.wait_for(worker.analyse_pending(), 30) == 1
    [saved] = await db.list_incidents()
    assert saved.analyst == "local"
    assert saved.skipped_analysts == (
        SkippedAnalyst("llm", "declined", "budget: 200 requests per day reached"),
    )
    assert [i.analyst for i in sink.scheduled] == ["local"]
    assert sample(metrics, "scout_sidecar_analysis_failures_total", analyst="llm") == 0
    assert (
        sample(metrics, "scout_sidecar_analysis_fallbacks_total", analyst="llm", reason="declined")
        == 1
    )
    # Done: the incident left the to-do list, so its next turn asks nobody.
    assert await asyncio.wait_for(worker.analyse_pending(), 30) == 0
    assert declining.asked == 1
    await db.close()


async def test_a_deferred_call_is_made_at_its_turn_even_if_nothing_changes(tmp_path):
    db = await open_db(tmp_path)
    deferring = DeferringAnalyst(retry_after=60.0)
    worker, sink, metrics = make_worker(db, deferring)
    await worker.start()
    await db.ingest([alert("DeviceDown", instance="r1")], T0)
    await worker.correlate_once()
    assert await asyncio.wait_for(worker.analyse_pending(paced=True), 30) == 1
    assert [i.analyst for i in sink.scheduled] == ["local"]
    [saved] = await db.list_incidents()
    # Meanwhile the local analysis is out, and the incident stays owed, not failed.
    assert saved.analyst == "local"
    assert [s.reason for s in saved.skipped_analysts] == ["declined"]
    assert sample(metrics, "scout_sidecar_analysis_failures_total", analyst="llm") == 0
    # Its turn is the deferral's end, not the usual pace ...
    assert worker._turn(saved.id) >= time.monotonic() + 55
    assert await asyncio.wait_for(worker.analyse_pending(paced=True), 30) == 0
    # ... when the analyst speaks, and the incident is done.
    assert await asyncio.wait_for(worker.analyse_pending(), 30) == 1
    [saved] = await db.list_incidents()
    assert (saved.analyst, saved.skipped_analysts) == ("llm", ())
    assert [i.analyst for i in sink.scheduled] == ["local", "llm"]
    assert await asyncio.wait_for(worker.analyse_pending(), 30) == 0
    assert deferring.asked == 2
    await db.close()


async def test_an_answer_on_its_way_is_not_counted_as_a_fallback(tmp_path):
    db = await open_db(tmp_path)
    worker, sink, metrics = make_worker(db, pending_analyst())
    await worker.start()
    await db.ingest([alert("DeviceDown", instance="r1")], T0)
    await worker.correlate_once()
    for _ in range(3):
        assert await asyncio.wait_for(worker.analyse_pending(), 30) == 1
    assert [i.analyst for i in sink.scheduled] == ["local", "local", "llm"]
    # The model answered: no analysis fell back, however often it was polled.
    assert (
        sample(metrics, "scout_sidecar_analysis_fallbacks_total", analyst="llm", reason="declined")
        == 0
    )
    assert await asyncio.wait_for(worker.analyse_pending(), 30) == 0
    await db.close()


@pytest.mark.parametrize("analyst", [FailingAnalyst(), StuckAnalyst()])
async def test_a_failing_fallback_leaves_the_incident_unenriched(tmp_path, analyst):
    db = await open_db(tmp_path)
    worker, sink, metrics = make_worker(db, fallback=analyst, analysis_timeout=0.2)
    await worker.start()
    await db.ingest([alert("DeviceDown", instance="r1")], T0)
    await worker.correlate_once()
    assert await asyncio.wait_for(worker.analyse_pending(), 30) == 0
    [saved] = await db.list_incidents()
    assert saved.analysis is None
    assert sink.scheduled == []
    assert sample(metrics, "scout_sidecar_analysis_failures_total", analyst=analyst.name) == 1
    # Nothing comes after the fallback, so nothing counts as a fallback.
    assert (
        metrics.registry.get_sample_value(
            "scout_sidecar_analysis_fallbacks_total", {"analyst": analyst.name, "reason": "error"}
        )
        is None
    )
    await db.close()


async def test_a_preferred_analyst_that_answers_is_recorded_without_skips(tmp_path):
    db = await open_db(tmp_path)
    analyst = GatedAnalyst()
    analyst.release.set()
    worker, _, _ = make_worker(db, analyst)
    await worker.start()
    await db.ingest([alert("DeviceDown", instance="r1")], T0)
    await worker.correlate_once()
    assert await worker.analyse_pending() == 1
    [saved] = await db.list_incidents()
    assert (saved.analyst, saved.skipped_analysts) == ("gated", ())
    assert saved.analysed_version == saved.version
    await db.close()


async def test_enriched_alerts_are_never_correlated(tmp_path):
    db = await open_db(tmp_path)
    worker, _, metrics = make_worker(db)
    await worker.start()
    looped = alert("DeviceDown", instance="r1", scout_enriched="true", scout_incident="inc-x")
    await db.ingest([looped], T0)
    assert await worker.correlate_once() == 1
    assert await db.list_incidents() == []
    assert sample(metrics, "scout_sidecar_incidents_created_total") == 0
    await db.close()


async def test_metrics_follow_the_backlog_and_incidents(tmp_path):
    db = await open_db(tmp_path)
    worker, _, metrics = make_worker(db)
    await worker.start()
    await db.ingest([alert("DeviceDown", site=s, instance=f"r{s}") for s in "abc"], T0)
    await worker.correlate_once()
    assert sample(metrics, "scout_sidecar_incidents_created_total") == 3
    assert sample(metrics, "scout_sidecar_incidents_open") == 3
    assert sample(metrics, "scout_sidecar_queue_depth") == 0
    await worker.analyse_pending()
    assert sample(metrics, "scout_sidecar_analysis_duration_seconds_count", analyst="local") == 3
    await db.close()


async def test_a_storm_is_analysed_at_a_pace_not_per_batch(tmp_path):
    db = await open_db(tmp_path)
    worker, sink, _ = make_worker(db)
    await worker.start()
    analysing = asyncio.create_task(worker.analyse_forever())
    try:
        for i in range(20):
            await db.ingest(
                [alert("ProbeLoss", at=timedelta(seconds=i), site="ams", instance=f"s{i}")], T0
            )
            await worker.correlate_once()
            await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not sink.scheduled or len(sink.scheduled[-1].members) < 20:
            assert loop.time() < deadline, "the last change was never analysed"
            await asyncio.sleep(0.05)
    finally:
        analysing.cancel()
    # The first change at once, the other 19 coalesced into the next turn (or
    # two, on a machine slow enough that the storm outlasts one pace).
    sizes = [len(i.members) for i in sink.scheduled]
    assert sizes[0] == 1
    assert sizes[-1] == 20
    assert len(sizes) <= 3, sizes
    await db.close()


class FailsAfterFirst:
    """Analyses once, then fails: a later change must still reach the return trip."""

    name = "flaky"

    def __init__(self) -> None:
        self.calls = 0

    async def analyse(self, incident: Incident, context: IncidentContext) -> Analysis:
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("analyst outage")
        return Analysis("first", "x", "y", (), 0.5, 0.1)


async def analyse_then_resolve(worker: Worker, db: Store) -> None:
    """One alert analysed once, then its resolution correlated and analysed."""
    await worker.start()
    await db.ingest([alert("DeviceDown", site="ams", instance="r1")], T0)
    await worker.correlate_once()
    assert await worker.analyse_pending() == 1
    resolved = alert(
        "DeviceDown", status="resolved", ends=timedelta(minutes=1), site="ams", instance="r1"
    )
    await db.ingest([resolved], T0)
    await worker.correlate_once()
    await worker.analyse_pending()


async def test_a_resolution_goes_back_even_when_its_analysis_fails(tmp_path):
    db = await open_db(tmp_path)
    analyst = FailsAfterFirst()
    worker, sink, metrics = make_worker(db, analyst)
    await analyse_then_resolve(worker, db)
    last = sink.scheduled[-1]
    assert last.status == "resolved"
    assert last.analysis is not None
    # The preferred analyst failed: the local analysis of the resolution goes back.
    assert last.analyst == "local"
    assert last.analysis.summary.startswith("Resolved incident for site=ams")
    assert sink.scheduled[0].analysis is not None
    assert sink.scheduled[0].analysis.summary == "first"
    assert sample(metrics, "scout_sidecar_analysis_failures_total", analyst="flaky") == 1
    # Still owed a fresh analysis: it is retried, not forgotten.
    assert await worker.analyse_pending() == 1
    assert analyst.calls == 3
    await db.close()


async def test_when_the_whole_chain_fails_the_last_analysis_goes_back(tmp_path):
    # The fallback itself fails on the resolution: the copies still go back,
    # resolved, under the analysis people already saw.
    db = await open_db(tmp_path)
    worker, sink, _ = make_worker(db, fallback=FailsAfterFirst())
    await analyse_then_resolve(worker, db)
    last = sink.scheduled[-1]
    assert last.status == "resolved"
    assert last.analysis is not None
    assert last.analysis.summary == "first"
    assert last.analyst == "flaky"
    await db.close()


async def test_the_notified_priority_never_drops_while_open(tmp_path):
    db = await open_db(tmp_path)
    worker, sink, _ = make_worker(db)
    await worker.start()
    storm = [
        alert("DeviceDown", severity="critical", site="ams", instance=f"r{i}") for i in range(12)
    ]
    await db.ingest(storm, T0)
    await worker.correlate_once()
    await worker.analyse_pending()
    peak = sink.scheduled[-1].priority
    assert peak in ("P1", "P2")
    cleared = [
        alert(
            "DeviceDown",
            status="resolved",
            ends=timedelta(minutes=1),
            severity="critical",
            site="ams",
            instance=f"r{i}",
        )
        for i in range(11)
    ]
    await db.ingest(cleared, T0)
    await worker.correlate_once()
    await worker.analyse_pending()
    [incident] = await db.list_incidents()
    assert incident.status == "open"
    assert incident.priority > peak, "one critical alert left ranks lower"
    assert notified_priority(incident) == peak
    await db.close()


def wan_evidence(
    score: float, band: str, subject: str = "WAN throughput of fw-1"
) -> AnomalyEvidence:
    return AnomalyEvidence(
        subject=subject,
        score=score,
        band=band,
        labels={"signal": "wan_throughput", "instance": "fw-1", "job": "snmp"},
    )


async def test_reprioritising_saves_evidence_that_changed_and_nothing_that_did_not(
    tmp_path, monkeypatch
):
    db = await open_db(tmp_path)
    evidence = SettableEvidence()
    evidence.found = (wan_evidence(0.95, "1-2 Mbit/s"),)
    worker, sink, _ = make_worker(db, anomaly=evidence)
    await worker.start()
    await db.ingest([alert("InterfaceDown", instance="fw-1", ifName="wan0")], T0)
    await worker.correlate_once()
    await worker.analyse_pending()
    [before] = await db.list_incidents()
    assert [e.score for e in before.anomaly_evidence] == [0.95]
    posted = len(sink.scheduled)
    writes: list[int] = []
    save = db.save_incidents

    async def counted(incidents: Sequence[Incident], *, language: str) -> None:
        writes.append(len(incidents))
        await save(incidents, language=language)

    monkeypatch.setattr(db, "save_incidents", counted)
    # The same series, scored higher, its band moved: the same priority.
    evidence.found = (wan_evidence(0.97, "1-3 Mbit/s"),)
    await worker.reprioritise()
    [after] = await db.list_incidents()
    assert after.priority == before.priority
    assert after.anomaly_evidence == evidence.found
    assert any(r.startswith("anomaly score 0.97 (") for r in after.priority_reasons)
    assert "expected 1-3 Mbit/s" in " ".join(after.priority_reasons)
    assert writes == [1]
    # Nothing changed: no write. A moved score is not analysed (nor posted) again.
    await worker.reprioritise()
    assert writes == [1]
    assert await worker.analyse_pending() == 0
    assert len(sink.scheduled) == posted
    # Another series is evidence now: saved, and analysed again to name it.
    evidence.found = (*evidence.found, wan_evidence(0.9, "5-6 Mbit/s", "WAN throughput of fw-2"))
    await worker.reprioritise()
    assert writes == [1, 1]
    assert await worker.analyse_pending() == 1
    [named] = await db.list_incidents()
    assert named.analysis is not None
    assert "0.90 on WAN throughput of fw-2" in named.analysis.root_cause
    await db.close()

"""The pipeline behind the webhook: stored alerts in, explained incidents out.

Two loops share one :class:`Worker`:

- **correlate** reads stored alerts in arrival order, folds them into incidents
  (dedup and correlation happen in :class:`~ai_sidecar.correlation.Correlator`),
  prioritises what changed, saves the incidents, then moves the cursor. A
  crash before the cursor moves replays the batch, whose alerts are then
  already members (they count as duplicates); a crash after it resumes from
  the cursor. Either way each alert is in exactly one incident.
- **analyse** takes incidents marked as changed, runs the analyst chain with a
  time box per analyst, hands the result to the return trip (durably) and
  saves the analysis. When a preferred analyst fails or times out, the next
  one speaks (the local analyst last), and the preferred one is tried again
  later with backoff. Changes that arrive while an incident is being analysed
  coalesce into one more pass, so a storm of 10,000 alerts costs a few
  analyses, not 10,000.

An incident stays on the to-do list (``_dirty``) until the result of its
analysis is durably stored: in the return trip's outbox and in the store.
Each incident is analysed and stored on its own, so one that fails cannot
stop the others. When the store cannot write (another process holds its
write lock, the disk is full) both loops keep their work and try again after
a pause that doubles from 1 s to a minute; the outage is logged once when it
starts and once when it ends (:class:`~ai_sidecar.failures.FailureLog`), and
every failure is counted in ``scout_sidecar_worker_failures_total{stage}``.

An incident whose saved ``version`` is newer than the version its analysis was
made for (``Incident.analysed_version``) is analysed again after a restart,
so a kill -9 between the two loops loses no analysis. So is one whose
preferred analyst still owed its answer (a call in flight, or deferred): its
local analysis is saved with the version of the last analysis owing nothing.

What the worker works with (analysts, metric context, anomaly evidence) comes
as one :class:`~ai_sidecar.components.Components` value, built from the config.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ai_sidecar.clock import utc_now
from ai_sidecar.components import Components
from ai_sidecar.config import SidecarConfig
from ai_sidecar.correlate import learn_with
from ai_sidecar.correlation import Correlator
from ai_sidecar.enrichment.base import PENDING, AnalystDeclined, IncidentContext
from ai_sidecar.failures import RELEARN_KEY, STORE_KEY, FailureLog, Stage, retry_delay
from ai_sidecar.models import Incident, SkippedAnalyst, SkipReason, notified_priority
from ai_sidecar.priority import prioritise
from ai_sidecar.store import Store, StoreError

log = logging.getLogger("ai_sidecar.worker")

# Alerts per correlation transaction: large enough to amortise the commit,
# small enough that the webhook's group commits are never starved for long.
BATCH_SIZE = 5000
# Seconds the worker waits after a partial batch for more alerts to arrive.
LINGER = 0.1
# Alerts folded between two returns to the event loop (about 5 ms of work).
YIELD_EVERY = 200
YIELD_EVERY_INCIDENTS = 20
# Incidents per store transaction: a few milliseconds of the writer's time.
SAVE_SLICE = 25
# Analyses running at once; each may wait on Prometheus for its context.
ANALYSIS_CONCURRENCY = 4
# Priority depends on how long an incident has lasted, so open incidents are
# re-prioritised on this period even when no alert arrives.
REPRIORITISE_EVERY = 60.0
# How many members' expressions the analyst asks Prometheus about per incident:
# the root cause first, then the earliest others.
CONTEXT_MEMBERS = 3
# Seconds between two analyses of one incident while alerts keep joining it.
ANALYSIS_PACE = 2.0
# Enriched copies (members of analysed incidents) re-rendered per second, and
# how many may be spent at once: the return trip's share of a storm.
RENDER_RATE = 1000.0
RENDER_BURST = 5000.0
# A failing analysis is retried after ANALYSIS_PACE doubled per failure, up
# to this many times (2 s to about 4 min).
MAX_BACKOFF_DOUBLINGS = 7
# Seconds an analyst may take beyond the context's own time box.
ANALYST_GRACE = 10.0
# Calls an LLM analyst makes at most per analysis: the answer, and one retry
# with the validation error (each bounded by llm.timeout).
LLM_CALLS_PER_ANALYSIS = 2
# Seconds the worker lets new alerts settle after a quiet spell before it folds
# them: Alertmanager sends one delivery per group, all at the same moment, and
# alerts that land in one batch are analysed, and posted back, together.
ARRIVAL_SETTLE = 0.2


class IncidentSink(Protocol):
    """Where analysed incidents go next (the return trip). Must be durable on return."""

    async def schedule(self, incidents: Sequence[Incident]) -> None: ...


@dataclass(frozen=True, slots=True)
class WorkerMetrics:
    """What the worker counts; on the pipeline's registry (see :mod:`ai_sidecar.metrics`)."""

    incidents_created: Counter
    incidents_open: Gauge
    queue_depth: Gauge
    processing_lag: Gauge
    analysis_duration: Histogram
    analysis_failures: Counter
    analysis_fallbacks: Counter
    worker_failures: Counter


def create_worker_metrics(registry: CollectorRegistry) -> WorkerMetrics:
    return WorkerMetrics(
        incidents_created=Counter(
            "scout_sidecar_incidents_created",
            "Incidents created by correlation.",
            registry=registry,
        ),
        incidents_open=Gauge(
            "scout_sidecar_incidents_open",
            "Incidents open now.",
            registry=registry,
        ),
        queue_depth=Gauge(
            "scout_sidecar_queue_depth",
            "Stored alerts the worker has not processed yet.",
            registry=registry,
        ),
        processing_lag=Gauge(
            "scout_sidecar_processing_lag_seconds",
            "Age of the oldest stored alert the worker has not processed (0 when idle).",
            registry=registry,
        ),
        analysis_duration=Histogram(
            "scout_sidecar_analysis_duration_seconds",
            "Time to analyse one incident, by analyst.",
            ["analyst"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        ),
        analysis_failures=Counter(
            "scout_sidecar_analysis_failures",
            "Analyses that failed or timed out, by analyst; the next in the chain is asked.",
            ["analyst"],
            registry=registry,
        ),
        analysis_fallbacks=Counter(
            "scout_sidecar_analysis_fallbacks",
            "Analyses a preferred analyst did not give, so the next one in the chain "
            "gave it, by the skipped analyst and reason (error, timeout, declined).",
            ["analyst", "reason"],
            registry=registry,
        ),
        worker_failures=Counter(
            "scout_sidecar_worker_failures",
            "Work the worker could not finish and will retry, by stage: correlate (folding "
            "stored alerts), analyse (an incident's analysis), return_trip (queueing its "
            "enriched copies), save (storing its analysis), post (the return trip's round), "
            "relearn (learning co-firing edges from the stored incidents).",
            ["stage"],
            registry=registry,
        ),
    )


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What one incident's analysis produced.

    ``result``: what goes to the return trip and the store (None: nothing, the
    whole chain failed on an incident never analysed). ``again``: the incident
    stays on the to-do list after its result is stored (its preferred analyst
    failed, or the analysis itself did).
    """

    incident_id: str
    result: Incident | None
    again: bool


class Worker:
    def __init__(
        self,
        db: Store,
        config: SidecarConfig,
        components: Components,
        sink: IncidentSink,
        metrics: WorkerMetrics,
        wakeup: asyncio.Event,
        *,
        clock: Callable[[], datetime] = utc_now,
        analysis_timeout: float | None = None,
    ) -> None:
        self._db = db
        self._config = config
        self._analysts = components.analysts
        self._context = components.context
        self._anomaly = components.anomaly
        self._sink = sink
        self._metrics = metrics
        self._wakeup = wakeup
        self._clock = clock
        # The context queries have their own time box; this one also covers a
        # slow or stuck analyst so one incident never stalls the rest.
        self._analysis_timeout = (
            analysis_timeout if analysis_timeout is not None else analyst_time_box(config)
        )
        self._topology = components.topology
        self._correlator = Correlator(
            config.correlation,
            None if self._topology is None else self._topology.current(),
            language=config.language,
        )
        # The latest saved value of every incident the worker has touched.
        self._incidents: dict[str, Incident] = {}
        # The to-do list: incident id -> the mark of its latest change. An
        # incident leaves it once the analysis of that change is stored; a
        # newer mark (a change during the analysis) keeps it on.
        self._dirty: dict[str, int] = {}
        self._marks = itertools.count()
        self._dirty_event = asyncio.Event()
        self._failure_log = FailureLog(log)
        # Store failures in a row, and when the analysis may write again (monotonic).
        self._store_failures = 0
        self._store_retry_at = 0.0
        self._analysed_at: dict[str, float] = {}
        # Incidents an analyst asked to come back to (a deferred LLM call), and when.
        self._deferred: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._event_time = datetime.min.replace(tzinfo=UTC)
        self._budget = RENDER_BURST
        self._budget_at = time.monotonic()
        self._learned_at: float | None = None

    async def start(self) -> None:
        """Reload the correlator's state and queue incidents whose analysis is stale."""
        # Alert time, not wall time: after downtime the backlog's alerts are
        # as old as the incidents they may flap back into.
        latest = await self._db.latest_update()
        self._event_time = min(latest or self._clock(), self._clock())
        since = self._event_time - self._config.correlation.flap_window
        active = await self._db.active_incidents(resolved_since=since)
        self._correlator.load(active)
        self._correlator.reserve(await self._db.incident_ids())
        await self.relearn()
        for incident in active:
            self._incidents[incident.id] = incident
            if incident.needs_analysis:
                self._mark_dirty(incident.id)
        self._metrics.incidents_open.set(len(self._correlator.open_incidents()))
        log.info("worker started", extra={"active_incidents": len(active)})

    # -- correlate ---------------------------------------------------------

    async def correlate_forever(self) -> None:
        last_reprioritised = time.monotonic()
        while True:
            try:
                processed = await self.correlate_once()
                if time.monotonic() - last_reprioritised >= REPRIORITISE_EVERY:
                    await self.reprioritise()
                    last_reprioritised = time.monotonic()
                relearn = self._config.correlation.cofiring.relearn.total_seconds()
                if self._learned_at is None or time.monotonic() - self._learned_at >= relearn:
                    await self.relearn()
                if processed == 0:
                    await self._wait_for_alerts()
            except StoreError as exc:
                # The batch is read again and folded again: its alerts are then
                # already members (duplicates), and what changed stays marked.
                await asyncio.sleep(self._store_failed("correlate", exc))
                continue
            if processed:
                # Written, not only read: a full disk still serves reads.
                self._store_worked()
            if 0 < processed < BATCH_SIZE:
                # A storm arrives a request at a time; waiting a moment lets a
                # batch build up, so the per-batch work (priorities, the commit)
                # is paid once per many alerts rather than once per request.
                await asyncio.sleep(LINGER)

    async def _wait_for_alerts(self) -> None:
        """Return once alerts wait to be folded, or after REPRIORITISE_EVERY."""
        quiet = False
        while True:
            self._wakeup.clear()
            # Check after clearing: an alert stored in between must not wait.
            if await self._refresh_backlog() > 0:
                if quiet:
                    # The first alerts after a quiet spell, stored moments ago:
                    # the rest of that moment (an incident's other alerts, which
                    # Alertmanager delivers per group, all at once) then lands in
                    # the same batch, and the incident is analysed and posted
                    # back whole, not as a first part and, a pace later, the rest.
                    await asyncio.sleep(ARRIVAL_SETTLE)
                return
            quiet = True
            try:
                async with asyncio.timeout(REPRIORITISE_EVERY):
                    await self._wakeup.wait()
            except TimeoutError:
                return

    def _store_failed(self, stage: Stage, exc: StoreError) -> float:
        """Count and log (once per outage) a store failure; seconds until the next try."""
        self._metrics.worker_failures.labels(stage).inc()
        self._store_failures = self._failure_log.failed(STORE_KEY, stage, exc)
        delay = retry_delay(self._store_failures)
        self._store_retry_at = time.monotonic() + delay
        return delay

    def _store_worked(self) -> None:
        self._store_failures = 0
        self._store_retry_at = 0.0
        self._failure_log.recovered(STORE_KEY)

    async def relearn(self) -> None:
        """Learn co-firing edges again from the stored incidents (the history window's).

        Nothing of them is stored apart: rebuilt from the incidents at every
        start and every ``cofiring.relearn``, they survive restarts and age
        out with the history.
        """
        settings = self._config.correlation.cofiring
        self._learned_at = time.monotonic()
        if not settings.enabled:
            return
        floor = datetime.min.replace(tzinfo=UTC) + settings.history
        since = self._event_time - settings.history if self._event_time > floor else None
        try:
            history = await self._db.list_incidents(since=since, limit=settings.max_incidents)
            # Counting pairs is CPU work: off the loop, so the webhook keeps answering.
            cofiring = await asyncio.to_thread(learn_with, settings, history)
        except Exception as exc:
            # Optional work: correlation goes on with the edges it has, and
            # learning is tried again with the store's backoff, not an hour on.
            self._metrics.worker_failures.labels("relearn").inc()
            failures = self._failure_log.failed(RELEARN_KEY, "relearn", exc)
            self._learned_at -= settings.relearn.total_seconds() - retry_delay(failures)
            return
        self._failure_log.recovered(RELEARN_KEY)
        self._correlator.set_cofiring(cofiring)
        log.info(
            "co-firing edges learned",
            extra={"edges": cofiring.edges, "episodes": cofiring.episodes},
        )

    async def correlate_once(self) -> int:
        """Fold one batch of stored alerts into incidents; how many alerts it took."""
        batch = await self._db.pending(BATCH_SIZE)
        if not batch:
            return 0
        now = self._clock()
        if self._topology is not None and self._topology.current() is not self._correlator.topology:
            self._correlator.set_topology(self._topology.current())
        changed: dict[str, Incident] = {}
        significant: set[str] = set()
        created = 0
        for position, received in enumerate(batch, start=1):
            if position % YIELD_EVERY == 0:
                # Let the webhook answer between slices: its p99 latency is the
                # longest stretch the loop spends here without a break.
                await asyncio.sleep(0)
            if received.alert.is_enriched:
                # The webhook drops these; one stored by an older version is skipped here.
                continue
            alert = received.alert
            self._event_time = max(self._event_time, alert.ends_at or alert.starts_at)
            change = self._correlator.apply(alert, now)
            if change is None:
                continue
            if change.kind == "created":
                created += 1
            for gone in change.absorbed:  # merged into change.incident through the graph
                changed[gone.id] = gone
                significant.add(gone.id)
            changed[change.incident.id] = change.incident
            if change.kind != "duplicate":
                # A repeat delivery is saved (its count) but changes nothing
                # anyone is told: no new analysis, no new post.
                significant.add(change.incident.id)
        # Counted before any await: an analysis may finish while the batch is
        # being saved, and a reader of /metrics must not see it ahead of the
        # incident it belongs to. A failed save replays the batch as duplicates,
        # so each incident is still counted once. The open count with it: a
        # reader that sees the new incident counted sees it open too.
        self._metrics.incidents_created.inc(created)
        self._metrics.incidents_open.set(len(self._correlator.open_incidents()))
        updated = []
        for position, incident in enumerate(changed.values(), start=1):
            if position % YIELD_EVERY_INCIDENTS == 0:
                await asyncio.sleep(0)
            updated.append(await self._with_priority(incident, now))
        # Memory first: an analysis finishing while this commit is in flight
        # then merges into the new value instead of saving an older one over it.
        for incident in updated:
            self._incidents[incident.id] = incident
            if incident.id in significant:
                self._mark_dirty(incident.id)
        # Incidents first, in slices, then the cursor: one transaction for a
        # whole storm batch would hold the store's single writer for a long
        # while, and every webhook acknowledgement waits behind it. A crash
        # between the slices and the cursor replays the batch; the replayed
        # alerts are already members, so they only count as duplicates.
        await self._save(updated)
        await self._db.save_progress(batch[-1].seq, [])
        # Alert time decides what can no longer flap, as in a live run; never
        # ahead of the wall clock, so one alert stamped in the future cannot
        # make the worker forget everything.
        self._event_time = min(self._event_time, now)
        self._forget_old(self._event_time)
        await self._refresh_backlog()
        return len(batch)

    async def reprioritise(self) -> None:
        """Re-rank open incidents even when nothing arrives: priority grows with
        duration, and anomaly evidence comes and goes.

        An incident is saved when its priority or its evidence changed (the
        API shows the evidence and the reasons citing it), never when neither
        did. It is analysed again when its priority changed or its evidence
        names other series than the analysis could cite; a score or band that
        merely moved is saved without a new analysis.
        """
        now = self._clock()
        changed: list[Incident] = []
        reanalyse: set[str] = set()
        for incident in self._correlator.open_incidents():
            saved = self._incidents.get(incident.id, incident)
            ranked = await self._with_priority(saved, now)
            if ranked.priority != saved.priority or _cited(ranked) != _cited(saved):
                reanalyse.add(ranked.id)
            elif ranked.anomaly_evidence == saved.anomaly_evidence:
                continue
            changed.append(ranked)
        for incident in changed:
            self._incidents[incident.id] = incident
            if incident.id in reanalyse:
                self._mark_dirty(incident.id)
        if changed:
            await self._save(changed)

    @property
    def language(self) -> str:
        """What analyses, reasons and priorities are written in (``config.language``)."""
        return self._config.language

    def set_language(self, language: str) -> None:
        """A reloaded ``language``: the next analyses, reasons and priorities are in it."""
        self._config = self._config.model_copy(update={"language": language})
        self._correlator.language = language

    async def _with_priority(self, incident: Incident, now: datetime) -> Incident:
        evidence = await self._anomaly.evidence(incident)
        priority, reasons = prioritise(
            incident, self._config.priority, now, evidence, language=self.language
        )
        previous = self._incidents.get(incident.id)
        if previous is not None and previous is not incident:
            # The correlator knows nothing of analyses; carry the last one
            # forward so the API never shows an analysed incident as blank.
            incident = replace(
                incident,
                analysis=previous.analysis,
                analyst=previous.analyst,
                analysed_version=previous.analysed_version,
                analysed_priority=previous.analysed_priority,
                skipped_analysts=previous.skipped_analysts,
            )
        peak = min(priority, notified_priority(previous or incident))  # "P1" < "P2"
        return replace(
            incident,
            priority=priority,
            priority_reasons=reasons,
            peak_priority=peak,
            # Kept with the reasons that cite it, so the API can show it.
            anomaly_evidence=tuple(sorted(evidence, key=lambda e: (-e.score, e.subject))),
        )

    async def _refresh_backlog(self) -> int:
        backlog = await self._db.backlog()
        self._metrics.queue_depth.set(backlog.depth)
        lag = 0.0
        if backlog.oldest_received_at is not None:
            lag = max(0.0, (self._clock() - backlog.oldest_received_at).total_seconds())
        self._metrics.processing_lag.set(lag)
        return backlog.depth

    def _forget_old(self, now: datetime) -> None:
        cutoff = now - self._config.correlation.flap_window
        self._correlator.forget_resolved_before(cutoff)
        for incident_id, incident in list(self._incidents.items()):
            stale = incident.resolved_at is not None and incident.resolved_at < cutoff
            if stale and incident_id not in self._dirty:
                del self._incidents[incident_id]
                self._analysed_at.pop(incident_id, None)
                self._failures.pop(incident_id, None)
                self._deferred.pop(incident_id, None)
                self._failure_log.forget(incident_id)

    def _mark_dirty(self, incident_id: str) -> None:
        self._dirty[incident_id] = next(self._marks)
        # A change is analysed at its turn, deferred call or not.
        self._deferred.pop(incident_id, None)
        self._dirty_event.set()

    # -- analyse -----------------------------------------------------------

    async def analyse_forever(self) -> None:
        while True:
            if not self._dirty:
                self._dirty_event.clear()
                await self._dirty_event.wait()
            if await self.analyse_pending(paced=True) == 0 and self._dirty:
                # Everything dirty was analysed moments ago: wait for its turn.
                self._dirty_event.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._next_turn()):
                        await self._dirty_event.wait()

    def _turn(self, incident_id: str) -> float:
        """When an incident may be analysed again (monotonic seconds)."""
        last = self._analysed_at.get(incident_id)
        if last is None:
            return 0.0
        failures = min(self._failures.get(incident_id, 0), MAX_BACKOFF_DOUBLINGS)
        return max(last + ANALYSIS_PACE * (1 << failures), self._deferred.get(incident_id, 0.0))

    def _size(self, incident_id: str) -> int:
        incident = self._incidents.get(incident_id)
        return 1 if incident is None else max(1, len(incident.members))

    def _refill(self, now: float) -> None:
        elapsed = now - self._budget_at
        self._budget = min(RENDER_BURST, self._budget + elapsed * RENDER_RATE)
        self._budget_at = now

    def _next_turn(self) -> float:
        now = time.monotonic()
        self._refill(now)
        waits = []
        for incident_id in self._dirty:
            short = self._size(incident_id) - self._budget
            waits.append(max(self._turn(incident_id) - now, short / RENDER_RATE))
        return max(0.0, self._store_retry_at - now, min(waits, default=0.0))

    def _take_turns(self, now: float) -> list[str]:
        """Dirty incidents whose turn has come, within the render budget.

        Each analysis re-renders every member's enriched copy for the return
        trip, so the budget is counted in members: a storm touching hundreds
        of incidents then costs a bounded amount of work per second, however
        large it grows. Incidents never analysed go first (their notification
        is waiting), then by priority, then the longest-waiting.
        """
        self._refill(now)
        if now < self._store_retry_at:
            return []  # the store cannot write yet: nothing could be stored
        ready = [i for i in self._dirty if self._turn(i) <= now]
        ready.sort(
            key=lambda i: (
                i in self._analysed_at,
                self._incidents[i].priority if i in self._incidents else "P4",
                self._analysed_at.get(i, 0.0),
            )
        )
        taken: list[str] = []
        for incident_id in ready:
            size = self._size(incident_id)
            first = incident_id not in self._analysed_at
            if size > self._budget and not first and taken:
                break
            self._budget -= size
            taken.append(incident_id)
        return taken

    async def analyse_pending(self, *, paced: bool = False) -> int:
        """Analyse incidents changed since their last analysis; how many it stored.

        ``paced``: only incidents whose turn has come (see :meth:`_take_turns`).
        During a storm an incident changes with every batch; pacing makes that
        one analysis (and one return-trip update) per turn, not one per batch.

        An incident stays on the to-do list while it is analysed, so it is
        neither forgotten (:meth:`_forget_old`) nor lost if its result cannot
        be stored; it leaves only once the result is stored and no newer
        change arrived meanwhile.
        """
        now = time.monotonic()
        ids = self._take_turns(now) if paced else list(self._dirty)
        marks = {incident_id: self._dirty[incident_id] for incident_id in ids}
        last_turns = {incident_id: self._analysed_at.get(incident_id) for incident_id in ids}
        for incident_id in ids:
            self._analysed_at[incident_id] = now
        semaphore = asyncio.Semaphore(ANALYSIS_CONCURRENCY)
        outcomes = await asyncio.gather(*(self._analyse_one(i, semaphore) for i in ids))
        results = [o.result for o in outcomes if o.result is not None]
        stored: set[str] = set()
        # The return trip first: if the process dies before the analysis is
        # saved, the incident is analysed and scheduled again, which is
        # harmless; the other order could lose the notification.
        for start in range(0, len(results), SAVE_SLICE):
            if time.monotonic() < self._store_retry_at:
                break  # the store failed: the rest waits for its retry, not for a timeout each
            stored |= await self._store(results[start : start + SAVE_SLICE])
        for outcome in outcomes:
            incident_id = outcome.incident_id
            unstored = outcome.result is not None and incident_id not in stored
            if unstored and self._store_failures:
                # Not the incident's fault: its retry follows the store's, not its pace.
                self._restore_turn(incident_id, last_turns[incident_id])
            if outcome.again or unstored:
                continue  # still owed: it stays on the list
            if self._dirty.get(incident_id) == marks[incident_id]:
                del self._dirty[incident_id]
        return len(stored)

    def _restore_turn(self, incident_id: str, last: float | None) -> None:
        if last is None:
            self._analysed_at.pop(incident_id, None)
        else:
            self._analysed_at[incident_id] = last

    async def _analyse_one(self, incident_id: str, semaphore: asyncio.Semaphore) -> _Outcome:
        async with semaphore:
            # One analysis at a time between requests: the local analyst
            # never awaits, so without this a storm's hundreds of
            # incidents would hold the loop for their whole sum.
            await asyncio.sleep(0)
            incident = self._incidents.get(incident_id)
            self._deferred.pop(incident_id, None)  # this analysis is the one it waited for
            if incident is None:
                # Forgotten since it was marked (resolved long ago): nothing is owed.
                return _Outcome(incident_id, None, again=False)
            try:
                analysed = await self._analyse(incident)
            except Exception as exc:  # pipeline boundary: this incident only, retried later
                self._incident_failed(incident_id, "analyse", exc)
                return _Outcome(incident_id, None, again=True)
        if incident_id in self._deferred:
            # An analyst deferred its answer: this one is stored, and the
            # incident stays on the list for the deferral's turn (no failure).
            if analysed is not None:
                # Saved as still owed: a restart before the answer asks again.
                analysed = replace(
                    analysed,
                    analysed_version=incident.analysed_version,
                    analysed_priority=incident.analysed_priority,
                )
            return _Outcome(incident_id, analysed, again=True)
        if analysed is not None and not _retry_owed(analysed):
            self._failures.pop(incident_id, None)
            return _Outcome(incident_id, analysed, again=False)
        # The preferred analyst is retried at the incident's turn, later after
        # each failure. Meanwhile the fallback's analysis, or without one the
        # last good analysis, goes back to Alertmanager with the incident's
        # changes (a resolution, new members).
        self._failures[incident_id] = self._failures.get(incident_id, 0) + 1
        if analysed is None and incident.analysis is not None:
            analysed = incident
        return _Outcome(incident_id, analysed, again=True)

    async def _store(self, chunk: Sequence[Incident]) -> set[str]:
        """Schedule and save ``chunk``; the ids whose results are now durable.

        A store that cannot write fails the whole chunk (it is tried again
        after the store's pause); any other failure is narrowed down to the
        incidents that cause it, so the others are stored.
        """
        stage: Stage = "return_trip"
        try:
            await self._sink.schedule(chunk)
            stage = "save"
            await self._db.save_incidents(
                [self._merge(incident) for incident in chunk], language=self.language
            )
        except StoreError as exc:
            self._store_failed(stage, exc)
            return set()
        except Exception as exc:  # pipeline boundary: find the incident that fails
            if len(chunk) == 1:
                self._incident_failed(chunk[0].id, stage, exc)
                return set()
            stored: set[str] = set()
            for incident in chunk:
                stored |= await self._store([incident])
            return stored
        self._store_worked()
        for incident in chunk:
            self._failure_log.recovered(incident.id)
        return {incident.id for incident in chunk}

    def _incident_failed(self, incident_id: str, stage: Stage, exc: Exception) -> None:
        """One incident's work failed (not the store): count, log once, back off."""
        self._metrics.worker_failures.labels(stage).inc()
        self._failure_log.failed(incident_id, stage, exc)
        self._failures[incident_id] = self._failures.get(incident_id, 0) + 1

    async def _save(self, incidents: Sequence[Incident]) -> None:
        slices = [incidents[i : i + SAVE_SLICE] for i in range(0, len(incidents), SAVE_SLICE)]
        await asyncio.gather(
            *(self._db.save_incidents(part, language=self.language) for part in slices)
        )

    def _merge(self, analysed: Incident) -> Incident:
        """Attach an analysis to the newest value of its incident.

        Correlation may have changed the incident while it was analysed; saving
        the older value would drop members from the store. The newer value is
        already marked dirty, so it gets its own analysis next.
        """
        current = self._incidents.get(analysed.id, analysed)
        if current.version != analysed.version or current.priority != analysed.priority:
            current = replace(
                current,
                analysis=analysed.analysis,
                analyst=analysed.analyst,
                skipped_analysts=analysed.skipped_analysts,
            )
        else:
            current = analysed
        self._incidents[current.id] = current
        return current

    async def _analyse(self, incident: Incident) -> Incident | None:
        """The first analysis the chain gives, with the analysts it skipped; None if none."""
        timeout = self._analysis_timeout
        try:
            async with asyncio.timeout(timeout):
                context = await self._gather_context(incident)
        except Exception:  # pipeline boundary: analyse without context rather than not at all
            log.exception("gathering context failed", extra={"incident": incident.id})
            context = IncidentContext(language=self.language)
        skipped: list[SkippedAnalyst] = []
        fallback = self._analysts.fallback
        for analyst in self._analysts.in_order:
            name = analyst.name
            started = time.monotonic()
            reason: SkipReason
            try:
                async with asyncio.timeout(timeout):
                    analysis = await analyst.analyse(incident, context)
            except AnalystDeclined as declined:
                # Not a failure: the analyst chose not to speak (policy,
                # budget, circuit); asked again only when it deferred its answer.
                reason = "pending" if declined.reason == PENDING else "declined"
                detail = f"{declined.reason}: {declined.detail}"
                if declined.retry_after is not None:
                    self._deferred[incident.id] = time.monotonic() + declined.retry_after
            except TimeoutError:
                reason, detail = "timeout", f"no analysis within {timeout:g}s"
                log.warning("analysis timed out", extra={"incident": incident.id, "analyst": name})
            except Exception as exc:  # pipeline boundary: the next analyst speaks instead
                # The class only: the API serves the detail, and an exception's text
                # may hold a request URL with a key in it. The log has the rest.
                reason, detail = "error", f"{type(exc).__name__} (details in the sidecar's log)"
                log.exception("analysis failed", extra={"incident": incident.id, "analyst": name})
            else:
                return replace(
                    incident,
                    analysis=analysis,
                    analyst=name,
                    analysed_version=incident.version,
                    analysed_priority=incident.priority,
                    skipped_analysts=tuple(skipped),
                )
            finally:
                self._metrics.analysis_duration.labels(name).observe(time.monotonic() - started)
            if reason not in ("declined", "pending"):
                self._metrics.analysis_failures.labels(name).inc()
            if analyst is not fallback:
                # An answer on its way is not a fallback: the analyst speaks at the
                # next turns (counted then, if its call ends in a decline).
                if reason != "pending":
                    self._metrics.analysis_fallbacks.labels(name, reason).inc()
                skipped.append(SkippedAnalyst(name, reason, detail))
        return None

    async def _gather_context(self, incident: Incident) -> IncidentContext:
        members = sorted(
            incident.members.values(),
            key=lambda m: (m.fingerprint != incident.root_cause, m.starts_at, m.fingerprint),
        )
        asked: dict[str, None] = {}
        chosen = []
        for member in members:
            if member.generator_url in asked:
                continue
            asked[member.generator_url] = None
            chosen.append(member)
            if len(chosen) == CONTEXT_MEMBERS:
                break
        contexts = await asyncio.gather(*(self._context.context(m) for m in chosen))
        evidence = await self._anomaly.evidence(incident)
        return IncidentContext(
            members={m.fingerprint: c for m, c in zip(chosen, contexts, strict=True)},
            anomaly=tuple(evidence),
            language=self.language,
        )


def analyst_time_box(config: SidecarConfig) -> float:
    """Seconds one analyst may take: the context's time box, a grace, and an LLM's calls.

    An LLM analyst bounds each call by ``llm.timeout`` (retries included) and
    makes at most two (the second with the validation error), so it ends on
    its own; cutting it off earlier would lose the answer it paid for and its
    audit record, and its version would not be asked about again.
    """
    seconds = config.analysis.context_timeout.total_seconds() + ANALYST_GRACE
    if config.llm.provider != "none":
        seconds += LLM_CALLS_PER_ANALYSIS * config.llm.timeout.total_seconds()
    return seconds


def _retry_owed(analysed: Incident) -> bool:
    """A preferred analyst failed on ``analysed`` (not declined, not pending): ask again later."""
    return any(s.reason in ("error", "timeout") for s in analysed.skipped_analysts)


def _cited(incident: Incident) -> frozenset[tuple[str, str]]:
    """The series an analysis of ``incident`` can name: each piece of evidence's subject
    and the member it supports (its score and band are left out: they move every minute)."""
    return frozenset((e.subject, e.member) for e in incident.anomaly_evidence)

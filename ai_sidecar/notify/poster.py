"""The poster: enriched copies from the store's outbox, posted to every Alertmanager peer.

:meth:`ReturnTrip.schedule` records the copies an analysed incident calls for
(:func:`ai_sidecar.notify.render.outbox_copies`) in the outbox and returns only
once they are durable; :meth:`ReturnTrip.run` posts from the outbox, so a
restart resumes exactly where the last run stopped.

* **One request per peer and round.** Everything due for a peer goes in one
  POST (split past ``max_batch`` alerts), together with copies due within a
  quarter of ``repost_interval``, so schedules drift together instead of
  trickling out as many small requests.
* **Failures.** A post that fails (connection error, timeout, 5xx, 408, 429,
  or a 4xx about the peer rather than the alerts, such as a proxy's 401 or
  a wrong path's 404) leaves its rows due and the peer backs off
  exponentially from ``retry_backoff_initial`` to ``retry_backoff_max``;
  other peers are not held up. A post Alertmanager refuses (400, 413, 422)
  cannot succeed by retrying: the alerts of a refused batch are posted one
  by one and those refused alone are logged, counted and dropped.
* **A clock set back.** Schedules are wall-clock times (they outlive the
  process). A row due later than any schedule sets from now, and a backoff
  longer than ``retry_backoff_max``, were set before the clock went back:
  they count as due now, or a first post, a keep-alive or a retry would wait
  as long as the clock went back.
* **Reconciliation** runs on the keep-alive rounds
  (:class:`ai_sidecar.intake.reconcile.Reconciler`).
* **Only the leader posts.** With replicas sharing a PostgreSQL store, a
  :class:`PostPermit` (the worker lease) is asked before every request how
  long this replica's lead is sure to last: a replica paused or cut off past
  the point where another may have taken over must not post an older copy
  over the new leader's newer one. Each post gets at most that long, and
  none is sent with less than :data:`MIN_POST_TIME` left: the round then
  stops, and its rows stay due. This bounds the overlap; a replica frozen
  in the middle of a post can still land it late.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

import aiohttp

from ai_sidecar.clock import utc_now
from ai_sidecar.failures import STORE_KEY, FailureLog, retry_delay
from ai_sidecar.i18n import translator
from ai_sidecar.intake.reconcile import Reconciler
from ai_sidecar.metrics import SidecarMetrics
from ai_sidecar.models import Alert, Incident
from ai_sidecar.notify.alertmanager import AlertmanagerClient, Reply
from ai_sidecar.notify.policy import ReturnTripPolicy
from ai_sidecar.notify.render import outbox_copies, postable
from ai_sidecar.store import OutboxPlan, OutboxRow, Store, StoreError

log = logging.getLogger("ai_sidecar.notify")

# Share of repost_interval by which a row may be posted early, with others due.
COALESCE = 0.25
# The longest the run loop sleeps without a reason: a safety net against a
# wake-up computed from a clock that jumped.
MAX_IDLE = 60.0
# Seconds between two rounds at most once woken: far below the enriched
# route's group_wait, so no notification waits for it.
ROUND_GAP = 0.5
# When the next round asks the permit again after it said no.
UNPERMITTED_RETRY = timedelta(seconds=1)
# The least time left of the lead worth a post: a shorter one would mostly
# time out (unless post_timeout itself is shorter).
MIN_POST_TIME = 1.0


def _chunks(rows: Sequence[OutboxRow], size: int) -> Iterable[Sequence[OutboxRow]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


class PostPermit(Protocol):
    """How long this replica may go on posting: it leads, as recently confirmed."""

    def remaining(self) -> float | None:
        """Seconds before another replica could have taken the lead (0: it may
        have already); None: no other replica can (no limit)."""
        ...


@dataclass(frozen=True, slots=True)
class _Backoff:
    """A peer's run of failed posts, and when to try it again."""

    failures: int = 0
    retry_at: datetime | None = None


class ReturnTrip:
    """Posts enriched copies from the store's outbox; see the module docstring."""

    def __init__(
        self,
        db: Store,
        peers: Sequence[str],
        policy: ReturnTripPolicy,
        metrics: SidecarMetrics,
        session: aiohttp.ClientSession,
        *,
        take_in: Callable[[Sequence[Alert]], Awaitable[None]],
        clock: Callable[[], datetime] = utc_now,
        permit: PostPermit | None = None,
    ) -> None:
        """``permit``: asked before every post; None when this is the only
        replica (the SQLite store), which may always post."""
        self._db = db
        self._permit = permit
        # Whether the permit said no last time it was asked, so the refusal
        # is logged once per change, not every round.
        self._lead_refused = False
        # One spelling per peer: it is the outbox key and the metric label.
        self._peers = tuple(dict.fromkeys(p.rstrip("/") for p in peers))
        self._policy = policy
        self._metrics = metrics
        self._client = AlertmanagerClient(session, policy.post_timeout)
        self._reconciler = Reconciler(
            db,
            self._peers,
            self._client,
            interval=policy.repost_interval,
            grace=policy.grace,
            take_in=take_in,
            permitted=self._leads,
        )
        self._clock = clock
        self._wakeup = asyncio.Event()
        self._backoff = {peer: _Backoff() for peer in self._peers}
        self._synced = False

    @property
    def peers(self) -> tuple[str, ...]:
        return self._peers

    @property
    def language(self) -> str:
        return self._policy.language

    def use_language(self, language: str) -> None:
        """Write the copies scheduled from now on in ``language`` (a config reload);
        copies already in the outbox keep theirs until their incident changes.
        Raises :class:`~ai_sidecar.i18n.UnknownLanguageError` for a language
        without catalogues, before anything changes."""
        translator(language, "notify")
        self._policy = replace(self._policy, language=language)

    def wake(self) -> None:
        """Make :meth:`run` look at the outbox now."""
        self._wakeup.set()

    async def schedule(self, incidents: Sequence[Incident]) -> None:
        """Record the copies ``incidents`` call for; durable when this returns.

        Incidents without an analysis are skipped: their raw alerts reach
        people through the fail-open route.
        """
        analysed = [incident for incident in incidents if incident.analysis is not None]
        if not analysed or not self._peers:
            return
        now = self._clock()
        policy, peers = self._policy, self._peers
        # Rendered before the transaction, not in it: the write lock is shared
        # with the webhook (and, with a worker process, with another process),
        # so it must be held for the SQL alone.
        plans = [
            OutboxPlan(
                incident.id, frozenset(incident.members), outbox_copies(incident, policy, now)
            )
            for incident in analysed
        ]
        await self._db.enqueue_posts(
            plans,
            peers,
            now=now.timestamp(),
            repeat_for=policy.resolved_repeat_for.total_seconds(),
        )
        self.wake()

    async def pending(self) -> int:
        """Copies due now that their peer has not accepted yet."""
        return await self._db.count_due_posts(now=self._clock().timestamp())

    async def run(self) -> None:
        """Post, keep alive, resolve and reconcile until cancelled."""
        failures = FailureLog(log)
        failed_rounds = 0
        while True:
            self._wakeup.clear()
            try:
                next_at = await self.run_once()
            except StoreError as exc:
                # Busy or full: the outbox is intact, so wait and try the round again.
                failed_rounds = failures.failed(STORE_KEY, "post", exc)
                self._metrics.worker.worker_failures.labels("post").inc()
                await asyncio.sleep(retry_delay(failed_rounds))
                continue
            if failed_rounds:
                failures.recovered(STORE_KEY)
                failed_rounds = 0
            timeout = MAX_IDLE
            if next_at is not None:
                timeout = min(MAX_IDLE, max(0.0, (next_at - self._clock()).total_seconds()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()
            # In a storm schedule() wakes this loop many times a second; a
            # short pause lets the changes of that moment go out in one round.
            await asyncio.sleep(ROUND_GAP)

    async def run_once(self) -> datetime | None:
        """One round: post what is due, reconcile if it is time. Returns when the
        next round has work (None: only when something is scheduled)."""
        now = self._clock()
        if not self._synced:
            dropped = await self._db.sync_outbox_peers(self._peers, now=now.timestamp())
            if dropped:
                log.info("dropped copies of removed peers", extra={"rows": dropped})
            self._synced = True
        due = await self._due(now)
        if due and self._post_timeout() is None:
            return now + UNPERMITTED_RETRY
        # Every peer's posts finish (or are cancelled with this round) before a
        # failure leaves it: none may go on posting after the worker stopped.
        outcomes = await asyncio.gather(
            *(self._post_peer(peer, rows, now) for peer, rows in due.items()),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        await self._reconciler.run_if_due(now)
        self._metrics.return_trip_queue.set(await self.pending())
        return await self._next_work()

    def _retry_at(self, peer: str, now: datetime) -> datetime | None:
        """When ``peer`` may be posted to again after failures (None: now)."""
        retry_at = self._backoff[peer].retry_at if peer in self._backoff else None
        if retry_at is not None and retry_at - now > self._policy.retry_backoff_max:
            return None  # set before the clock went back: no backoff is that long
        return retry_at

    def _beyond(self, now: datetime) -> float:
        """The latest due time any schedule sets from ``now``: a row due after it was
        scheduled before the clock went back, and is due (it would otherwise wait
        as long as the clock went back, a first post or a keep-alive included)."""
        horizon = max(self._policy.repost_interval, self._policy.resolved_repeat_interval)
        return (now + horizon).timestamp() + 1.0

    async def _due(self, now: datetime) -> dict[str, list[OutboxRow]]:
        ready = [
            peer
            for peer in self._peers
            if (retry_at := self._retry_at(peer, now)) is None or retry_at <= now
        ]
        if not ready:
            return {}
        stamp = now.timestamp()
        # Rows almost due ride along with a peer's due ones: posting a copy a
        # little early is harmless, and schedules that drift together keep
        # one request per peer per round instead of a trickle of small ones.
        early = stamp + (self._policy.repost_interval * COALESCE).total_seconds()
        beyond = self._beyond(now)
        due: dict[str, list[OutboxRow]] = {}
        peers_due: set[str] = set()
        for row in await self._db.due_posts(ready, before=early, beyond=beyond):
            due.setdefault(row.peer, []).append(row)
            if row.due_at <= stamp or row.due_at > beyond:
                peers_due.add(row.peer)
        return {peer: rows for peer, rows in due.items() if peer in peers_due}

    async def _next_work(self) -> datetime | None:
        times = []
        now = self._clock()
        beyond = self._beyond(now)
        for peer, due_at in (await self._db.next_post_due(self._peers)).items():
            at = now if due_at > beyond else datetime.fromtimestamp(due_at, UTC)
            retry_at = self._retry_at(peer, now)
            times.append(max(at, retry_at) if retry_at else at)
        if self._reconciler.next_at is not None:
            times.append(self._reconciler.next_at)
        return min(times, default=None)

    def _remaining(self) -> float | None:
        return None if self._permit is None else self._permit.remaining()

    def _leads(self) -> bool:
        """Whether this replica still leads (for the reconciler's intake)."""
        remaining = self._remaining()
        return remaining is None or remaining > 0

    def _post_timeout(self) -> float | None:
        """Seconds the next post may take, ending before the lead could lapse;
        None: none may be sent now."""
        timeout = self._policy.post_timeout.total_seconds()
        remaining = self._remaining()
        permitted = remaining is None or remaining >= min(MIN_POST_TIME, timeout)
        if permitted == self._lead_refused:
            self._lead_refused = not permitted
            if permitted:
                log.info("posting again: this replica's lead is confirmed")
            else:
                log.warning("not posting: this replica's lead was not confirmed recently")
        if not permitted:
            return None
        return timeout if remaining is None else min(timeout, remaining)

    async def _post_peer(self, peer: str, rows: Sequence[OutboxRow], now: datetime) -> None:
        # Asked again before each request: an earlier one may have taken long.
        for chunk in _chunks(rows, self._policy.max_batch):
            timeout = self._post_timeout()
            if timeout is None:
                return
            reply = await self._client.post_alerts(
                peer,
                [
                    postable(row, now, self._policy.keepalive, self._policy.graph_links)
                    for row in chunk
                ],
                within=timeout,
            )
            if reply.outcome == "failed":
                self._failed(peer, reply, len(chunk), now)
                return
            if reply.outcome == "ok":
                await self._accepted(peer, chunk, now)
                continue
            if len(chunk) == 1:
                await self._refused(peer, chunk[0], reply)
                continue
            # A refused batch: Alertmanager stored the valid alerts and named the
            # rest; posting each alone tells which ones to drop.
            for row in chunk:
                timeout = self._post_timeout()
                if timeout is None:
                    return
                single = await self._client.post_alerts(
                    peer,
                    [postable(row, now, self._policy.keepalive, self._policy.graph_links)],
                    within=timeout,
                )
                if single.outcome == "failed":
                    self._failed(peer, single, 1, now)
                    return
                if single.outcome == "ok":
                    await self._accepted(peer, [row], now)
                else:
                    await self._refused(peer, row, single)
        self._backoff[peer] = _Backoff()

    async def _accepted(self, peer: str, rows: Sequence[OutboxRow], now: datetime) -> None:
        stamp = now.timestamp()
        await self._db.complete_accepted(
            peer,
            rows,
            now=stamp,
            firing_due=stamp + self._policy.repost_interval.total_seconds(),
            resolved_due=stamp + self._policy.resolved_repeat_interval.total_seconds(),
        )

        self._metrics.return_trip_posts.labels(peer).inc(len(rows))

    async def _refused(self, peer: str, row: OutboxRow, reply: Reply) -> None:
        log.error(
            "Alertmanager refused an enriched alert; dropping it",
            extra={"peer": peer, "fingerprint": row.fingerprint, "reply": reply.detail},
        )
        self._metrics.return_trip_failures.labels(peer).inc()
        await self._db.complete_refused(row)

    def _failed(self, peer: str, reply: Reply, alerts: int, now: datetime) -> None:
        failures = self._backoff[peer].failures + 1
        delay = min(
            self._policy.retry_backoff_initial * 2 ** min(failures - 1, 32),
            self._policy.retry_backoff_max,
        )
        self._backoff[peer] = _Backoff(failures, now + delay)
        self._metrics.return_trip_failures.labels(peer).inc()
        log.warning(
            "posting enriched alerts failed; will retry",
            extra={
                "peer": peer,
                "alerts": alerts,
                "failures": failures,
                "retry_in_seconds": delay.total_seconds(),
                "reply": reply.detail,
            },
        )

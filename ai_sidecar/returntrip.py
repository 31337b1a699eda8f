"""The return trip: enriched copies of analysed alerts, posted back to every Alertmanager.

For each member of an analysed incident the sidecar posts a copy of the raw
alert to ``POST /api/v2/alerts`` on every Alertmanager peer, with the extra
labels ``scout_enriched="true"``, ``scout_incident`` and ``scout_priority``
and the analysis as ``ai_*`` annotations (see :func:`enriched_alert`).
Alertmanager notifies people of these copies, grouped by incident, and an
inhibition rule mutes the raw alert while its copy fires
(``alertmanager/alertmanager.yml``).

What must happen, and why:

* **Keep-alive.** A copy is posted with an explicit ``endsAt`` (now +
  ``keepalive``) and posted again every ``repost_interval``, well before it
  expires. If the sidecar dies, its copies expire on their own and the raw
  alerts, no longer inhibited, reach people: fail-open.
* **Resolution.** When a member or its incident resolves, the copy is posted
  with ``endsAt`` at the resolution time, and posted again every
  ``resolved_repeat_interval`` for ``resolved_repeat_for`` (a peer that was
  restarted or partitioned still learns of it), then forgotten.
* **A new label set is a new alert.** Alertmanager identifies an alert by its
  labels. When a copy's labels change (priority P3 → P1, a member moved to
  another incident) the old copy is resolved (``endsAt`` = now, repeated as
  above) and the new one posted; otherwise the old one would fire until it
  expired.
* **Durable.** :meth:`ReturnTrip.schedule` records the desired state in the
  store's outbox (:meth:`ai_sidecar.store.Store.enqueue_posts`) and returns
  only once it is durable; :meth:`ReturnTrip.run` posts from the outbox. A row is keyed by peer
  and by the copy's fingerprint, computed as Alertmanager computes it, so a
  restart resumes exactly where the last run stopped.
* **One request per peer and round.** Everything due for a peer goes in one
  POST (split past ``max_batch`` alerts), together with copies due within a
  quarter of ``repost_interval``, so schedules drift together instead of
  trickling out as many small requests.
* **Failures.** A post that fails (connection error, timeout, 5xx, 408, 429)
  leaves its rows due and the peer backs off exponentially from
  ``retry_backoff_initial`` to ``retry_backoff_max``; other peers are not
  held up. A post Alertmanager refuses (any other 4xx, e.g. 400 for an
  invalid alert, 422 for a schema violation) cannot succeed by retrying: the
  alerts of a refused batch are posted one by one and those refused alone are
  logged, counted and dropped.

**Reconciliation, and the Alertmanager behaviour behind it.** The inhibition
that mutes a raw alert while its enriched copy fires also mutes the raw
alert's notifications to the sidecar's own webhook receiver: muting happens
per notification, whatever the receiver. That includes the raw alert's
*resolution*, and Alertmanager does not send it later either, not even once
the copy is gone: a resolved alert that a flush has handled (here: muted)
leaves its aggregation group. Verified against Alertmanager 0.25 in
``tests/ai_sidecar/test_returntrip.py``
(``test_premise_inhibited_resolution_never_reaches_the_webhook``). Without a
remedy the sidecar would keep the copy alive forever, and with it the
inhibition.

So on every keep-alive round the sidecar asks each peer which raw alerts it
still has: ``GET /api/v2/alerts`` with ``active``, ``silenced``,
``inhibited`` and ``unprocessed`` all ``true`` (so the inhibited ones are
listed too) and ``filter=scout_enriched!="true"``. Alertmanager 0.25 answers
with firing alerts only (a resolved alert is left out even while it is kept)
and gives each its label-set ``fingerprint``, the same value its webhook
sends. A member whose fingerprint no peer that answered lists, for at least
``missing_grace`` (default: two repost intervals), is handed to
``take_in`` as a resolved alert, so the normal pipeline resolves it
and the resolution of its copy follows. The grace covers an Alertmanager that
restarted (it keeps no alerts across a restart) until Prometheus sends its
alerts again, about a minute later. When no peer answers nothing is resolved:
an unreachable peer is not evidence.

The same answer covers the inhibition's other blind spot. Its ``equal`` list
cannot name every label, so an enriched copy can also mute a sibling raw
alert that differs only in an unlisted label (a second disk on the same
host), and that sibling then never reaches the webhook either. Any raw alert
that a peer reports inhibited by one of the sidecar's own copies, and that no
incident holds yet, is handed to the pipeline as a firing alert, the way the
webhook would have delivered it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import aiohttp

from ai_sidecar.errors import ConfigError
from ai_sidecar.metrics import SidecarMetrics
from ai_sidecar.models import (
    ENRICHED_LABEL,
    INCIDENT_LABEL,
    PRIORITY_LABEL,
    Alert,
    Incident,
    Member,
    format_time,
    notified_priority,
    parse_time,
)
from ai_sidecar.sanitize import CAPS, clean, format_actions, sanitize_analysis
from ai_sidecar.store import OutboxCopy, OutboxPlan, OutboxRow, Store

log = logging.getLogger("ai_sidecar.returntrip")

ALERTS_PATH = "/api/v2/alerts"
# Query string for reconciliation: every raw alert a peer holds, including
# those muted by the copies' inhibition. Alertmanager 0.25 defaults these to
# true already; saying so keeps a changed default from hiding alerts.
RAW_ALERTS_QUERY: tuple[tuple[str, str], ...] = (
    ("active", "true"),
    ("silenced", "true"),
    ("inhibited", "true"),
    ("unprocessed", "true"),
    ("filter", f'{ENRICHED_LABEL}!="true"'),
)
# Share of repost_interval by which a row may be posted early, with others due.
COALESCE = 0.25
# The longest the run loop sleeps without a reason: a safety net against a
# wake-up computed from a clock that jumped.
MAX_IDLE = 60.0
# Seconds between two rounds at most once woken: far below the enriched
# route's group_wait, so no notification waits for it.
ROUND_GAP = 0.5


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ReturnTripPolicy:
    """How enriched copies are kept alive, resolved, retried and linked."""

    # A firing copy's endsAt is the post time plus this.
    keepalive: timedelta = timedelta(minutes=5)
    # Firing copies are posted again this often, and reconciliation runs as often.
    repost_interval: timedelta = timedelta(minutes=1)
    resolved_repeat_for: timedelta = timedelta(minutes=5)
    resolved_repeat_interval: timedelta = timedelta(minutes=1)
    # Per peer, from the first failure: initial, doubling, capped at max.
    retry_backoff_initial: timedelta = timedelta(seconds=1)
    retry_backoff_max: timedelta = timedelta(minutes=1)
    # One request to a peer, connecting included.
    post_timeout: timedelta = timedelta(seconds=5)
    # How long every answering peer must lack a raw alert before it counts as
    # resolved; None: two repost intervals (2 min by default).
    missing_grace: timedelta | None = None
    # Alerts per POST; a bigger backlog goes in several requests.
    max_batch: int = 200
    prometheus_url: str | None = None
    grafana_url: str | None = None
    external_url: str | None = None

    def __post_init__(self) -> None:
        if self.repost_interval >= self.keepalive:
            raise ConfigError(
                "return trip: repost_interval must be shorter than keepalive, "
                "or enriched alerts expire between posts"
            )
        if self.max_batch < 1:
            raise ConfigError("return trip: max_batch must be at least 1")

    @property
    def grace(self) -> timedelta:
        """The missing_grace in force."""
        return self.missing_grace if self.missing_grace is not None else 2 * self.repost_interval


# --- the enriched copy ------------------------------------------------------


def fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's fingerprint of a label set: FNV-1a (64 bit) over the
    sorted names and values, each followed by the byte 0xff, in hex.

    Empty values are left out: Alertmanager drops such labels when it takes an
    alert, as Prometheus treats them as absent.
    """
    value = 0xCBF29CE484222325
    for name in sorted(name for name, label in labels.items() if label):
        for part in (name, labels[name]):
            for byte in part.encode():
                value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
            value = ((value ^ 0xFF) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{value:016x}"


def incident_url(policy: ReturnTripPolicy, incident_id: str) -> str | None:
    if not policy.external_url:
        return None
    return f"{str(policy.external_url).rstrip('/')}/api/v1/incidents/{incident_id}"


def _is_firing(incident: Incident, member: Member) -> bool:
    return incident.status == "open" and member.status == "firing"


def _resolution_time(incident: Incident, member: Member, now: datetime) -> datetime:
    """When the copy stopped firing: never in the future (Alertmanager would
    keep it firing until then), never before it started."""
    if member.status == "resolved" and member.ends_at is not None:
        ended = member.ends_at
    elif incident.resolved_at is not None:
        ended = incident.resolved_at
    else:
        ended = now
    return max(min(ended, now), member.starts_at)


def analysis_annotations(incident: Incident) -> dict[str, str]:
    """The ``ai_*`` annotations of an incident, sanitised; the same on every member."""
    if incident.analysis is None:
        return {}
    analysis = sanitize_analysis(incident.analysis)
    return {
        "ai_summary": analysis.summary,
        "ai_root_cause": analysis.root_cause,
        "ai_impact": analysis.impact,
        "ai_actions": format_actions(analysis.actions),
    }


def enriched_alert(
    incident: Incident,
    member: Member,
    policy: ReturnTripPolicy,
    now: datetime,
    ai_annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The postable Alertmanager v2 alert for one member of an analysed incident.

    Labels are the member's own plus the three ``scout_*`` labels. Annotations
    are the member's own (sanitised: they may quote device text) plus the
    sanitised analysis and links. ``endsAt`` is ``now`` + keepalive while the
    member fires, else its resolution time.
    """
    labels = {
        **{name: value for name, value in member.labels.items() if value},
        ENRICHED_LABEL: "true",
        INCIDENT_LABEL: incident.id,
        PRIORITY_LABEL: notified_priority(incident),
    }
    annotations = {
        name: clean(value, CAPS.annotation) for name, value in member.annotations.items()
    }
    # Passed in when building every member of one incident: sanitised once.
    annotations.update(analysis_annotations(incident) if ai_annotations is None else ai_annotations)
    links = {
        "scout_incident_url": incident_url(policy, incident.id),
        "prometheus_url": member.generator_url or policy.prometheus_url,
        "grafana_url": policy.grafana_url,
    }
    annotations.update({name: str(url) for name, url in links.items() if url})
    ends_at = (
        now + policy.keepalive
        if _is_firing(incident, member)
        else _resolution_time(incident, member, now)
    )
    alert: dict[str, Any] = {
        "labels": labels,
        "annotations": annotations,
        "startsAt": format_time(member.starts_at),
        "endsAt": format_time(ends_at),
    }
    # Alertmanager checks generatorURL as a URI; an empty one is better left out.
    if member.generator_url:
        alert["generatorURL"] = member.generator_url
    return alert


def _raw_json(member: Member) -> str:
    return json.dumps(
        {
            "labels": dict(member.labels),
            "annotations": dict(member.annotations),
            "startsAt": format_time(member.starts_at),
            "generatorURL": member.generator_url,
        },
        sort_keys=True,
    )


def _muted_raw(raw: Mapping[str, Any]) -> Alert | None:
    """A raw alert from Alertmanager's API as the webhook would have delivered it."""
    try:
        labels = {str(k): str(v) for k, v in raw["labels"].items()}
        annotations = {str(k): str(v) for k, v in (raw.get("annotations") or {}).items()}
        starts_at = parse_time(str(raw["startsAt"]).replace("Z", "+00:00"))
    except (KeyError, AttributeError, TypeError, ValueError):
        return None
    return Alert(
        fingerprint=str(raw["fingerprint"]),
        status="firing",
        labels=labels,
        annotations=annotations,
        starts_at=starts_at,
        generator_url=str(raw.get("generatorURL") or ""),
    )


def _resolved_raw(member_fingerprint: str, raw: str, now: datetime) -> Alert:
    data = json.loads(raw)
    return Alert(
        fingerprint=member_fingerprint,
        status="resolved",
        labels=data["labels"],
        annotations=data["annotations"],
        starts_at=parse_time(data["startsAt"]),
        ends_at=now,
        generator_url=data["generatorURL"],
    )


# --- the outbox rows -------------------------------------------------------------


def _postable(row: OutboxRow, now: datetime, keepalive: timedelta) -> dict[str, Any]:
    """The alert to post for ``row`` now: its stored JSON with endsAt set."""
    alert: dict[str, Any] = json.loads(row.alert)
    ends = (
        now + keepalive
        if row.state == "firing"
        else datetime.fromtimestamp(row.ends_at or now.timestamp(), UTC)
    )
    # Alertmanager refuses an alert that ends before it starts (a clock
    # skewed between Prometheus and the sidecar could cause that).
    alert["endsAt"] = format_time(max(ends, parse_time(alert["startsAt"])))
    return alert


def _desired(incident: Incident, policy: ReturnTripPolicy, now: datetime) -> tuple[OutboxCopy, ...]:
    result = []
    ai_annotations = analysis_annotations(incident)
    for member in incident.members.values():
        alert = enriched_alert(incident, member, policy, now, ai_annotations)
        firing = _is_firing(incident, member)
        del alert["endsAt"]  # set at each post
        result.append(
            OutboxCopy(
                fingerprint=fingerprint(alert["labels"]),
                incident_id=incident.id,
                member=member.fingerprint,
                state="firing" if firing else "resolved",
                alert=json.dumps(alert, sort_keys=True),
                raw=_raw_json(member),
                ends_at=None if firing else _resolution_time(incident, member, now).timestamp(),
            )
        )
    return tuple(result)


# --- posting ------------------------------------------------------------------

Outcome = Literal["ok", "refused", "failed"]


@dataclass(frozen=True, slots=True)
class _Reply:
    outcome: Outcome
    detail: str


def _chunks(rows: Sequence[OutboxRow], size: int) -> Iterable[Sequence[OutboxRow]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


@dataclass(frozen=True, slots=True)
class _Backoff:
    """A peer's run of failed posts, and when to try it again."""

    failures: int = 0
    retry_at: datetime | None = None


class ReturnTrip:
    """Posts enriched copies from the durable table; see the module docstring."""

    def __init__(
        self,
        db: Store,
        peers: Sequence[str],
        policy: ReturnTripPolicy,
        metrics: SidecarMetrics,
        session: aiohttp.ClientSession,
        *,
        take_in: Callable[[Sequence[Alert]], Awaitable[None]],
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._db = db
        # One spelling per peer: it is the table key and the metric label.
        self._peers = tuple(dict.fromkeys(p.rstrip("/") for p in peers))
        self._policy = policy
        self._metrics = metrics
        self._session = session
        self._take_in = take_in
        self._clock = clock
        self._wakeup = asyncio.Event()
        self._backoff = {peer: _Backoff() for peer in self._peers}
        self._next_reconcile: datetime | None = None
        self._missing_since: dict[str, datetime] = {}
        self._synced = False

    @property
    def peers(self) -> tuple[str, ...]:
        return self._peers

    def wake(self) -> None:
        """Make :meth:`run` look at the table now."""
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
            OutboxPlan(incident.id, frozenset(incident.members), _desired(incident, policy, now))
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
        while True:
            self._wakeup.clear()
            next_at = await self.run_once()
            timeout = MAX_IDLE
            if next_at is not None:
                timeout = min(MAX_IDLE, max(0.0, (next_at - self._clock()).total_seconds()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)
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
        await asyncio.gather(*(self._post_peer(peer, rows, now) for peer, rows in due.items()))
        any_firing = True
        # Reading every firing member is the costly part of a round in a storm,
        # so it happens only when a reconciliation is due.
        if self._next_reconcile is None or now >= self._next_reconcile:
            firing = await self._firing_members()
            any_firing = bool(firing)
            if firing:
                self._next_reconcile = now + self._policy.repost_interval
                await self._reconcile(firing, now)
            else:
                self._next_reconcile = None
                self._missing_since.clear()
        self._metrics.return_trip_queue.set(await self.pending())
        return await self._next_work(firing=any_firing)

    async def _due(self, now: datetime) -> dict[str, list[OutboxRow]]:
        ready = [
            peer
            for peer, state in self._backoff.items()
            if state.retry_at is None or state.retry_at <= now
        ]
        if not ready:
            return {}
        stamp = now.timestamp()
        # Rows almost due ride along with a peer's due ones: posting a copy a
        # little early is harmless, and schedules that drift together keep
        # one request per peer per round instead of a trickle of small ones.
        early = stamp + (self._policy.repost_interval * COALESCE).total_seconds()
        due: dict[str, list[OutboxRow]] = {}
        peers_due: set[str] = set()
        for row in await self._db.due_posts(ready, before=early):
            due.setdefault(row.peer, []).append(row)
            if row.due_at <= stamp:
                peers_due.add(row.peer)
        return {peer: rows for peer, rows in due.items() if peer in peers_due}

    async def _next_work(self, *, firing: bool) -> datetime | None:
        times = []
        for peer, due_at in (await self._db.next_post_due(self._peers)).items():
            at = datetime.fromtimestamp(due_at, UTC)
            retry_at = self._backoff[peer].retry_at if peer in self._backoff else None
            times.append(max(at, retry_at) if retry_at else at)
        if firing and self._next_reconcile is not None:
            times.append(self._next_reconcile)
        return min(times, default=None)

    async def _post_peer(self, peer: str, rows: Sequence[OutboxRow], now: datetime) -> None:
        for chunk in _chunks(rows, self._policy.max_batch):
            reply = await self._send(
                peer, [_postable(row, now, self._policy.keepalive) for row in chunk]
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
                single = await self._send(peer, [_postable(row, now, self._policy.keepalive)])
                if single.outcome == "failed":
                    self._failed(peer, single, 1, now)
                    return
                if single.outcome == "ok":
                    await self._accepted(peer, [row], now)
                else:
                    await self._refused(peer, row, single)
        self._backoff[peer] = _Backoff()

    async def _send(self, peer: str, alerts: list[dict[str, Any]]) -> _Reply:
        timeout = aiohttp.ClientTimeout(total=self._policy.post_timeout.total_seconds())
        try:
            async with self._session.post(
                peer + ALERTS_PATH, json=alerts, timeout=timeout
            ) as response:
                text = (await response.text(errors="replace"))[:500]
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _Reply("failed", f"{type(exc).__name__}: {exc}")
        if 200 <= status < 300:
            return _Reply("ok", "")
        # 408 and 429 say "later"; other 4xx say this request is wrong.
        if 400 <= status < 500 and status not in (408, 429):
            return _Reply("refused", f"HTTP {status}: {text}")
        return _Reply("failed", f"HTTP {status}: {text}")

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

    async def _refused(self, peer: str, row: OutboxRow, reply: _Reply) -> None:
        log.error(
            "Alertmanager refused an enriched alert; dropping it",
            extra={"peer": peer, "fingerprint": row.fingerprint, "reply": reply.detail},
        )
        self._metrics.return_trip_failures.labels(peer).inc()
        await self._db.complete_refused(row)

    def _failed(self, peer: str, reply: _Reply, alerts: int, now: datetime) -> None:
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

    # --- reconciliation -------------------------------------------------------

    async def _catch_up_muted(
        self, answered: Sequence[list[dict[str, Any]]], firing: Mapping[str, str]
    ) -> None:
        """Hand on raw alerts our own copies mute but no incident holds (see the docstring)."""

        ours = await self._db.firing_copies()
        muted: dict[str, Alert] = {}
        for answer in answered:
            for raw in answer:
                fingerprint = raw["fingerprint"]
                inhibited_by = (raw.get("status") or {}).get("inhibitedBy") or []
                if fingerprint in firing or fingerprint in muted:
                    continue
                if not any(source in ours for source in inhibited_by):
                    continue
                alert = _muted_raw(raw)
                if alert is not None:
                    muted[fingerprint] = alert
        if not muted:
            return
        log.info(
            "raw alerts muted by an enriched copy before the sidecar saw them; taking them in",
            extra={"alerts": len(muted), "fingerprints": list(muted)[:20]},
        )
        try:
            await self._take_in(list(muted.values()))
        except asyncio.CancelledError:
            raise
        except Exception:  # pipeline boundary: the next round tries again
            log.exception("handing muted raw alerts to the pipeline failed")

    async def _firing_members(self) -> dict[str, str]:
        """Raw fingerprint -> raw alert JSON of every member whose copy fires."""

        return await self._db.firing_members()

    async def _raw_alerts(self, peer: str) -> list[dict[str, Any]] | None:
        """The raw alerts ``peer`` holds, or None if it did not answer."""
        timeout = aiohttp.ClientTimeout(total=self._policy.post_timeout.total_seconds())
        error = ""
        try:
            async with self._session.get(
                peer + ALERTS_PATH, params=RAW_ALERTS_QUERY, timeout=timeout
            ) as response:
                if response.status == 200:
                    alerts = await response.json()
                else:
                    error = f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        if error:
            log.warning(
                "cannot list raw alerts for reconciliation", extra={"peer": peer, "error": error}
            )
            return None
        if not isinstance(alerts, list):
            log.warning("unexpected alert list for reconciliation", extra={"peer": peer})
            return None
        return [a for a in alerts if isinstance(a, dict) and isinstance(a.get("fingerprint"), str)]

    async def _reconcile(self, firing: Mapping[str, str], now: datetime) -> None:
        answers = await asyncio.gather(*(self._raw_alerts(peer) for peer in self._peers))
        answered = [answer for answer in answers if answer is not None]
        if not answered:
            return  # no evidence either way: keep everything alive
        present = {a["fingerprint"] for answer in answered for a in answer}
        await self._catch_up_muted(answered, firing)
        for member in list(self._missing_since):
            if member in present or member not in firing:
                del self._missing_since[member]
        gone: list[Alert] = []
        for member, raw in firing.items():
            if member in present:
                continue
            since = self._missing_since.setdefault(member, now)
            if now - since >= self._policy.grace:
                gone.append(_resolved_raw(member, raw, now))
                # Not again before another grace: the pipeline needs time to act.
                self._missing_since[member] = now
        if not gone:
            return
        log.info(
            "raw alerts gone from every Alertmanager; resolving them",
            extra={"alerts": len(gone), "fingerprints": [a.fingerprint for a in gone[:20]]},
        )
        try:
            await self._take_in(gone)
        except asyncio.CancelledError:
            raise
        except Exception:  # pipeline boundary: the next round tries again
            log.exception("handing resolved raw alerts to the pipeline failed")

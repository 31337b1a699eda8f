"""The report over a period, as numbers: what every rendering (HTML, CSV, PDF) shows.

What is counted, and from where:

- **Incidents** are those *created* in the period
  (:meth:`~ai_sidecar.store.protocol.Store.incidents_created_between`), at
  their first alert's ``startsAt``: correlation runs on the alerts' own clock.
  Incidents merged into another are left out of every count (their alerts
  moved to the one that absorbed them) and shown apart as ``merged``.
- **Alerts in** (``received``) are the firing alerts the store received
  whose ``startsAt`` falls in the period, whenever they arrived
  (:meth:`~ai_sidecar.store.protocol.Store.firing_started_between`): on the
  same clock as the incidents, so an alert delivered days late is counted
  with its incident, on the day it started, and never makes one day say
  "1 incident, 0 alerts" and another "0 incidents, 1 alert". Each firing
  episode (fingerprint and startsAt) once, re-deliveries not counted,
  resolutions not counted (rows older than ``store.retention`` are pruned, so
  a period further back counts fewer). The **compression** is
  ``received / incidents``.
- ``alerts`` is the distinct alerts in the incidents (their members), and
  ``firings`` counts each member's firing episodes (itself plus its flaps),
  by which the noisiest rules and targets are ranked. A member that flapped
  into a second incident carries its flap count along, so firings may exceed
  the alerts received; the compression does not use them.
- **Site** is the root cause's ``site`` label, else the incident's group's.
- **Time to acknowledge** runs from an incident's creation to its first
  ``acknowledge`` action (from the console), up to when the report is made;
  **time to resolve** from creation to resolution. Both give the mean and the
  median over the incidents that have one.
- **Feedback** and **LLM calls** are those given or made in the period, on any
  incident; LLM cost is the audit's estimate from ``llm.price``.
- **Bandwidth, WAN utilisation, anomalies** come from Prometheus
  (:mod:`ai_sidecar.console.reports.measured`), or say why they cannot.
"""

from __future__ import annotations

import asyncio
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from ai_sidecar.clock import utc_now
from ai_sidecar.config import ReportsConfig
from ai_sidecar.console.reports.measured import (
    AnomalyPeak,
    Measured,
    Talker,
    WanLink,
    prometheus_down,
    top_anomalies,
    top_talkers,
    wan_utilisation,
)
from ai_sidecar.console.reports.period import Period
from ai_sidecar.console.reports.threads import on_report_thread
from ai_sidecar.console.words import N_
from ai_sidecar.enrichment.llm.base import LlmExchange
from ai_sidecar.models import PRIORITIES, Incident, Priority, merged_into
from ai_sidecar.notify.graphs import root_member
from ai_sidecar.promql import PromQLClient
from ai_sidecar.store import Feedback, IncidentAction, Store

# A site, alert rule or target an alert does not name is counted under "" and
# shown as these (in the report's language: :mod:`.tables`); "" is no label's
# value that names something.
NO_SITE = N_("(no site)")
NO_ALERTNAME = N_("(no alertname)")
NO_TARGET = N_("(no target)")


@dataclass(frozen=True, slots=True)
class Noisy:
    """An alert rule or a target, with its firings and the incidents it was in."""

    name: str
    firings: int
    incidents: int


@dataclass(frozen=True, slots=True)
class Durations:
    """Mean and median of some durations; None when there were none."""

    count: int
    mean: timedelta | None
    median: timedelta | None

    @classmethod
    def of(cls, values: Sequence[timedelta]) -> Durations:
        if not values:
            return cls(0, None, None)
        seconds = [v.total_seconds() for v in values]
        return cls(
            len(values),
            timedelta(seconds=statistics.fmean(seconds)),
            timedelta(seconds=statistics.median(seconds)),
        )


@dataclass(frozen=True, slots=True)
class Bucket:
    """Incidents created in one hour (a day's report) or one day, by priority."""

    start: datetime
    counts: tuple[int, ...]  # in PRIORITIES order


@dataclass(frozen=True, slots=True)
class Report:
    period: Period
    generated_at: datetime
    incidents: int
    open: int
    merged: int
    by_priority: tuple[tuple[Priority, int], ...]
    by_site: tuple[tuple[str, int], ...]
    rules: tuple[Noisy, ...]
    targets: tuple[Noisy, ...]
    received: int
    alerts: int
    firings: int
    acknowledge: Durations
    resolve: Durations
    feedback: int
    useful: int
    llm_calls: int
    llm_failed: int
    llm_input_tokens: int
    llm_output_tokens: int
    llm_cost: float
    buckets: tuple[Bucket, ...]
    bandwidth: Measured[Talker]
    wan: Measured[WanLink]
    anomalies: Measured[AnomalyPeak]

    @property
    def compression(self) -> float | None:
        """Alerts received per incident: how many alerts each incident saved a person from."""
        return self.received / self.incidents if self.incidents else None

    @property
    def useful_share(self) -> float | None:
        return self.useful / self.feedback if self.feedback else None


def site_of(incident: Incident) -> str:
    """The root cause's ``site`` label, else the group's; "" when neither names one."""
    root = root_member(incident)
    return (root.labels.get("site", "") if root is not None else "") or incident.group.get(
        "site", ""
    )


def _noisiest(
    incidents: Iterable[Incident], key: Callable[..., str], top: int
) -> tuple[Noisy, ...]:
    firings: Counter[str] = Counter()
    seen_in: Counter[str] = Counter()
    for incident in incidents:
        names = set()
        for member in incident.members.values():
            name = key(member)
            firings[name] += 1 + member.flap_count
            names.add(name)
        seen_in.update(names)
    ranked = sorted(firings, key=lambda name: (-firings[name], name))
    return tuple(Noisy(name, firings[name], seen_in[name]) for name in ranked[:top])


def _buckets(incidents: Sequence[Incident], period: Period) -> tuple[Bucket, ...]:
    """Hours for a day's report, local days otherwise; every bucket of the period, empty or not."""
    hourly = period.kind == "day"
    step = timedelta(hours=1) if hourly else timedelta(days=1)

    def floor(moment: datetime) -> datetime:
        local = moment.astimezone(period.zone)
        local = local.replace(minute=0, second=0, microsecond=0)
        return local if hourly else local.replace(hour=0)

    starts: list[datetime] = []
    cursor = floor(period.start)
    while cursor < period.local_end:
        starts.append(cursor)
        # Wall-clock steps, re-anchored in the zone (a 23- or 25-hour day stays one day).
        cursor = (cursor.replace(tzinfo=None) + step).replace(tzinfo=period.zone)
    counts = {start: [0] * len(PRIORITIES) for start in starts}
    for incident in incidents:
        bucket = counts.get(floor(incident.created_at))
        if bucket is not None:
            bucket[PRIORITIES.index(incident.priority)] += 1
    return tuple(Bucket(start, tuple(counts[start])) for start in starts)


async def build_report(
    store: Store,
    period: Period,
    config: ReportsConfig,
    prometheus: PromQLClient | None,
    *,
    now: datetime | None = None,
    prometheus_is_down: bool = False,
) -> Report:
    """The report over ``period``: the store's part and Prometheus's, read concurrently.

    ``prometheus_is_down``: a health check found Prometheus not answering; its
    tables say so instead of waiting for each query's time box."""
    generated_at = now or utc_now()
    time_box = config.query_timeout
    created, received, actions, feedback, exchanges = await asyncio.gather(
        store.incidents_created_between(period.start, period.end),
        store.firing_started_between(period.start, period.end),
        store.actions_between(period.start, max(generated_at, period.end)),
        store.feedback_between(period.start, period.end),
        store.llm_exchanges(since=period.start),
    )
    measured: tuple[Measured[Talker], Measured[WanLink], Measured[AnomalyPeak]]
    if prometheus is not None and prometheus_is_down:
        measured = (prometheus_down(), prometheus_down(), prometheus_down())
    else:
        measured = await asyncio.gather(
            top_talkers(prometheus, period, config.top, time_box),
            wan_utilisation(prometheus, period, config.top, time_box),
            top_anomalies(prometheus, period, config.top, time_box),
        )
    # Counting a storm's tens of thousands of members takes a while: off the loop.
    return await on_report_thread(
        _summarise,
        period,
        generated_at,
        config.top,
        created,
        received,
        actions,
        feedback,
        [e for e in exchanges if e.at < period.end],
        measured,
    )


def _summarise(
    period: Period,
    generated_at: datetime,
    top: int,
    created: Sequence[Incident],
    received: int,
    actions: Sequence[IncidentAction],
    feedback: Sequence[Feedback],
    calls: Sequence[LlmExchange],
    measured: tuple[Measured[Talker], Measured[WanLink], Measured[AnomalyPeak]],
) -> Report:
    incidents = [i for i in created if merged_into(i) is None]
    first_ack: dict[str, datetime] = {}
    for action in actions:
        if action.kind == "acknowledge":
            first_ack.setdefault(action.incident_id, action.at)
    to_ack = [
        max(first_ack[i.id] - i.created_at, timedelta(0)) for i in incidents if i.id in first_ack
    ]
    to_resolve = [
        max(i.resolved_at - i.created_at, timedelta(0))
        for i in incidents
        if i.status == "resolved" and i.resolved_at is not None
    ]
    priorities = Counter(i.priority for i in incidents)
    sites = Counter(site_of(i) for i in incidents)
    members = [m for i in incidents for m in i.members.values()]
    return Report(
        period=period,
        generated_at=generated_at,
        incidents=len(incidents),
        open=sum(1 for i in incidents if i.status == "open"),
        merged=len(created) - len(incidents),
        by_priority=tuple((p, priorities[p]) for p in PRIORITIES),
        by_site=tuple(sorted(sites.items(), key=lambda item: (-item[1], item[0]))),
        rules=_noisiest(incidents, lambda m: m.alertname, top),
        targets=_noisiest(incidents, lambda m: m.target, top),
        received=received,
        alerts=len(members),
        firings=sum(1 + m.flap_count for m in members),
        acknowledge=Durations.of(to_ack),
        resolve=Durations.of(to_resolve),
        feedback=len(feedback),
        useful=sum(1 for f in feedback if f.useful),
        llm_calls=len(calls),
        llm_failed=sum(1 for e in calls if e.outcome != "ok"),
        llm_input_tokens=sum(e.input_tokens for e in calls),
        llm_output_tokens=sum(e.output_tokens for e in calls),
        llm_cost=sum(e.cost for e in calls),
        buckets=_buckets(incidents, period),
        bandwidth=measured[0],
        wan=measured[1],
        anomalies=measured[2],
    )

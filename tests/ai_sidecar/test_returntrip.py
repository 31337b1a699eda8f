"""The return trip against real Alertmanagers (0.25) running the shipped config.

A fake clock drives keep-alive, repeats and backoff, so minutes of schedule
take no wall time; it starts at the real time, because Alertmanager judges
``endsAt`` against its own clock.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ai_sidecar.metrics import SidecarMetrics, create_metrics
from ai_sidecar.models import Alert, Analysis, Incident, Member, format_time, parse_time
from ai_sidecar.returntrip import (
    RAW_ALERTS_QUERY,
    ReturnTrip,
    ReturnTripPolicy,
    enriched_alert,
    fingerprint,
)
from ai_sidecar.store import SqliteStore, Store
from scripts.localstack import free_port
from tests.conftest import wait_for
from tests.peers.alertmanager import Alertmanager, postable, render_config
from tests.peers.notify import SlackSink

POLICY = ReturnTripPolicy(
    external_url="http://127.0.0.1:8782/",
    grafana_url="http://grafana.example/d/scout",
    prometheus_url="http://prometheus.example",
)
ANALYSIS = Analysis(
    summary="<!channel> Uplink of site A is down",
    root_cause="sw1 Gi0/1 lost carrier",
    impact="Site A is offline",
    actions=("Check the SFP on sw1 Gi0/1", "Call the carrier"),
    confidence=0.8,
    false_positive_likelihood=0.1,
)
ENRICHED = 'scout_enriched="true"'
SCOUT_LABELS = {"scout_enriched": "true", "scout_incident": "inc-1", "scout_priority": "P2"}


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def member(
    alertname: str,
    instance: str = "sw1",
    *,
    status: str = "firing",
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    generator_url: str = "http://prometheus.example/graph?g0.expr=up",
    **labels: str,
) -> Member:
    all_labels = {"alertname": alertname, "instance": instance, "severity": "critical", **labels}
    start = starts_at or datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    return Member(
        fingerprint=fingerprint(all_labels),
        labels=all_labels,
        annotations={"summary": f"{alertname} on {instance}"},
        status="firing" if status == "firing" else "resolved",
        starts_at=start,
        first_starts_at=start,
        ends_at=ends_at,
        generator_url=generator_url,
    )


def incident(
    *members: Member,
    id: str = "inc-1",
    priority: str = "P2",
    status: str = "open",
    analysis: Analysis | None = ANALYSIS,
    resolved_at: datetime | None = None,
) -> Incident:
    now = datetime.now(UTC)
    return Incident(
        id=id,
        status="open" if status == "open" else "resolved",
        group={"site": "a"},
        members={m.fingerprint: m for m in members},
        created_at=now,
        updated_at=now,
        priority=priority,  # type: ignore[arg-type]
        analysis=analysis,
        resolved_at=resolved_at,
    )


def raw_postable(m: Member, ends_at: datetime | None = None) -> dict[str, Any]:
    return postable(
        m.labels,
        m.annotations,
        starts_at=m.starts_at,
        ends_at=ends_at,
        generator_url=m.generator_url,
    )


def counter(metrics: SidecarMetrics, name: str, peer: str) -> float:
    value = metrics.registry.get_sample_value(
        f"scout_sidecar_return_trip_{name}_total", {"peer": peer}
    )
    return value or 0.0


def enriched_in(am: Alertmanager) -> dict[str, dict[str, Any]]:
    """Active enriched copies in ``am`` by their scout_priority + alertname."""
    return {
        f"{a['labels']['alertname']}/{a['labels']['scout_priority']}": a
        for a in am.alerts(ENRICHED)
    }


async def table(db: Store) -> list[tuple[Any, ...]]:
    return [(row.peer, row.state, row.due_at) for row in await db.list_posts()]


# --- fixtures -------------------------------------------------------------------


@pytest.fixture
def hook() -> Iterator[SlackSink]:
    """Stands in for the sidecar's webhook (and for Slack) behind the Alertmanagers."""
    with SlackSink() as sink:
        yield sink


@pytest.fixture
def am_config(tmp_path: Path, hook: SlackSink) -> Path:
    return render_config(
        tmp_path, sidecar_url=hook.base_url, slack_url=hook.url, smtp_smarthost="127.0.0.1:9"
    )


@pytest.fixture
def alertmanager(tmp_path: Path, am_config: Path) -> Iterator[Alertmanager]:
    with Alertmanager(tmp_path, am_config) as am:
        yield am


@pytest.fixture
def sink() -> Iterator[SlackSink]:
    """A peer that records exactly what was posted (and has no GET)."""
    with SlackSink() as peer:
        yield peer


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Store]:
    database = await SqliteStore.open(tmp_path / "store" / "scout.db")
    yield database
    await database.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


class Trip:
    """A ReturnTrip with its clock, metrics and what it handed to take_in."""

    def __init__(
        self,
        db: Store,
        peers: list[str],
        session: aiohttp.ClientSession,
        policy: ReturnTripPolicy = POLICY,
        clock: Clock | None = None,
    ) -> None:
        self.clock = clock or Clock()
        self.metrics = create_metrics()
        self.missing: list[list[Alert]] = []  # what take_in got, call by call

        async def take_in(alerts: Any) -> None:
            self.missing.append(list(alerts))

        self.trip = ReturnTrip(
            db,
            peers,
            policy,
            self.metrics,
            session,
            take_in=take_in,
            clock=self.clock,
        )

    def posts(self, peer: str) -> float:
        return counter(self.metrics, "posts", peer)

    def failures(self, peer: str) -> float:
        return counter(self.metrics, "failures", peer)


# --- the enriched copy ----------------------------------------------------------


def test_enriched_alert_is_the_raw_alert_plus_the_analysis():
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    m = replace(
        member("LinkDown", site="a", starts_at=now - timedelta(minutes=3)),
        annotations={"summary": "down <!here>", "runbook_url": "http://wiki/rb"},
    )
    alert = enriched_alert(incident(m, priority="P1"), m, POLICY, now)
    assert alert["labels"] == {
        "alertname": "LinkDown",
        "instance": "sw1",
        "severity": "critical",
        "site": "a",
        "scout_enriched": "true",
        "scout_incident": "inc-1",
        "scout_priority": "P1",
    }
    assert alert["annotations"] == {
        # Original annotations stay, sanitised too: they may quote device text.
        "summary": "down here",
        "runbook_url": "http://wiki/rb",
        "ai_summary": "channel Uplink of site A is down",
        "ai_root_cause": "sw1 Gi0/1 lost carrier",
        "ai_impact": "Site A is offline",
        "ai_actions": "1. Check the SFP on sw1 Gi0/1\n2. Call the carrier",
        "scout_incident_url": "http://127.0.0.1:8782/api/v1/incidents/inc-1",
        "prometheus_url": "http://prometheus.example/graph?g0.expr=up",
        "grafana_url": "http://grafana.example/d/scout",
    }
    assert alert["startsAt"] == "2024-05-01T11:57:00Z"
    assert alert["endsAt"] == "2024-05-01T12:05:00Z"  # now + keepalive
    assert alert["generatorURL"] == "http://prometheus.example/graph?g0.expr=up"


def test_enriched_alert_ends_when_the_member_or_incident_resolved():
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    start = now - timedelta(minutes=10)
    gone = member(
        "LinkDown", status="resolved", starts_at=start, ends_at=now - timedelta(minutes=2)
    )
    assert enriched_alert(incident(gone), gone, POLICY, now)["endsAt"] == "2024-05-01T11:58:00Z"
    firing = member("LinkDown", starts_at=start)
    closed = incident(firing, status="resolved", resolved_at=now - timedelta(minutes=1))
    assert enriched_alert(closed, firing, POLICY, now)["endsAt"] == "2024-05-01T11:59:00Z"
    # An end in the future would keep the copy firing in Alertmanager until then.
    later = member("LinkDown", status="resolved", starts_at=start, ends_at=now + timedelta(hours=1))
    assert enriched_alert(incident(later), later, POLICY, now)["endsAt"] == format_time(now)


def test_enriched_alert_links_only_what_is_configured():
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    m = member("HostDown", generator_url="")
    alert = enriched_alert(incident(m), m, ReturnTripPolicy(), now)
    assert "generatorURL" not in alert
    links = {"scout_incident_url", "prometheus_url", "grafana_url"}
    assert links.isdisjoint(alert["annotations"])
    alert = enriched_alert(incident(m), m, ReturnTripPolicy(prometheus_url="http://p:9090"), now)
    assert alert["annotations"]["prometheus_url"] == "http://p:9090"


def test_policy_refuses_a_repost_interval_that_lets_copies_expire():
    from ai_sidecar.errors import ConfigError

    with pytest.raises(ConfigError, match="repost_interval must be shorter than keepalive"):
        ReturnTripPolicy(keepalive=timedelta(minutes=1), repost_interval=timedelta(minutes=1))


def test_fingerprint_is_the_one_alertmanager_computes(alertmanager):
    label_sets = [
        {"alertname": "A"},
        {"alertname": "LinkDown", "instance": "sw1:161", "ifName": "Gi0/1", "site": "zürich"},
        {"alertname": "B", "scout_enriched": "true", "z": "", "a_b": "x\ny"},
    ]
    alertmanager.post([postable(labels) for labels in label_sets])
    seen = {tuple(sorted(a["labels"].items())): a["fingerprint"] for a in alertmanager.alerts()}
    # Alertmanager drops empty label values, which do not change the fingerprint either.
    expected = {
        tuple(sorted((k, v) for k, v in labels.items() if v)): fingerprint(labels)
        for labels in label_sets
    }
    assert seen == expected


# --- the premise of reconciliation ----------------------------------------------------


def test_premise_inhibited_resolution_never_reaches_the_webhook(alertmanager, hook):
    """The shipped inhibition mutes a raw alert's resolution to the sidecar too."""
    muted, control = member("LinkDown", "sw1"), member("LinkDown", "sw2")
    alertmanager.post([raw_postable(muted), raw_postable(control)])

    def webhook_alerts(status: str) -> set[str]:
        return {
            alert["fingerprint"]
            for request in hook.requests()
            if request.path == "/api/v1/alertmanager"
            for alert in request.body["alerts"]
            if alert["status"] == status
        }

    wait_for(lambda: webhook_alerts("firing") == {muted.fingerprint, control.fingerprint})
    copy = enriched_alert(incident(muted), muted, POLICY, datetime.now(UTC))
    alertmanager.post([copy])
    listed = wait_for(
        lambda: [
            a
            for a in alertmanager.alerts(*[v for k, v in RAW_ALERTS_QUERY if k == "filter"])
            if a["status"]["inhibitedBy"]
        ],
        what="the raw alert inhibited by its enriched copy",
    )
    # The reconciliation query lists the inhibited raw alert, with the webhook's
    # fingerprint, and never the copy.
    assert [a["fingerprint"] for a in listed] == [muted.fingerprint]
    assert listed[0]["status"]["inhibitedBy"] == [fingerprint(copy["labels"])]
    raw = alertmanager.alerts(**{k: v for k, v in RAW_ALERTS_QUERY if k != "filter"})
    assert {a["fingerprint"] for a in raw} == {
        muted.fingerprint,
        control.fingerprint,
        fingerprint(copy["labels"]),
    }

    now = datetime.now(UTC)
    alertmanager.post([raw_postable(muted, ends_at=now), raw_postable(control, ends_at=now)])
    # The control's resolution arrives: resolutions do reach the webhook ...
    wait_for(lambda: control.fingerprint in webhook_alerts("resolved"), what="control resolved")
    # ... but the inhibited one's never does, not even after several group intervals ...
    time.sleep(4)
    assert muted.fingerprint not in webhook_alerts("resolved")
    # ... nor once the copy that muted it is gone.
    alertmanager.post([{**copy, "endsAt": format_time(datetime.now(UTC))}])
    time.sleep(3)
    assert muted.fingerprint not in webhook_alerts("resolved")
    # And once resolved, a raw alert is not listed any more: that is what
    # reconciliation looks for.
    assert [a["fingerprint"] for a in alertmanager.alerts('scout_enriched!="true"')] == []


# --- posting, keep-alive and resolution ------------------------------------------------


async def test_posts_enriched_copies_to_every_peer(tmp_path, am_config, db, session):
    a, b = member("LinkDown", "sw1"), member("BgpDown", "r1")
    with (
        Alertmanager(tmp_path, am_config, name="am-1") as one,
        Alertmanager(tmp_path, am_config, name="am-2") as two,
    ):
        for am in (one, two):
            am.post([raw_postable(a), raw_postable(b)])
        trip = Trip(db, [one.url, two.url + "/"], session)
        await trip.trip.schedule([incident(a, b, priority="P1")])
        assert await trip.trip.pending() == 4
        await trip.trip.run_once()
        assert await trip.trip.pending() == 0
        for am in (one, two):
            copies = await asyncio.to_thread(enriched_in, am)
            assert set(copies) == {"LinkDown/P1", "BgpDown/P1"}
            link = copies["LinkDown/P1"]
            assert link["labels"] == {
                **a.labels,
                "scout_enriched": "true",
                "scout_incident": "inc-1",
                "scout_priority": "P1",
            }
            assert link["annotations"]["ai_summary"] == "channel Uplink of site A is down"
            assert link["annotations"]["ai_actions"].splitlines() == [
                "1. Check the SFP on sw1 Gi0/1",
                "2. Call the carrier",
            ]
            assert parse_time(link["startsAt"]) == a.starts_at
            assert parse_time(link["endsAt"]) == trip.clock.now + POLICY.keepalive
            assert link["generatorURL"] == a.generator_url
            # The copies mute their raw alerts.
            raw = {r["fingerprint"]: r for r in am.alerts('scout_enriched!="true"')}
            assert raw[a.fingerprint]["status"]["inhibitedBy"] == [link["fingerprint"]]
            assert trip.posts(am.url) == 2
        assert trip.metrics.registry.get_sample_value("scout_sidecar_return_trip_queue") == 0


async def test_keepalive_reposts_before_endsat(alertmanager, db, session):
    a = member("LinkDown")
    trip = Trip(db, [alertmanager.url], session)
    await trip.trip.schedule([incident(a)])
    t0 = trip.clock.now
    next_at = await trip.trip.run_once()
    assert next_at == t0 + POLICY.repost_interval
    ends = lambda: parse_time(enriched_in(alertmanager)["LinkDown/P2"]["endsAt"])  # noqa: E731
    assert await asyncio.to_thread(ends) == t0 + POLICY.keepalive
    trip.clock.advance(seconds=30)
    await trip.trip.run_once()
    assert trip.posts(alertmanager.url) == 1  # not due yet
    for minute in (1, 2, 3):
        trip.clock.now = t0 + timedelta(minutes=minute)
        await trip.trip.run_once()
        assert trip.posts(alertmanager.url) == 1 + minute
        assert await asyncio.to_thread(ends) == trip.clock.now + POLICY.keepalive


async def test_resolution_is_posted_repeated_then_forgotten(alertmanager, sink, db, session):
    a, b = member("LinkDown"), member("BgpDown")
    trip = Trip(db, [alertmanager.url, sink.base_url], session)
    await trip.trip.schedule([incident(a, b)])
    await trip.trip.run_once()
    assert set(await asyncio.to_thread(enriched_in, alertmanager)) == {"LinkDown/P2", "BgpDown/P2"}

    ended = trip.clock.now - timedelta(seconds=5)
    await trip.trip.schedule([incident(replace(a, status="resolved", ends_at=ended), b)])
    t0 = trip.clock.now
    await trip.trip.run_once()
    # Alertmanager took the resolution: only the firing copy is left.
    assert set(await asyncio.to_thread(enriched_in, alertmanager)) == {"BgpDown/P2"}

    def resolutions() -> list[dict[str, Any]]:
        return [
            alert
            for body in sink.messages()
            for alert in body
            if alert["labels"]["alertname"] == "LinkDown" and alert["endsAt"] == format_time(ended)
        ]

    assert len(resolutions()) == 1
    repeated_at = []
    for _ in range(14):
        trip.clock.advance(seconds=30)
        before = len(resolutions())
        await trip.trip.run_once()
        if len(resolutions()) > before:
            repeated_at.append(int((trip.clock.now - t0).total_seconds()))
    # Every resolved_repeat_interval for resolved_repeat_for, then forgotten.
    assert repeated_at == [60, 120, 180, 240, 300]
    rows = [(row.member, row.state) for row in await db.list_posts()]
    assert sorted(rows) == [(b.fingerprint, "firing")] * 2
    # The firing member was kept alive all along.
    assert parse_time(enriched_in(alertmanager)["BgpDown/P2"]["endsAt"]) > trip.clock.now


async def test_resolved_incident_resolves_every_copy(alertmanager, db, session):
    a, b = member("LinkDown"), member("BgpDown")
    trip = Trip(db, [alertmanager.url], session)
    await trip.trip.schedule([incident(a, b)])
    await trip.trip.run_once()
    closed = incident(a, b, status="resolved", resolved_at=trip.clock.now - timedelta(seconds=1))
    await trip.trip.schedule([closed])
    await trip.trip.run_once()
    assert await asyncio.to_thread(enriched_in, alertmanager) == {}


async def test_incidents_without_analysis_are_not_posted(alertmanager, db, session):
    trip = Trip(db, [alertmanager.url], session)
    await trip.trip.schedule([incident(member("LinkDown"), analysis=None)])
    assert await table(db) == []
    await trip.trip.run_once()
    assert await asyncio.to_thread(enriched_in, alertmanager) == {}


async def test_new_analysis_is_posted_at_once(sink, db, session):
    a = member("LinkDown")
    trip = Trip(db, [sink.base_url], session)
    await trip.trip.schedule([incident(a)])
    await trip.trip.run_once()
    # The same incident again: nothing new, nothing posted before it is due.
    await trip.trip.schedule([incident(a)])
    await trip.trip.run_once()
    assert len(sink.messages()) == 1
    better = replace(ANALYSIS, summary="Carrier outage at site A")
    await trip.trip.schedule([incident(a, analysis=better)])
    await trip.trip.run_once()
    assert [x["annotations"]["ai_summary"] for x in sink.messages()[-1]] == [
        "Carrier outage at site A"
    ]


async def test_label_set_change_resolves_the_old_copy(alertmanager, sink, db, session):
    a = member("LinkDown")
    alertmanager.post([raw_postable(a)])
    trip = Trip(db, [alertmanager.url, sink.base_url], session)
    await trip.trip.schedule([incident(a, priority="P3")])
    await trip.trip.run_once()
    assert set(await asyncio.to_thread(enriched_in, alertmanager)) == {"LinkDown/P3"}
    await trip.trip.schedule([incident(a, priority="P1")])
    await trip.trip.run_once()
    copies = await asyncio.to_thread(enriched_in, alertmanager)
    assert set(copies) == {"LinkDown/P1"}
    # The old copy was resolved now; the raw alert stays muted by the new one.
    posted = {x["labels"]["scout_priority"]: x for x in sink.messages()[-1]}
    assert posted["P3"]["endsAt"] == format_time(trip.clock.now)
    assert parse_time(posted["P1"]["endsAt"]) == trip.clock.now + POLICY.keepalive
    raw = alertmanager.alerts('scout_enriched!="true"')
    assert raw[0]["status"]["inhibitedBy"] == [copies["LinkDown/P1"]["fingerprint"]]


async def test_member_leaving_an_incident_resolves_its_copy(sink, db, session):
    a, b = member("LinkDown"), member("BgpDown")
    trip = Trip(db, [sink.base_url], session)
    await trip.trip.schedule([incident(a, b)])
    await trip.trip.run_once()
    trip.clock.advance(seconds=10)
    await trip.trip.schedule([incident(a)])
    await trip.trip.run_once()
    assert [(x["labels"]["alertname"], x["endsAt"]) for x in sink.messages()[-1]] == [
        ("BgpDown", format_time(trip.clock.now))
    ]


async def test_big_backlogs_are_posted_in_chunks(sink, db, session):
    members = [member("LinkDown", f"sw{n}") for n in range(5)]
    trip = Trip(db, [sink.base_url], session, replace(POLICY, max_batch=2))
    await trip.trip.schedule([incident(*members)])
    await trip.trip.run_once()
    assert [len(body) for body in sink.messages()] == [2, 2, 1]
    assert trip.posts(sink.base_url) == 5


# --- failures -------------------------------------------------------------------


async def test_failing_peer_backs_off_and_recovers(tmp_path, am_config, alertmanager, db, session):
    dead_port = free_port()
    dead = f"http://127.0.0.1:{dead_port}"
    policy = replace(POLICY, retry_backoff_max=timedelta(seconds=8))
    trip = Trip(db, [alertmanager.url, dead], session, policy)
    await trip.trip.schedule([incident(member("LinkDown"))])
    t0 = trip.clock.now
    assert await trip.trip.run_once() == t0 + timedelta(seconds=1)
    assert (trip.posts(alertmanager.url), trip.failures(dead)) == (1, 1)
    # Not retried before its backoff has passed.
    await trip.trip.run_once()
    assert trip.failures(dead) == 1
    assert await trip.trip.pending() == 1
    for n, delay in enumerate([2, 4, 8, 8], start=2):
        trip.clock.advance(seconds=1 if n == 2 else [2, 4, 8, 8][n - 3])
        next_at = await trip.trip.run_once()
        assert trip.failures(dead) == n
        assert next_at == trip.clock.now + timedelta(seconds=delay)
    # The healthy peer was not held up: its keep-alive is on schedule.
    assert trip.posts(alertmanager.url) == 1
    with Alertmanager(tmp_path, am_config, name="revived", port=dead_port) as revived:
        trip.clock.advance(seconds=8)
        next_at = await trip.trip.run_once()
        assert trip.posts(dead) == 1
        assert trip.failures(dead) == 5
        assert set(await asyncio.to_thread(enriched_in, revived)) == {"LinkDown/P2"}
        # Recovered: back on the keep-alive schedule.
        assert await trip.trip.pending() == 0
        assert next_at == t0 + POLICY.repost_interval


async def test_5xx_and_timeouts_are_failures_and_the_rows_stay(db, session):
    with socket.socket() as silent, SlackSink(status=503) as unavailable:
        # Accepts connections (the kernel's backlog) but never answers.
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        mute = f"http://127.0.0.1:{silent.getsockname()[1]}"
        policy = replace(POLICY, post_timeout=timedelta(seconds=0.5))
        trip = Trip(db, [unavailable.base_url, mute], session, policy)
        await trip.trip.schedule([incident(member("LinkDown"))])
        started = time.monotonic()
        await trip.trip.run_once()
        assert time.monotonic() - started < 3
        assert trip.failures(unavailable.base_url) == 1
        assert trip.failures(mute) == 1
        assert len(unavailable.messages()) == 1
        assert await trip.trip.pending() == 2
        unavailable.status = 200
        trip.clock.advance(seconds=1)
        await trip.trip.run_once()
        assert trip.posts(unavailable.base_url) == 1


async def test_refused_alert_is_dropped_and_the_rest_posted(alertmanager, db, session, caplog):
    good = member("LinkDown")
    bad = member("LinkDown", "sw2", **{"bad-label": "x"})  # not a valid label name
    trip = Trip(db, [alertmanager.url], session)
    await trip.trip.schedule([incident(good, bad)])
    await trip.trip.run_once()
    assert set(await asyncio.to_thread(enriched_in, alertmanager)) == {"LinkDown/P2"}
    assert (trip.posts(alertmanager.url), trip.failures(alertmanager.url)) == (1, 1)
    [refusal] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "invalid label set" in refusal.reply
    assert refusal.fingerprint == fingerprint({**bad.labels, **SCOUT_LABELS})
    rows = [(row.member,) for row in await db.list_posts()]
    assert rows == [(good.fingerprint,)]
    # Dropped, not retried.
    trip.clock.advance(minutes=1)
    await trip.trip.run_once()
    assert trip.failures(alertmanager.url) == 1


# --- durability -----------------------------------------------------------------


async def test_restart_resumes_from_the_table(tmp_path, alertmanager, session):
    path = tmp_path / "restart" / "scout.db"
    clock = Clock()
    first = await SqliteStore.open(path)
    await Trip(first, [alertmanager.url], session, clock=clock).trip.schedule(
        [incident(member("LinkDown"))]
    )
    await first.close()  # stopped before posting anything

    second = await SqliteStore.open(path)
    trip = Trip(second, [alertmanager.url], session, clock=clock)
    await trip.trip.run_once()
    assert set(await asyncio.to_thread(enriched_in, alertmanager)) == {"LinkDown/P2"}
    await second.close()

    third = await SqliteStore.open(path)
    try:
        trip = Trip(third, [alertmanager.url], session, clock=clock)
        clock.advance(seconds=30)
        await trip.trip.run_once()
        assert trip.posts(alertmanager.url) == 0  # its schedule survived the restart
        clock.advance(seconds=30)
        await trip.trip.run_once()
        assert trip.posts(alertmanager.url) == 1
    finally:
        await third.close()


async def test_peers_added_or_removed_across_restarts(tmp_path, sink, db, session):
    with SlackSink() as added:
        first = Trip(db, [sink.base_url], session)
        await first.trip.schedule([incident(member("LinkDown"))])
        await first.trip.run_once()
        second = Trip(db, [added.base_url], session, clock=first.clock)
        await second.trip.run_once()
        assert [x["labels"]["alertname"] for x in added.messages()[0]] == ["LinkDown"]
        rows = [(row.peer,) for row in await db.list_posts()]
        assert rows == [(added.base_url,)]


async def test_run_posts_as_soon_as_scheduled_and_stops_when_cancelled(alertmanager, db, session):
    trip = Trip(db, [alertmanager.url], session)
    trip.trip = ReturnTrip(
        db,
        [alertmanager.url],
        POLICY,
        trip.metrics,
        session,
        take_in=lambda _: asyncio.sleep(0),
    )
    task = asyncio.create_task(trip.trip.run())
    await asyncio.sleep(0.2)  # idle: nothing scheduled
    started = time.monotonic()
    await trip.trip.schedule([incident(member("LinkDown"))])
    while not await asyncio.to_thread(enriched_in, alertmanager):
        assert time.monotonic() - started < 5, "run() did not wake up"
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# --- reconciliation -------------------------------------------------------------


async def test_reconciliation_resolves_members_gone_from_every_peer(
    tmp_path, am_config, db, session
):
    kept, elsewhere, gone = member("LinkDown"), member("BgpDown", "r1"), member("HostDown", "h1")
    with (
        Alertmanager(tmp_path, am_config, name="am-1") as one,
        Alertmanager(tmp_path, am_config, name="am-2") as two,
    ):
        one.post([raw_postable(kept), raw_postable(gone)])
        two.post([raw_postable(kept), raw_postable(elsewhere), raw_postable(gone)])
        trip = Trip(db, [one.url, two.url], session)
        await trip.trip.schedule([incident(kept, elsewhere, gone)])
        t0 = trip.clock.now
        await trip.trip.run_once()
        # Prometheus resolves HostDown; the resolution never reaches the sidecar.
        now = datetime.now(UTC)
        for am in (one, two):
            am.post([raw_postable(gone, ends_at=now)])
        trip.clock.advance(minutes=1)
        await trip.trip.run_once()
        assert trip.missing == []  # first seen missing: within the grace
        trip.clock.advance(minutes=1)
        await trip.trip.run_once()
        assert trip.missing == []
        trip.clock.advance(minutes=1)
        await trip.trip.run_once()
        [[alert]] = trip.missing
        assert alert == Alert(
            fingerprint=gone.fingerprint,
            status="resolved",
            labels=gone.labels,
            annotations=gone.annotations,
            starts_at=gone.starts_at,
            ends_at=trip.clock.now,
            generator_url=gone.generator_url,
        )
        # Missing since t0 + 1m, reported after the grace of two repost intervals.
        assert trip.clock.now - t0 == timedelta(minutes=3)
        # The pipeline resolves the member; its copy is resolved everywhere.
        resolved = replace(gone, status="resolved", ends_at=now)
        await trip.trip.schedule([incident(kept, elsewhere, resolved)])
        await trip.trip.run_once()
        for am in (one, two):
            assert set(await asyncio.to_thread(enriched_in, am)) == {
                "LinkDown/P2",
                "BgpDown/P2",
            }


async def test_reconciliation_does_nothing_when_no_peer_answers(db, session):
    dead = f"http://127.0.0.1:{free_port()}"
    trip = Trip(db, [dead], session)
    await trip.trip.schedule([incident(member("LinkDown"))])
    for _ in range(6):
        await trip.trip.run_once()
        trip.clock.advance(minutes=1)
    assert trip.missing == []


async def test_reconciliation_grace_can_be_set(alertmanager, db, session):
    present, absent = member("LinkDown"), member("HostDown", "h1")
    alertmanager.post([raw_postable(present)])
    trip = Trip(db, [alertmanager.url], session, replace(POLICY, missing_grace=timedelta(0)))
    await trip.trip.schedule([incident(present, absent)])
    await trip.trip.run_once()
    assert [[a.fingerprint for a in alerts] for alerts in trip.missing] == [[absent.fingerprint]]
    # Reconciliation runs once per repost interval, not on every round.
    await trip.trip.run_once()
    assert len(trip.missing) == 1


async def test_copies_almost_due_share_the_request_of_those_due(sink, db, session):
    trip = Trip(db, [sink.base_url], session)
    await trip.trip.schedule([incident(member("LinkDown"), id="inc-1")])
    await trip.trip.run_once()
    trip.clock.advance(seconds=10)
    await trip.trip.schedule([incident(member("BgpDown", "r1"), id="inc-2")])
    await trip.trip.run_once()
    assert [len(body) for body in sink.messages()] == [1, 1]
    # At t0 + 60 s the first is due and the second, due at t0 + 70 s, rides along.
    trip.clock.advance(seconds=50)
    await trip.trip.run_once()
    assert sorted(x["labels"]["alertname"] for x in sink.messages()[-1]) == ["BgpDown", "LinkDown"]
    # Not earlier than a quarter of the repost interval: at t0 + 90 s nothing is posted.
    trip.clock.advance(seconds=30)
    await trip.trip.run_once()
    assert len(sink.messages()) == 3


async def test_a_sibling_muted_through_an_unlisted_label_is_taken_in(alertmanager, db, session):
    # `partition` is not in the inhibition's `equal` list, so the copy of C:
    # also mutes the raw D: alert, which therefore never reaches the webhook.
    c_drive = member("DiskFull", "h1", partition="C:")
    d_drive = member("DiskFull", "h1", partition="D:")
    other = member("DiskFull", "h2", partition="D:")
    alertmanager.post([raw_postable(c_drive), raw_postable(d_drive), raw_postable(other)])
    trip = Trip(db, [alertmanager.url], session)
    await trip.trip.schedule([incident(c_drive)])
    await trip.trip.run_once()
    [taken] = trip.missing
    assert [(a.fingerprint, a.status) for a in taken] == [(d_drive.fingerprint, "firing")]
    [alert] = taken
    assert alert.labels == d_drive.labels
    assert alert.starts_at == d_drive.starts_at
    # h2's alert is not muted: the webhook delivers it the normal way.
    assert other.fingerprint not in {a.fingerprint for a in taken}

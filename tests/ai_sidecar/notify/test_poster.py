"""The poster against real Alertmanagers: posting, keep-alive, resolution, failures, restarts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from ai_sidecar.i18n import UnknownLanguageError
from ai_sidecar.models import format_time, parse_time
from ai_sidecar.notify import (
    ReturnTrip,
    fingerprint,
)
from ai_sidecar.store import SqliteStore
from scripts.localstack import free_port
from tests.ai_sidecar.builders import ANALYSIS, analysed_incident, peer_member
from tests.ai_sidecar.notify.harness import (
    POLICY,
    SCOUT_LABELS,
    Clock,
    Trip,
    enriched_in,
    raw_postable,
    table,
)
from tests.peers.alertmanager import Alertmanager
from tests.peers.notify import SlackSink

# --- posting, keep-alive and resolution ------------------------------------------------


async def test_posts_enriched_copies_to_every_peer(tmp_path, am_config, db, session):
    a, b = peer_member("LinkDown", "sw1"), peer_member("BgpDown", "r1")
    with (
        Alertmanager(tmp_path, am_config, name="am-1") as one,
        Alertmanager(tmp_path, am_config, name="am-2") as two,
    ):
        for am in (one, two):
            am.post([raw_postable(a), raw_postable(b)])
        trip = Trip(db, [one.url, two.url + "/"], session)
        await trip.trip.schedule([analysed_incident(a, b, priority="P1")])
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
            # A copy starts when first posted, so Alertmanager's group_wait applies to it.
            assert parse_time(link["startsAt"]) == trip.clock.now
            assert trip.clock.now > a.starts_at
            assert parse_time(link["endsAt"]) == trip.clock.now + POLICY.keepalive
            assert link["generatorURL"] == a.generator_url
            # The copies mute their raw alerts.
            raw = {r["fingerprint"]: r for r in am.alerts('scout_enriched!="true"')}
            assert raw[a.fingerprint]["status"]["inhibitedBy"] == [link["fingerprint"]]
            assert trip.posts(am.url) == 2
        assert trip.metrics.registry.get_sample_value("scout_sidecar_return_trip_queue") == 0


async def test_keepalive_reposts_before_endsat(alertmanager, db, session):
    a = peer_member("LinkDown")
    trip = Trip(db, [alertmanager.url], session)
    await trip.trip.schedule([analysed_incident(a)])
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
    a, b = peer_member("LinkDown"), peer_member("BgpDown")
    trip = Trip(db, [alertmanager.url, sink.base_url], session)
    await trip.trip.schedule([analysed_incident(a, b)])
    await trip.trip.run_once()
    assert set(await asyncio.to_thread(enriched_in, alertmanager)) == {"LinkDown/P2", "BgpDown/P2"}

    ended = trip.clock.now - timedelta(seconds=5)
    await trip.trip.schedule([analysed_incident(replace(a, status="resolved", ends_at=ended), b)])
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
    a, b = peer_member("LinkDown"), peer_member("BgpDown")
    trip = Trip(db, [alertmanager.url], session)
    await trip.trip.schedule([analysed_incident(a, b)])
    await trip.trip.run_once()
    closed = analysed_incident(
        a, b, status="resolved", resolved_at=trip.clock.now - timedelta(seconds=1)
    )
    await trip.trip.schedule([closed])
    await trip.trip.run_once()
    assert await asyncio.to_thread(enriched_in, alertmanager) == {}


async def test_incidents_without_analysis_are_not_posted(alertmanager, db, session):
    trip = Trip(db, [alertmanager.url], session)
    await trip.trip.schedule([analysed_incident(peer_member("LinkDown"), analysis=None)])
    assert await table(db) == []
    await trip.trip.run_once()
    assert await asyncio.to_thread(enriched_in, alertmanager) == {}


async def test_new_analysis_is_posted_at_once(sink, db, session):
    a = peer_member("LinkDown")
    trip = Trip(db, [sink.base_url], session)
    await trip.trip.schedule([analysed_incident(a)])
    await trip.trip.run_once()
    # The same incident again: nothing new, nothing posted before it is due.
    await trip.trip.schedule([analysed_incident(a)])
    await trip.trip.run_once()
    assert len(sink.messages()) == 1
    better = replace(ANALYSIS, summary="Carrier outage at site A")
    await trip.trip.schedule([analysed_incident(a, analysis=better)])
    await trip.trip.run_once()
    assert [x["annotations"]["ai_summary"] for x in sink.messages()[-1]] == [
        "Carrier outage at site A"
    ]


async def test_label_set_change_resolves_the_old_copy(alertmanager, sink, db, session):
    a = peer_member("LinkDown")
    alertmanager.post([raw_postable(a)])
    trip = Trip(db, [alertmanager.url, sink.base_url], session)
    await trip.trip.schedule([analysed_incident(a, priority="P3")])
    await trip.trip.run_once()
    assert set(await asyncio.to_thread(enriched_in, alertmanager)) == {"LinkDown/P3"}
    await trip.trip.schedule([analysed_incident(a, priority="P1")])
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
    a, b = peer_member("LinkDown"), peer_member("BgpDown")
    trip = Trip(db, [sink.base_url], session)
    await trip.trip.schedule([analysed_incident(a, b)])
    await trip.trip.run_once()
    trip.clock.advance(seconds=10)
    await trip.trip.schedule([analysed_incident(a)])
    await trip.trip.run_once()
    # The one left is posted again too: its title no longer counts a related alert.
    posted = {x["labels"]["alertname"]: x for x in sink.messages()[-1]}
    assert posted["BgpDown"]["endsAt"] == format_time(trip.clock.now)
    assert parse_time(posted["LinkDown"]["endsAt"]) == trip.clock.now + POLICY.keepalive
    assert (
        posted["LinkDown"]["annotations"]["scout_title"] == "P2 · an interface down on sw1 (site a)"
    )


async def test_big_backlogs_are_posted_in_chunks(sink, db, session):
    members = [peer_member("LinkDown", f"sw{n}") for n in range(5)]
    trip = Trip(db, [sink.base_url], session, replace(POLICY, max_batch=2))
    await trip.trip.schedule([analysed_incident(*members)])
    await trip.trip.run_once()
    assert [len(body) for body in sink.messages()] == [2, 2, 1]
    assert trip.posts(sink.base_url) == 5


class Permit:
    """A worker lease as the return trip sees it: seconds left of its lead, or none."""

    def __init__(self, granted: bool, seconds: float = 4.0) -> None:
        self.granted = granted
        self.seconds = seconds
        self.asked = 0

    def remaining(self) -> float:
        self.asked += 1
        return self.seconds if self.granted else 0.0

    def may_post(self) -> bool:
        return self.remaining() > 0


async def test_a_replica_whose_lead_is_not_confirmed_posts_nothing(sink, db, session):
    permit = Permit(granted=False)
    trip = Trip(db, [sink.base_url], session, permit=permit)
    await trip.trip.schedule([analysed_incident(peer_member("LinkDown"))])
    next_at = await trip.trip.run_once()
    assert permit.asked >= 1
    assert sink.messages() == []
    assert trip.posts(sink.base_url) == 0
    # The copy stays due, and the next round, confirmed again, posts it.
    assert next_at is not None
    assert next_at <= trip.clock.now + timedelta(seconds=1)
    permit.granted = True
    await trip.trip.run_once()
    assert len(sink.messages()) == 1


async def test_a_lead_about_to_lapse_posts_nothing(sink, db, session):
    # Under a second left: a post could still be on its way when another
    # replica's lead begins.
    permit = Permit(granted=True, seconds=0.5)
    trip = Trip(db, [sink.base_url], session, permit=permit)
    await trip.trip.schedule([analysed_incident(peer_member("LinkDown"))])
    await trip.trip.run_once()
    assert sink.messages() == []
    assert await trip.trip.pending() == 1
    permit.seconds = 3.0
    await trip.trip.run_once()
    assert len(sink.messages()) == 1


async def test_a_post_gives_up_when_the_lead_would_lapse(db, session):
    with socket.socket() as silent:
        # Accepts connections but never answers: only the timeout ends the post.
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        mute = f"http://127.0.0.1:{silent.getsockname()[1]}"
        # A post timeout far beyond the lead's 1.5 s: a post that outlived the lead
        # would take 20 s, so the ceiling can leave a loaded machine its pauses.
        policy = replace(POLICY, post_timeout=timedelta(seconds=20))
        trip = Trip(db, [mute], session, policy, permit=Permit(granted=True, seconds=1.5))
        await trip.trip.schedule([analysed_incident(peer_member("LinkDown"))])
        started = time.monotonic()
        # The round goes on to reconcile (a read, on the policy's timeout):
        # what must end with the lead is the post.
        posted = asyncio.Event()
        failed = trip.trip._failed

        def failed_and_noted(*args: Any) -> None:
            failed(*args)
            posted.set()

        trip.trip._failed = failed_and_noted  # type: ignore[method-assign]
        round_ = asyncio.create_task(trip.trip.run_once())
        await asyncio.wait_for(posted.wait(), 30)
        assert time.monotonic() - started < 8, "the post outlived the lead"
        assert trip.failures(mute) == 1
        # The reconciling read would wait out the 20 s; it is not what is tested here.
        round_.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await round_


async def test_not_posting_is_logged_once_per_change(sink, db, session, caplog):
    permit = Permit(granted=False)
    trip = Trip(db, [sink.base_url], session, permit=permit)
    await trip.trip.schedule([analysed_incident(peer_member("LinkDown"))])
    caplog.set_level(logging.INFO, logger="ai_sidecar.notify")

    def refusals() -> int:
        return sum(r.getMessage().startswith("not posting") for r in caplog.records)

    for _ in range(3):
        await trip.trip.run_once()
    assert refusals() == 1
    permit.granted = True
    await trip.trip.run_once()
    assert len(sink.messages()) == 1
    assert any(r.getMessage().startswith("posting again") for r in caplog.records)
    permit.granted = False
    trip.clock.advance(seconds=POLICY.repost_interval.total_seconds())
    for _ in range(2):
        await trip.trip.run_once()
    assert refusals() == 2


# --- failures -------------------------------------------------------------------


async def test_failing_peer_backs_off_and_recovers(tmp_path, am_config, alertmanager, db, session):
    dead_port = free_port()
    dead = f"http://127.0.0.1:{dead_port}"
    policy = replace(POLICY, retry_backoff_max=timedelta(seconds=8))
    trip = Trip(db, [alertmanager.url, dead], session, policy)
    await trip.trip.schedule([analysed_incident(peer_member("LinkDown"))])
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
        await trip.trip.schedule([analysed_incident(peer_member("LinkDown"))])
        started = time.monotonic()
        await trip.trip.run_once()
        # Ended by the 0.5 s timeouts, not the client's default of minutes (the
        # ceiling leaves a loaded machine its pauses).
        assert time.monotonic() - started < 10
        assert trip.failures(unavailable.base_url) == 1
        assert trip.failures(mute) == 1
        assert len(unavailable.messages()) == 1
        assert await trip.trip.pending() == 2
        unavailable.status = 200
        trip.clock.advance(seconds=1)
        await trip.trip.run_once()
        assert trip.posts(unavailable.base_url) == 1


async def test_refused_alert_is_dropped_and_the_rest_posted(alertmanager, db, session, caplog):
    good = peer_member("LinkDown")
    bad = peer_member("LinkDown", "sw2", **{"bad-label": "x"})  # not a valid label name
    trip = Trip(db, [alertmanager.url], session)
    await trip.trip.schedule([analysed_incident(good, bad)])
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


@pytest.mark.parametrize("status", [401, 403, 404, 405])
async def test_a_misconfigured_peer_keeps_the_copies_until_fixed(db, session, status):
    # An auth proxy's 401/403, a wrong path prefix's 404, a method its router refuses:
    # the peer is wrong, not the alerts, so they wait (with backoff) for the fix.
    with SlackSink(status=status) as peer:
        trip = Trip(db, [peer.base_url], session)
        await trip.trip.schedule([analysed_incident(peer_member("LinkDown"))])
        await trip.trip.run_once()
        assert trip.failures(peer.base_url) == 1
        assert await trip.trip.pending() == 1
        peer.status = 200
        trip.clock.advance(seconds=1)
        await trip.trip.run_once()
        assert trip.posts(peer.base_url) == 1
        assert await trip.trip.pending() == 0


async def test_a_clock_set_back_does_not_hold_a_failed_peer_for_as_long(db, session):
    with SlackSink(status=503) as peer:
        trip = Trip(db, [peer.base_url], session)
        await trip.trip.schedule([analysed_incident(peer_member("LinkDown"))])
        await trip.trip.run_once()
        assert trip.failures(peer.base_url) == 1  # backing off for a second
        # NTP steps the clock back an hour; the peer comes back.
        trip.clock.advance(hours=-1)
        peer.status = 200
        trip.clock.advance(seconds=1)
        await trip.trip.schedule([analysed_incident(peer_member("DeviceDown"))])
        await trip.trip.run_once()
        assert trip.posts(peer.base_url) == 2
        assert await trip.trip.pending() == 0


# --- durability -----------------------------------------------------------------


async def test_restart_resumes_from_the_table(tmp_path, alertmanager, session):
    path = tmp_path / "restart" / "scout.db"
    clock = Clock()
    first = await SqliteStore.open(path)
    await Trip(first, [alertmanager.url], session, clock=clock).trip.schedule(
        [analysed_incident(peer_member("LinkDown"))]
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
        await first.trip.schedule([analysed_incident(peer_member("LinkDown"))])
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
    await trip.trip.schedule([analysed_incident(peer_member("LinkDown"))])
    # Woken, it posts within its 0.5 s round gap; unwoken, it would idle on for
    # up to a minute.
    while not await asyncio.to_thread(enriched_in, alertmanager):
        assert time.monotonic() - started < 15, "run() did not wake up"
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_copies_almost_due_share_the_request_of_those_due(sink, db, session):
    trip = Trip(db, [sink.base_url], session)
    await trip.trip.schedule([analysed_incident(peer_member("LinkDown"), id="inc-1")])
    await trip.trip.run_once()
    trip.clock.advance(seconds=10)
    await trip.trip.schedule([analysed_incident(peer_member("BgpDown", "r1"), id="inc-2")])
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


async def test_a_new_language_takes_over_from_the_next_change_of_an_incident(sink, db, session):
    """A config reload's language: copies scheduled from then on are written in it."""
    a = peer_member("LinkDown")
    trip = Trip(db, [sink.base_url], session)
    await trip.trip.schedule([analysed_incident(a)])
    await trip.trip.run_once()
    [[english]] = sink.messages()
    assert "scout_lang" not in english["annotations"]
    assert " down on " in english["annotations"]["scout_title"]

    with pytest.raises(UnknownLanguageError):
        trip.trip.use_language("xx")
    assert trip.trip.language == "en"
    trip.trip.use_language("fr")
    sink.clear()
    await trip.trip.schedule([analysed_incident(a, priority="P1")])
    await trip.trip.run_once()
    french = [alert for body in sink.messages() for alert in body if not _ended(alert, trip)]
    assert [alert["annotations"]["scout_lang"] for alert in french] == ["fr"]
    assert french[0]["annotations"]["scout_title"].startswith("P1 · ")
    assert " tombée sur " in french[0]["annotations"]["scout_title"]


def _ended(alert: dict[str, Any], trip: Trip) -> bool:
    return parse_time(alert["endsAt"]) <= trip.clock.now

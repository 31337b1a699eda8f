"""Reconciliation against real Alertmanagers, and the Alertmanager behaviour behind it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from ai_sidecar.intake.reconcile import Reconciler
from ai_sidecar.models import Alert, AlertStatus, Member, format_time
from ai_sidecar.notify import (
    RAW_ALERTS_QUERY,
    enriched_alert,
    fingerprint,
)
from ai_sidecar.webhook import MAX_ANNOTATION_VALUE_CHARS
from scripts.localstack import free_port
from tests.ai_sidecar.builders import analysed_incident, peer_member
from tests.ai_sidecar.notify.harness import (
    POLICY,
    Trip,
    enriched_in,
    raw_postable,
)
from tests.conftest import wait_for
from tests.peers.alertmanager import Alertmanager

# --- the premise of reconciliation ----------------------------------------------------


# Starts real daemons: the slow lane (see the peers marker in pyproject).
pytestmark = pytest.mark.peers


def test_premise_inhibited_resolution_never_reaches_the_webhook(alertmanager, hook):
    """The shipped inhibition mutes a raw alert's resolution to the sidecar too."""
    muted, control = peer_member("LinkDown", "sw1"), peer_member("LinkDown", "sw2")
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
    copy = enriched_alert(analysed_incident(muted), muted, POLICY, datetime.now(UTC))
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


# --- reconciliation -------------------------------------------------------------


async def test_reconciliation_resolves_members_gone_from_every_peer(
    tmp_path, am_config, db, session
):
    kept, elsewhere, gone = (
        peer_member("LinkDown"),
        peer_member("BgpDown", "r1"),
        peer_member("HostDown", "h1"),
    )
    with (
        Alertmanager(tmp_path, am_config, name="am-1") as one,
        Alertmanager(tmp_path, am_config, name="am-2") as two,
    ):
        one.post([raw_postable(kept), raw_postable(gone)])
        two.post([raw_postable(kept), raw_postable(elsewhere), raw_postable(gone)])
        trip = Trip(db, [one.url, two.url], session)
        await trip.trip.schedule([analysed_incident(kept, elsewhere, gone)])
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
            # Stamped when last seen firing (t0), not when reported: the
            # Alertmanager API shows no resolved alert, so no endsAt to read.
            ends_at=t0,
            generator_url=gone.generator_url,
        )
        # Missing since t0 + 1m, reported after the grace of two repost intervals.
        assert trip.clock.now - t0 == timedelta(minutes=3)
        # The pipeline resolves the member; its copy is resolved everywhere.
        resolved = replace(gone, status="resolved", ends_at=now)
        await trip.trip.schedule([analysed_incident(kept, elsewhere, resolved)])
        await trip.trip.run_once()
        for am in (one, two):
            assert set(await asyncio.to_thread(enriched_in, am)) == {
                "LinkDown/P2",
                "BgpDown/P2",
            }


async def test_reconciliation_does_nothing_when_no_peer_answers(db, session):
    dead = f"http://127.0.0.1:{free_port()}"
    trip = Trip(db, [dead], session)
    await trip.trip.schedule([analysed_incident(peer_member("LinkDown"))])
    for _ in range(6):
        await trip.trip.run_once()
        trip.clock.advance(minutes=1)
    assert trip.missing == []


async def test_reconciliation_grace_can_be_set(alertmanager, db, session):
    present, absent = peer_member("LinkDown"), peer_member("HostDown", "h1")
    alertmanager.post([raw_postable(present)])
    trip = Trip(db, [alertmanager.url], session, replace(POLICY, missing_grace=timedelta(0)))
    await trip.trip.schedule([analysed_incident(present, absent)])
    await trip.trip.run_once()
    assert [[a.fingerprint for a in alerts] for alerts in trip.missing] == [[absent.fingerprint]]
    # Reconciliation runs once per repost interval, not on every round.
    await trip.trip.run_once()
    assert len(trip.missing) == 1


async def reconcile_until_taken(trip: Trip) -> None:
    """Reconciliations, a minute apart on the trip's clock, until one takes something in.

    Alertmanager applies what was just posted on its own time (its inhibitor
    learns of a new copy asynchronously): a read right after may not show it yet.
    """
    for _ in range(20):
        await trip.trip.run_once()
        if trip.missing:
            return
        trip.clock.advance(minutes=1)
        await asyncio.sleep(0.25)


async def test_a_sibling_muted_through_an_unlisted_label_is_taken_in(alertmanager, db, session):
    # `partition` is not in the inhibition's `equal` list, so the copy of C:
    # also mutes the raw D: alert, which therefore never reaches the webhook.
    c_drive = peer_member("DiskFull", "h1", partition="C:")
    d_drive = peer_member("DiskFull", "h1", partition="D:")
    other = peer_member("DiskFull", "h2", partition="D:")
    alertmanager.post([raw_postable(c_drive), raw_postable(d_drive), raw_postable(other)])
    trip = Trip(db, [alertmanager.url], session)
    await trip.trip.schedule([analysed_incident(c_drive)])
    # Alertmanager's inhibitor learns of the copy just posted on its own time: a
    # read right after may not show D: muted yet; the next reconciliation does.
    await reconcile_until_taken(trip)
    [taken] = trip.missing
    assert [(a.fingerprint, a.status) for a in taken] == [(d_drive.fingerprint, "firing")]
    [alert] = taken
    assert alert.labels == d_drive.labels
    assert alert.starts_at == d_drive.starts_at
    # h2's alert is not muted: the webhook delivers it the normal way.
    assert other.fingerprint not in {a.fingerprint for a in taken}


def _alert(m: Member, status: AlertStatus = "firing", ends_at: datetime | None = None) -> Alert:
    return Alert(
        fingerprint=m.fingerprint,
        status=status,
        labels=m.labels,
        annotations=m.annotations,
        starts_at=m.starts_at,
        ends_at=ends_at,
        generator_url=m.generator_url,
    )


async def test_a_refire_after_its_episode_resolved_is_taken_in(alertmanager, db, session):
    # The first episode's resolve was muted on the sidecar's receiver, so
    # Alertmanager's notification log still holds it as notified firing there
    # and withholds the re-fire (same labels, a new startsAt) from the webhook
    # for the route's repeat_interval. Its incident resolved: no copy fires.
    now = datetime.now(UTC).replace(microsecond=0)
    first = peer_member("InterfaceDown", "core1", starts_at=now - timedelta(minutes=10))
    refire = replace(first, starts_at=now - timedelta(seconds=37))
    # Delivered by the webhook to the microsecond; the API lists it to the
    # millisecond: the same episode, not taken in again.
    held = peer_member(
        "InterfaceDown", "core2", starts_at=now - timedelta(minutes=2, microseconds=-123_456)
    )
    # Never delivered and muted by no copy of ours: left to the webhook (the
    # people-only routes' alerts, Watchdog's, are listed too).
    stranger = peer_member("Watchdog", "prometheus")
    # A re-fire under the operator's maintenance silence: kept out, as from people.
    quiet = peer_member("InterfaceDown", "core3", starts_at=now - timedelta(minutes=10))
    quiet_refire = replace(quiet, starts_at=now - timedelta(seconds=30))
    await db.ingest(
        [
            _alert(first),
            _alert(first, "resolved", now - timedelta(minutes=5)),
            _alert(held),
            _alert(quiet),
            _alert(quiet, "resolved", now - timedelta(minutes=5)),
        ],
        now,
    )
    alertmanager.silence("instance", "core3")
    alertmanager.post(
        [
            raw_postable(refire),
            raw_postable(held),
            raw_postable(stranger),
            raw_postable(quiet_refire),
        ]
    )
    wait_for(
        lambda: len(alertmanager.alerts('scout_enriched!="true"')) == 4,
        what="the four raw alerts listed",
    )
    wait_for(
        lambda: len(alertmanager.alerts('instance="core3"', active="false")) == 1,
        what="the silenced re-fire listed as suppressed",
    )
    trip = Trip(db, [alertmanager.url], session)
    await reconcile_until_taken(trip)
    [taken] = trip.missing
    assert [(a.fingerprint, a.status, a.starts_at) for a in taken] == [
        (refire.fingerprint, "firing", refire.starts_at)
    ]
    assert taken[0].labels == refire.labels
    # Stored, the episode is known: the next reconciliations take nothing more.
    await db.ingest(taken, datetime.now(UTC))
    for _ in range(2):
        trip.clock.advance(minutes=1)
        await trip.trip.run_once()
    assert len(trip.missing) == 1


class NoRawAlerts:
    """A peer that answers, holding no raw alert at all."""

    async def raw_alerts(self, peer: str) -> list[dict[str, object]]:
        return []


async def test_a_replica_without_the_lead_takes_nothing_in(db, session):
    gone = peer_member("HostDown", "h1")
    trip = Trip(db, ["http://127.0.0.1:9"], session)
    await trip.trip.schedule([analysed_incident(gone)])
    lead = {"held": False}
    taken: list[list[Alert]] = []

    async def take_in(alerts: Sequence[Alert]) -> None:
        taken.append(list(alerts))

    reconciler = Reconciler(
        db,
        ["http://127.0.0.1:9"],
        NoRawAlerts(),
        interval=timedelta(0),
        grace=timedelta(0),
        take_in=take_in,
        permitted=lambda: lead["held"],
    )
    await reconciler.run_if_due(trip.clock.now)
    assert taken == []
    lead["held"] = True
    await reconciler.run_if_due(trip.clock.now)
    assert [[a.fingerprint for a in alerts] for alerts in taken] == [[gone.fingerprint]]


async def test_what_the_webhook_refuses_is_not_taken_in_from_alertmanager(
    alertmanager, db, session, caplog
):
    # Alertmanager's API takes what the webhook refuses: a later post with an
    # alert's labels gives it that post's startsAt, however early. Read back
    # by reconciliation, such a re-fire must not reach the correlator, where a
    # start near year 1 leaves no room for the windows' arithmetic. What the
    # webhook cuts (an annotation value over its cap) is taken in cut.
    now = datetime.now(UTC).replace(microsecond=0)
    first = peer_member("InterfaceDown", "core1", starts_at=now - timedelta(minutes=10))
    long = "d" * (MAX_ANNOTATION_VALUE_CHARS + 100)
    refire = replace(
        first,
        starts_at=now - timedelta(seconds=37),
        annotations={**first.annotations, "description": long},
    )
    other = peer_member("InterfaceDown", "core2", starts_at=now - timedelta(minutes=10))
    year_one = replace(other, starts_at=datetime(1, 1, 1, 0, 0, 1, tzinfo=UTC))
    for member in (first, other):
        await db.ingest(
            [_alert(member), _alert(member, "resolved", now - timedelta(minutes=5))], now
        )
    alertmanager.post([raw_postable(refire), raw_postable(replace(other, starts_at=now))])
    alertmanager.post([raw_postable(year_one)])
    wait_for(
        lambda: (
            [a["startsAt"] for a in alertmanager.alerts('instance="core2"')]
            == ["0001-01-01T00:00:01.000Z"]
        ),
        what="Alertmanager listing core2 as started in year 1",
    )
    trip = Trip(db, [alertmanager.url], session)
    await reconcile_until_taken(trip)
    [taken] = trip.missing
    assert [(a.fingerprint, a.starts_at) for a in taken] == [(refire.fingerprint, refire.starts_at)]
    cut = long[: MAX_ANNOTATION_VALUE_CHARS - 1] + "\u2026"
    assert taken[0].annotations == {**first.annotations, "description": cut}

    def refusals() -> list[str]:
        records = caplog.records
        return [r.reason for r in records if getattr(r, "fingerprint", None) == other.fingerprint]

    assert refusals() == [
        'alerts[0].startsAt: before the Unix epoch (1970-01-01T00:00:00Z): "0001-01-01T00:00:01Z"'
    ]
    # Still listed, it is left out again, and logged once.
    await db.ingest(taken, datetime.now(UTC))
    trip.clock.advance(minutes=1)
    await trip.trip.run_once()
    assert len(trip.missing) == 1
    assert len(refusals()) == 1

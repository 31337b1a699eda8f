"""What every store promises (:class:`ai_sidecar.store.Store`), checked on each implementation.

Alerts: idempotent ingest and the worker's cursor. Incidents: round trips,
listing, feedback. The return trip's outbox. Retention. The LLM audit. Closing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from ai_sidecar.errors import SidecarError
from ai_sidecar.models import Analysis, Incident, RootCauseFacts, SkippedAnalyst
from ai_sidecar.store import (
    Backlog,
    Feedback,
    IncidentAction,
    IngestResult,
    LlmUsage,
    OutboxCopy,
    OutboxPlan,
    OutboxRow,
    PruneResult,
    Store,
    StoreClosedError,
    StoreError,
)
from tests.ai_sidecar.builders import T0, alert, member_of, stored_incident
from tests.ai_sidecar.exchanges import exchange
from tests.ai_sidecar.store.conftest import StoreOpener

RECEIVED = T0 + timedelta(seconds=30, microseconds=250000)


# --- alerts and the cursor ------------------------------------------------------


async def test_ingest_is_idempotent_on_fingerprint_status_and_starts_at(store: Store) -> None:
    a1, a2, a3 = (alert("InterfaceDown", instance=name) for name in ("a1", "a2", "a3"))
    first = await store.ingest([a1, a2], RECEIVED)
    assert first == IngestResult(new=2, duplicates=0)

    again = await store.ingest(
        [
            a1,  # same delivery again (an HA peer)
            replace(a1, status="resolved", ends_at=T0 + timedelta(minutes=5)),  # resolving is new
            replace(a2, starts_at=T0 + timedelta(hours=1)),  # a new episode is new
            a3,
            a3,  # a repeat inside one payload
        ],
        RECEIVED,
    )
    assert again == IngestResult(new=3, duplicates=2)
    assert await store.alert_count() == 5


async def test_stored_episodes_are_every_status_of_the_fingerprints_asked(store: Store) -> None:
    a1, a2, other = (alert("InterfaceDown", instance=name) for name in ("a1", "a2", "x"))
    later = replace(a1, starts_at=T0 + timedelta(hours=1), status="resolved")
    await store.ingest([a1, later, a2, other], RECEIVED)
    assert await store.stored_episodes([a1.fingerprint, a2.fingerprint, "unknown"]) == {
        (a1.fingerprint, T0),
        (a1.fingerprint, T0 + timedelta(hours=1)),
        (a2.fingerprint, T0),
    }
    assert await store.stored_episodes([]) == set()


async def test_same_instant_in_another_offset_is_a_duplicate(store: Store) -> None:
    a1 = alert("InterfaceDown", instance="a1")
    plus_two = replace(a1, starts_at=T0.astimezone(timezone(timedelta(hours=2))))
    await store.ingest([a1], RECEIVED)
    assert await store.ingest([plus_two], RECEIVED) == IngestResult(0, 1)


async def test_stored_alerts_come_back_unchanged_in_arrival_order(store: Store) -> None:
    firing = alert("InterfaceDown", instance="b", team="réseau ✓")
    resolved = alert("InterfaceDown", status="resolved", ends=timedelta(minutes=5), instance="a")
    await store.ingest([firing], RECEIVED)
    await store.ingest([resolved], RECEIVED + timedelta(seconds=1))

    pending = await store.pending(10)

    assert [p.seq for p in pending] == sorted(p.seq for p in pending)
    assert [p.alert for p in pending] == [firing, resolved]
    assert pending[0].alert.ends_at is None
    assert pending[1].alert.ends_at == T0 + timedelta(minutes=5)
    assert pending[0].received_at == RECEIVED
    assert pending[1].received_at == RECEIVED + timedelta(seconds=1)


async def test_concurrent_ingests_all_land_with_exact_counts(store: Store) -> None:
    # 300 callers at once, every fingerprint sent by three of them: each must be
    # stored once and every caller must get its own correct answer.
    payloads = [
        [alert("InterfaceDown", instance=f"fp{(i * 7 + j) % 100}") for j in range(3)]
        for i in range(300)
    ]
    results = await asyncio.gather(*(store.ingest(p, RECEIVED) for p in payloads))

    assert sum(r.new for r in results) == 100
    assert sum(r.duplicates for r in results) == 800
    assert all(r.new + r.duplicates == 3 for r in results)
    assert await store.alert_count() == 100


async def test_pending_and_save_progress_move_the_cursor(store: Store) -> None:
    alerts = [alert("InterfaceDown", instance=f"p{i}") for i in range(6)]
    await store.ingest(alerts[:5], RECEIVED)
    assert await store.backlog() == Backlog(depth=5, oldest_received_at=RECEIVED)

    first = await store.pending(2)
    assert [p.alert for p in first] == alerts[:2]
    await store.save_progress(first[-1].seq, [stored_incident("inc-1")])

    rest = await store.pending(100)
    assert [p.alert for p in rest] == alerts[2:5]
    assert (await store.backlog()).depth == 3
    assert await store.get_incident("inc-1") == stored_incident("inc-1")

    await store.save_progress(rest[-1].seq, [])
    assert await store.pending(100) == []
    assert await store.backlog() == Backlog(depth=0, oldest_received_at=None)
    # New alerts land above the cursor and are pending.
    await store.ingest([alerts[5]], RECEIVED)
    assert [p.alert for p in await store.pending(10)] == [alerts[5]]


async def test_a_cursor_past_the_stored_alerts_is_refused_atomically(store: Store) -> None:
    await store.ingest([alert("InterfaceDown", instance="x")], RECEIVED)
    with pytest.raises(ValueError, match=r"cursor 7 is outside the stored alerts \(0..1\)"):
        await store.save_progress(7, [stored_incident("inc-never")])
    assert await store.get_incident("inc-never") is None
    assert (await store.backlog()).depth == 1


async def test_negative_limits_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="limit must be >= 0, got -1"):
        await store.pending(-1)
    with pytest.raises(ValueError, match="limit must be >= 0, got -1"):
        await store.list_incidents(limit=-1)


# --- incidents and feedback --------------------------------------------------------


async def test_incidents_round_trip_and_update_in_place(store: Store) -> None:
    full = stored_incident("inc-1", priority="P1")
    analysed = replace(
        full,
        analysis=Analysis("s", "rc", "impact", ("a", "b"), 0.8, 0.1),
        analyst="local",
        version=3,
        root_cause_facts=RootCauseFacts(rule="dependents", layer="link", dependents=3),
        peak_priority="P1",
        analysed_version=3,
        analysed_priority="P1",
        skipped_analysts=(SkippedAnalyst("gemini", "timeout", "no answer in 20s"),),
    )
    await store.save_incidents([full])
    await store.save_incidents([analysed])
    assert await store.get_incident("inc-1") == analysed
    assert await store.get_incident("missing") is None
    assert len(await store.list_incidents()) == 1


@pytest.mark.parametrize("priority", ["P1", "P2", "P3", "P4"])
async def test_every_priority_round_trips(store: Store, priority: str) -> None:
    saved = stored_incident("inc-1", priority=priority)  # type: ignore[arg-type]
    await store.save_incidents([saved])
    loaded = await store.get_incident("inc-1")
    assert loaded is not None
    assert loaded.priority == priority


async def test_list_incidents_filters_and_orders(store: Store) -> None:
    await store.save_incidents(
        [
            stored_incident("old-open", updated_at=T0),
            stored_incident("new-open", updated_at=T0 + timedelta(hours=2)),
            stored_incident("mid-resolved", status="resolved", updated_at=T0 + timedelta(hours=1)),
        ]
    )
    ids = [i.id for i in await store.list_incidents()]
    assert ids == ["new-open", "mid-resolved", "old-open"]
    assert [i.id for i in await store.list_incidents(status="open")] == ["new-open", "old-open"]
    assert [i.id for i in await store.list_incidents(status="resolved")] == ["mid-resolved"]
    since = T0 + timedelta(hours=1)
    assert [i.id for i in await store.list_incidents(since=since)] == ["new-open", "mid-resolved"]
    assert [i.id for i in await store.list_incidents(status="open", since=since)] == ["new-open"]
    assert [i.id for i in await store.list_incidents(limit=1)] == ["new-open"]


async def test_list_incidents_pages_after_a_key_through_tied_times(store: Store) -> None:
    tied = T0 + timedelta(hours=1)
    await store.save_incidents(
        [stored_incident(f"inc-{k}", updated_at=tied) for k in range(4)]
        + [stored_incident("newer", updated_at=T0 + timedelta(hours=2))]
        + [stored_incident("older", updated_at=T0)]
    )
    after_tie = await store.list_incidents(before=(tied, "inc-2"), limit=10)
    assert [i.id for i in after_tie] == ["inc-1", "inc-0", "older"]
    after_newer = await store.list_incidents(before=(T0 + timedelta(hours=2), "newer"), limit=2)
    assert [i.id for i in after_newer] == ["inc-3", "inc-2"]
    assert await store.list_incidents(before=(T0, "older")) == []


async def test_active_incidents_are_open_ones_and_recently_resolved(store: Store) -> None:
    cutoff = T0 + timedelta(hours=1)
    await store.save_incidents(
        [
            stored_incident("open"),
            stored_incident("resolved-long-ago", status="resolved", resolved_at=T0),
            stored_incident("resolved-at-cutoff", status="resolved", resolved_at=cutoff),
            # No resolved_at: its last update stands in for it.
            stored_incident(
                "resolved-no-stamp", status="resolved", updated_at=cutoff + timedelta(minutes=1)
            ),
        ]
    )
    ids = sorted(i.id for i in await store.active_incidents(cutoff))
    assert ids == ["open", "resolved-at-cutoff", "resolved-no-stamp"]


async def test_latest_update_and_incident_ids(store: Store) -> None:
    assert await store.latest_update() is None
    assert await store.incident_ids() == []
    later = T0 + timedelta(minutes=3)
    await store.save_incidents([stored_incident("a"), stored_incident("b", updated_at=later)])
    assert await store.latest_update() == later
    assert sorted(await store.incident_ids()) == ["a", "b"]


async def test_members_keep_the_order_they_joined_in(store: Store) -> None:
    m = [member_of(alert("InterfaceDown", instance=f"sw{i}")) for i in range(4)]
    await store.save_incidents([stored_incident("inc-1", m[2], m[0], m[1])])
    loaded = await store.get_incident("inc-1")
    assert loaded is not None
    assert list(loaded.members.values()) == [m[2], m[0], m[1]]

    await store.save_incidents([stored_incident("inc-1", m[2], m[0], m[1], m[3])])
    loaded = await store.get_incident("inc-1")
    assert loaded is not None
    assert list(loaded.members.values()) == [m[2], m[0], m[1], m[3]]


async def test_feedback_needs_an_existing_incident(store: Store) -> None:
    assert await store.add_feedback("nope", True, "great", T0) is False
    assert await store.feedback("nope") == []

    await store.save_incidents([stored_incident("inc-1")])
    assert await store.add_feedback("inc-1", True, "spot on", T0)
    assert await store.add_feedback("inc-1", False, "wrong root cause", T0 + timedelta(minutes=1))
    assert await store.feedback("inc-1") == [
        Feedback("inc-1", True, "spot on", T0),
        Feedback("inc-1", False, "wrong root cause", T0 + timedelta(minutes=1)),
    ]


async def test_feedback_between_is_a_half_open_period_in_time_order(store: Store) -> None:
    await store.save_incidents([stored_incident("inc-1"), stored_incident("inc-2")])
    # Given out of time order, and one at each end of the period.
    await store.add_feedback("inc-2", False, "late", T0 + timedelta(hours=2))
    await store.add_feedback("inc-1", True, "start", T0)
    await store.add_feedback("inc-1", True, "before", T0 - timedelta(seconds=1))
    await store.add_feedback("inc-2", True, "end\u0000", T0 + timedelta(hours=3))
    got = await store.feedback_between(T0, T0 + timedelta(hours=3))
    assert got == [
        Feedback("inc-1", True, "start", T0),
        Feedback("inc-2", False, "late", T0 + timedelta(hours=2)),
    ]
    assert [f.comment for f in await store.feedback_between(T0, T0 + timedelta(days=1))] == [
        "start",
        "late",
        "end\u0000",
    ]


async def test_firing_started_between_counts_each_episode_once_where_it_started(
    store: Store,
) -> None:
    down = alert("Down", instance="sw1")
    await store.ingest([down, alert("Up", instance="sw2", at=-timedelta(seconds=1))], T0)
    await store.ingest([down], T0 + timedelta(minutes=1))  # a re-delivery: not stored again
    refire = replace(down, starts_at=T0 + timedelta(minutes=5))
    await store.ingest([refire], T0 + timedelta(minutes=5))
    await store.ingest([replace(refire, status="resolved", ends_at=T0)], T0 + timedelta(hours=1))
    # Delivered three days after it started: counted when it started, as its incident is.
    await store.ingest(
        [alert("Down", instance="sw3", at=timedelta(hours=1))], T0 + timedelta(days=3)
    )
    await store.ingest([alert("Down", instance="sw4", at=timedelta(hours=2))], T0)
    assert await store.firing_started_between(T0, T0 + timedelta(hours=2)) == 3
    assert (
        await store.firing_started_between(T0 - timedelta(seconds=1), T0 + timedelta(days=1)) == 5
    )
    assert await store.firing_started_between(T0 + timedelta(days=3), T0 + timedelta(days=4)) == 0


async def test_incidents_created_between_is_a_half_open_period_on_creation(store: Store) -> None:
    def created(incident_id: str, at: timedelta, updated: timedelta) -> Incident:
        return replace(
            stored_incident(incident_id, member_of(alert("Down", instance=incident_id))),
            created_at=T0 + at,
            updated_at=T0 + updated,
        )

    await store.save_incidents(
        [
            created("late", timedelta(hours=2), timedelta(hours=9)),
            created("before", -timedelta(seconds=1), timedelta(hours=5)),
            created("start", timedelta(0), timedelta(0)),
            # Another offset, same instant as the period's end: outside.
            created("end", timedelta(hours=3), timedelta(hours=3)),
            created("b-same", timedelta(hours=2), timedelta(hours=2)),
        ]
    )
    got = await store.incidents_created_between(T0, T0 + timedelta(hours=3))
    assert [i.id for i in got] == ["start", "b-same", "late"]
    assert [m.target for m in got[2].members.values()] == ["late"]
    paris = timezone(timedelta(hours=1))
    later = await store.incidents_created_between(
        (T0 + timedelta(hours=2)).astimezone(paris), T0 + timedelta(days=1)
    )
    assert [i.id for i in later] == ["b-same", "late", "end"]
    assert (
        await store.incidents_created_between(T0 + timedelta(days=1), T0 + timedelta(days=2)) == []
    )


async def test_a_digest_slot_is_claimed_by_one_holder_until_done_or_lapsed(store: Store) -> None:
    monday = T0
    hold = timedelta(minutes=10)
    assert await store.last_digest() is None
    assert await store.claim_digest(monday, "replica-a", now=T0, hold=hold)
    # Another holder waits while the claim is live; its holder may renew it.
    assert not await store.claim_digest(
        monday, "replica-b", now=T0 + timedelta(minutes=5), hold=hold
    )
    assert await store.claim_digest(monday, "replica-a", now=T0 + timedelta(minutes=5), hold=hold)
    assert not await store.claim_digest(
        monday, "replica-b", now=T0 + timedelta(minutes=14), hold=hold
    )
    # Lapsed (a holder that died): another takes it over, and only it may finish it.
    assert await store.claim_digest(monday, "replica-b", now=T0 + timedelta(minutes=16), hold=hold)
    assert not await store.finish_digest(monday, "replica-a", at=T0 + timedelta(minutes=17))
    assert await store.last_digest() is None
    assert await store.finish_digest(monday, "replica-b", at=T0 + timedelta(minutes=17))
    assert not await store.finish_digest(monday, "replica-b", at=T0 + timedelta(minutes=18))
    # Done: never claimed again, by anyone.
    later = T0 + timedelta(days=1)
    assert not await store.claim_digest(monday, "replica-b", now=later, hold=hold)
    assert not await store.claim_digest(monday, "replica-c", now=later, hold=hold)
    next_monday = T0 + timedelta(days=7)
    assert await store.claim_digest(next_monday, "replica-c", now=later, hold=hold)
    assert await store.last_digest() == monday
    assert await store.finish_digest(next_monday, "replica-c", at=later)
    assert await store.last_digest() == next_monday


async def test_actions_need_an_existing_incident_and_keep_what_was_typed(store: Store) -> None:
    refused = IncidentAction("nope", "acknowledge", "ops", "", T0)
    assert await store.record_action(refused) is False
    assert await store.actions("nope") == []

    await store.save_incidents([stored_incident("inc-1"), stored_incident("inc-2")])
    taken = [
        IncidentAction("inc-1", "acknowledge", "alice", "", T0),
        IncidentAction("inc-1", "assign", "alice", "bob <b@x>\u0000 'é'", T0),
        IncidentAction("inc-2", "silence", "carol", '{"ids": ["s1"]}', T0 + timedelta(hours=1)),
        IncidentAction("inc-1", "unacknowledge", "bob", "", T0 + timedelta(hours=2)),
    ]
    for action in taken:
        assert await store.record_action(action)
    assert await store.actions("inc-1") == [taken[0], taken[1], taken[3]]
    assert await store.actions_between(T0, T0 + timedelta(hours=2)) == taken[:3]
    assert await store.actions_between(T0 + timedelta(hours=1), T0 + timedelta(days=1)) == [
        taken[2],
        taken[3],
    ]


async def test_an_unknown_action_kind_is_refused(store: Store) -> None:
    await store.save_incidents([stored_incident("inc-1")])
    with pytest.raises(ValueError, match="unknown action kind"):
        await store.record_action(IncidentAction("inc-1", "delete", "x", "", T0))  # type: ignore[arg-type]
    assert await store.actions("inc-1") == []


async def test_reopening_keeps_alerts_cursor_incidents_and_feedback(
    open_store: StoreOpener,
) -> None:
    a, b, c, d = (alert("InterfaceDown", instance=name) for name in "abcd")
    first = await open_store()
    await first.ingest([a, b, c], RECEIVED)
    seq_b = (await first.pending(2))[-1].seq
    await first.save_progress(seq_b, [stored_incident("inc-1")])
    await first.add_feedback("inc-1", True, "ok", T0)
    await first.close()

    second = await open_store()
    try:
        assert await second.alert_count() == 3
        assert [p.alert for p in await second.pending(10)] == [c]
        assert await second.get_incident("inc-1") == stored_incident("inc-1")
        assert await second.feedback("inc-1") == [Feedback("inc-1", True, "ok", T0)]
        # Idempotency survives the restart.
        assert await second.ingest([a, d], RECEIVED) == IngestResult(1, 1)
        # Seq keeps growing past what the first process handed out.
        assert (await second.pending(10))[-1].seq > seq_b + 1
    finally:
        await second.close()


# --- the outbox ----------------------------------------------------------------------

PEERS = ("http://am-a:9093", "http://am-b:9093")
NOW = T0.timestamp()


def copy(
    member_fp: str,
    *,
    label_set: str | None = None,
    incident_id: str = "inc-1",
    state: str = "firing",
    text: str = "v1",
    ends_at: float | None = None,
) -> OutboxCopy:
    return OutboxCopy(
        fingerprint=label_set or f"copy-{member_fp}",
        incident_id=incident_id,
        member=member_fp,
        state="resolved" if state == "resolved" else "firing",
        alert=f'{{"labels": {{"m": "{member_fp}"}}, "text": "{text}"}}',
        raw=f'{{"raw": "{member_fp}"}}',
        ends_at=ends_at,
    )


def plan(*copies: OutboxCopy, members: tuple[str, ...] | None = None) -> OutboxPlan:
    fingerprints = members if members is not None else tuple(c.member for c in copies)
    return OutboxPlan(copies[0].incident_id, frozenset(fingerprints), copies)


async def enqueue(store: Store, *plans: OutboxPlan, now: float = NOW) -> None:
    await store.enqueue_posts(plans, PEERS, now=now, repeat_for=300.0)


def by_key(rows: list[OutboxRow]) -> dict[tuple[str, str], OutboxRow]:
    return {(row.peer, row.fingerprint): row for row in rows}


async def test_enqueued_copies_are_due_now_on_every_peer(store: Store) -> None:
    await enqueue(store, plan(copy("m1"), copy("m2")))

    rows = await store.list_posts()
    assert [(r.peer, r.fingerprint) for r in rows] == [
        (peer, fp) for peer in PEERS for fp in ("copy-m1", "copy-m2")
    ]
    assert {(r.state, r.due_at, r.posted_at, r.revision) for r in rows} == {
        ("firing", NOW, None, 0)
    }
    assert rows[0].raw == '{"raw": "m1"}'
    assert rows[0].incident_id == "inc-1"
    due = await store.due_posts(PEERS, before=NOW)
    assert sorted(due, key=lambda r: (r.peer, r.fingerprint)) == rows
    # By due time, then fingerprint.
    assert [r.fingerprint for r in due] == ["copy-m1", "copy-m1", "copy-m2", "copy-m2"]
    assert await store.due_posts(PEERS[:1], before=NOW) == rows[:2]
    assert await store.due_posts(PEERS, before=NOW - 1) == []
    assert await store.count_due_posts(now=NOW) == 4
    assert await store.count_due_posts(now=NOW - 1) == 0
    assert await store.next_post_due(PEERS) == {PEERS[0]: NOW, PEERS[1]: NOW}
    assert await store.firing_members() == {"m1": '{"raw": "m1"}', "m2": '{"raw": "m2"}'}
    assert await store.firing_copies() == {"copy-m1", "copy-m2"}


async def test_accepted_posts_wait_for_their_next_round(store: Store) -> None:
    await enqueue(store, plan(copy("m1")))
    [row_a, _] = await store.list_posts()
    await store.complete_accepted(
        PEERS[0], [row_a], now=NOW + 1, firing_due=NOW + 60, resolved_due=NOW + 30
    )
    rows = by_key(await store.list_posts())
    assert rows[PEERS[0], "copy-m1"].due_at == NOW + 60
    assert rows[PEERS[0], "copy-m1"].posted_at == NOW + 1
    assert rows[PEERS[1], "copy-m1"].due_at == NOW  # the other peer has not taken it
    assert await store.next_post_due(PEERS) == {PEERS[0]: NOW + 60, PEERS[1]: NOW}
    assert [r.peer for r in await store.due_posts(PEERS, before=NOW + 59)] == [PEERS[1]]
    # Due after "beyond" (scheduled before the clock went back): taken too.
    assert [r.peer for r in await store.due_posts(PEERS, before=NOW - 1, beyond=NOW + 59)] == [
        PEERS[0]
    ]
    assert await store.due_posts(PEERS, before=NOW - 1, beyond=NOW + 60) == []

    # The same copy again: its keep-alive schedule stands.
    await enqueue(store, plan(copy("m1")), now=NOW + 5)
    assert by_key(await store.list_posts())[PEERS[0], "copy-m1"].due_at == NOW + 60

    # New text (a better analysis): due now, a new revision, not posted yet.
    await enqueue(store, plan(copy("m1", text="v2")), now=NOW + 6)
    changed = by_key(await store.list_posts())[PEERS[0], "copy-m1"]
    assert (changed.due_at, changed.posted_at, changed.revision) == (NOW + 6, None, 1)
    assert '"v2"' in changed.alert

    # Completing the revision that was sent leaves the newer one due.
    await store.complete_accepted(
        PEERS[0], [row_a], now=NOW + 7, firing_due=NOW + 67, resolved_due=NOW + 37
    )
    assert by_key(await store.list_posts())[PEERS[0], "copy-m1"] == changed


async def test_resolutions_repeat_until_their_time_is_up(store: Store) -> None:
    await enqueue(store, plan(copy("m1")))
    ended = NOW + 10
    await enqueue(
        store, plan(copy("m1", state="resolved", text="final", ends_at=ended)), now=NOW + 20
    )
    rows = await store.list_posts()
    assert {(r.state, r.ends_at, r.resolved_until, r.due_at, r.revision) for r in rows} == {
        ("resolved", ended, NOW + 20 + 300, NOW + 20, 1)
    }
    # The resolution carries the latest text.
    assert all('"final"' in r.alert for r in rows)
    assert await store.firing_members() == {}
    assert await store.firing_copies() == set()

    await store.complete_accepted(
        PEERS[0], rows[:1], now=NOW + 21, firing_due=NOW + 81, resolved_due=NOW + 81
    )
    assert by_key(await store.list_posts())[PEERS[0], "copy-m1"].due_at == NOW + 81
    # Once the repeats are over, an accepted resolution is forgotten.
    [again] = await store.due_posts(PEERS[:1], before=NOW + 81)
    await store.complete_accepted(
        PEERS[0], [again], now=NOW + 320, firing_due=NOW + 380, resolved_due=NOW + 380
    )
    assert [(r.peer, r.fingerprint) for r in await store.list_posts()] == [(PEERS[1], "copy-m1")]


async def test_members_that_left_or_changed_label_set_are_resolved(store: Store) -> None:
    await enqueue(store, plan(copy("m1"), copy("m2")))
    # m2 left the incident; m1 is now posted under another label set (new priority).
    await enqueue(store, plan(copy("m1", label_set="copy-m1-p1"), members=("m1",)), now=NOW + 5)
    states = {(r.fingerprint, r.state, r.ends_at) for r in await store.list_posts()}
    assert states == {
        ("copy-m1", "resolved", NOW + 5),
        ("copy-m2", "resolved", NOW + 5),
        ("copy-m1-p1", "firing", None),
    }
    assert await store.firing_copies() == {"copy-m1-p1"}

    # A re-fire of a resolved copy fires again, due now.
    await enqueue(store, plan(copy("m2"), members=("m1", "m2")), now=NOW + 9)
    refired = by_key(await store.list_posts())[PEERS[0], "copy-m2"]
    assert (refired.state, refired.ends_at, refired.resolved_until, refired.due_at) == (
        "firing",
        None,
        None,
        NOW + 9,
    )


async def test_large_incidents_are_enqueued_whole(store: Store) -> None:
    copies = [copy(f"m{i:03}") for i in range(250)]
    await enqueue(store, plan(*copies))
    assert len(await store.list_posts()) == 500
    # Every part of the incident knows all 250 members: none is resolved.
    assert await store.firing_copies() == {c.fingerprint for c in copies}


async def test_refused_posts_are_dropped_unless_changed(store: Store) -> None:
    await enqueue(store, plan(copy("m1"), copy("m2")))
    rows = by_key(await store.list_posts())
    await store.complete_refused(rows[PEERS[0], "copy-m1"])
    assert (PEERS[0], "copy-m1") not in by_key(await store.list_posts())

    await enqueue(store, plan(copy("m1"), copy("m2", text="v2")), now=NOW + 1)
    await store.complete_refused(rows[PEERS[0], "copy-m2"])  # an older revision
    assert by_key(await store.list_posts())[PEERS[0], "copy-m2"].revision == 1


async def test_peers_are_synced_and_removed_ones_dropped(store: Store) -> None:
    await enqueue(store, plan(copy("m1"), copy("m2")))
    added = "http://am-c:9093"
    dropped = await store.sync_outbox_peers([PEERS[0], added], now=NOW + 3)
    assert dropped == 2
    rows = await store.list_posts()
    assert {r.peer for r in rows} == {PEERS[0], added}
    new = [r for r in rows if r.peer == added]
    assert [(r.fingerprint, r.due_at) for r in new] == [("copy-m1", NOW + 3), ("copy-m2", NOW + 3)]
    assert await store.sync_outbox_peers([PEERS[0], added], now=NOW + 4) == 0


# --- retention ------------------------------------------------------------------------

NOW_WALL = datetime(2027, 3, 1, tzinfo=UTC)
OLD = NOW_WALL - timedelta(days=40)
RECENT = NOW_WALL - timedelta(days=1)
CUTOFF = NOW_WALL - timedelta(days=30)


async def test_prune_removes_old_processed_alerts_and_resolved_incidents(store: Store) -> None:
    gone = [alert("InterfaceDown", instance=f"gone{i}") for i in range(5)]
    still_firing = alert("InterfaceDown", instance="still-firing")
    unprocessed = alert("InterfaceDown", instance="unprocessed")
    young = alert("InterfaceDown", instance="young")
    await store.ingest([*gone, still_firing], OLD)
    await store.ingest([young], RECENT)
    processed = await store.pending(100)
    await store.ingest([unprocessed], OLD)  # received long ago, never folded

    open_incident = stored_incident("open", member_of(still_firing), updated_at=OLD)
    old_resolved = stored_incident("old", status="resolved", resolved_at=OLD, updated_at=OLD)
    new_resolved = stored_incident("new", status="resolved", resolved_at=RECENT, updated_at=RECENT)
    await store.save_progress(processed[-1].seq, [open_incident, old_resolved, new_resolved])
    for incident_id in ("open", "old", "new"):
        assert await store.add_feedback(incident_id, True, "", OLD)
        assert await store.record_action(IncidentAction(incident_id, "acknowledge", "ops", "", OLD))
    await store.enqueue_posts(
        [
            plan(copy("m-old", incident_id="old", state="resolved", ends_at=1.0)),
            plan(copy("m-open", incident_id="open")),
        ],
        PEERS,
        now=NOW,
        repeat_for=300.0,
    )
    # A resolved copy of the old incident, left behind by a peer that never took it.
    await store.enqueue_posts(
        [plan(copy("m-old2", incident_id="old"))], PEERS, now=NOW, repeat_for=300.0
    )
    await store.enqueue_posts(
        [plan(copy("m-old2", incident_id="old", state="resolved", ends_at=2.0))],
        PEERS,
        now=NOW,
        repeat_for=300.0,
    )

    result = await store.prune(CUTOFF, batch=2)

    assert result == PruneResult(alerts=5, incidents=1, members=1, feedback=1, posts=2, actions=1)
    left = [p.alert for p in await store.pending(10)]
    assert left == [unprocessed]
    assert await store.alert_count() == 3  # still-firing, young, unprocessed
    assert sorted(await store.incident_ids()) == ["new", "open"]
    assert await store.get_incident("old") is None
    assert await store.feedback("old") == []
    assert await store.actions("old") == []
    assert [a.incident_id for a in await store.actions("new")] == ["new"]
    assert await store.get_incident("open") == open_incident
    assert [f.incident_id for f in await store.feedback("new")] == ["new"]
    assert {r.incident_id for r in await store.list_posts()} == {"open"}
    # The firing alert of the open incident is still known: a re-delivery is a duplicate.
    assert await store.ingest([still_firing], NOW_WALL) == IngestResult(0, 1)

    # Nothing more to do, and seq keeps growing past the pruned alerts.
    assert await store.prune(CUTOFF, batch=2) == PruneResult()
    await store.ingest([alert("InterfaceDown", instance="after")], NOW_WALL)
    [*_, last] = await store.pending(10)
    assert last.seq > max(p.seq for p in processed) + 1
    await store.save_progress(last.seq, [])
    assert await store.backlog() == Backlog(0, None)


async def test_prune_never_removes_open_incidents_however_old(store: Store) -> None:
    ancient = stored_incident("ancient", updated_at=OLD - timedelta(days=365))
    await store.save_incidents([ancient])
    assert await store.prune(NOW_WALL, batch=10) == PruneResult()
    assert await store.get_incident("ancient") == ancient


async def test_prune_refuses_an_empty_batch(store: Store) -> None:
    with pytest.raises(ValueError, match="batch must be >= 1, got 0"):
        await store.prune(CUTOFF, batch=0)


# --- the LLM audit ----------------------------------------------------------------


async def test_llm_exchanges_come_back_whole_in_time_order(store: Store) -> None:
    later = exchange("inc-1", T0 + timedelta(minutes=5), outcome="invalid", answer="not JSON")
    # Any character a prompt may hold (alert text is whatever a client sent).
    odd = exchange(
        "inc-2", T0 + timedelta(minutes=1, microseconds=7), prompt="nul \x00 réseau ✓ \ud83d"
    )
    first = exchange("inc-1", T0.astimezone(timezone(timedelta(hours=2))))
    for item in (later, odd, first):
        await store.record_llm_exchange(item)

    kept = await store.llm_exchanges()

    assert kept == [first, odd, later]
    assert kept[0].at.utcoffset() == timedelta(0)
    assert await store.llm_exchanges(incident_id="inc-1") == [first, later]
    assert await store.llm_exchanges(incident_id="inc-9") == []


async def test_llm_exchanges_filter_by_time_and_keep_the_newest_under_a_limit(
    store: Store,
) -> None:
    made = [exchange("inc-1", T0 + timedelta(minutes=n)) for n in range(5)]
    for item in made:
        await store.record_llm_exchange(item)

    assert await store.llm_exchanges(since=T0 + timedelta(minutes=3)) == made[3:]
    assert await store.llm_exchanges(limit=2) == made[3:]
    assert await store.llm_exchanges(since=T0 + timedelta(minutes=1), limit=10) == made[1:]
    assert await store.llm_exchanges(limit=0) == []
    with pytest.raises(ValueError, match="limit must be >= 0, got -1"):
        await store.llm_exchanges(limit=-1)


async def test_llm_usage_adds_up_every_exchange_of_the_incident(store: Store) -> None:
    # More than a page lists (the newest 100), with costs a float sum must not lose.
    made = [
        exchange("inc-1", T0 + timedelta(seconds=n), input_tokens=n, output_tokens=2, cost=n / 1e4)
        for n in range(150)
    ]
    for item in (*made, exchange("inc-2", T0, cost=9.0), exchange("inc-10", T0, cost=9.0)):
        await store.record_llm_exchange(item)

    usage = await store.llm_usage("inc-1")

    assert (usage.calls, usage.tokens) == (150, sum(range(150)) + 2 * 150)
    assert usage.cost == pytest.approx(sum(e.cost for e in made), rel=1e-12)
    assert await store.llm_usage("inc-2") == LlmUsage(1, 1440, 9.0)
    assert await store.llm_usage("inc-9") == LlmUsage()


@pytest.mark.parametrize(
    "text",
    ["nul \x00 here", "lone high \ud83d here", "lone low \udc00 here", "\udc00\ud83d"],
    ids=["nul", "high-surrogate", "low-surrogate", "reversed-pair"],
)
async def test_llm_usage_adds_up_exchanges_holding_any_character(store: Store, text: str) -> None:
    # A prompt holds alert text, any character a client sent: the incident page
    # must still show what the calls cost (PostgreSQL's JSON parser refuses these).
    await store.record_llm_exchange(exchange("inc-1", T0, prompt=text, answer=text, cost=0.5))
    await store.record_llm_exchange(exchange("inc-1", T0 + timedelta(seconds=1), cost=0.25))

    usage = await store.llm_usage("inc-1")

    assert usage.calls == 2
    assert usage.cost == pytest.approx(0.75)
    first, _ = await store.llm_exchanges(incident_id="inc-1")
    assert (first.prompt, first.answer) == (text, text)


async def test_llm_exchanges_are_pruned_on_their_own_retention(store: Store) -> None:
    old = [exchange("inc-old", T0 - timedelta(days=40, minutes=n)) for n in range(3)]
    fresh = exchange("inc-old", T0)
    for item in (*old, fresh):
        await store.record_llm_exchange(item)
    # The incident retention leaves the audit alone, and the audit's does not
    # need the incident to be stored at all.
    assert await store.prune(T0, batch=10) == PruneResult()
    assert len(await store.llm_exchanges()) == 4

    assert await store.prune_llm_exchanges(T0 - timedelta(days=30), batch=1) == 3
    assert await store.llm_exchanges() == [fresh]
    assert await store.prune_llm_exchanges(T0 - timedelta(days=30), batch=1) == 0
    with pytest.raises(ValueError, match="batch must be >= 1, got 0"):
        await store.prune_llm_exchanges(T0, batch=0)


async def test_reopening_keeps_the_llm_audit(open_store: StoreOpener) -> None:
    kept = exchange("inc-1", T0)
    store = await open_store()
    try:
        await store.record_llm_exchange(kept)
    finally:
        await store.close()
    reopened = await open_store()
    try:
        assert await reopened.llm_exchanges(incident_id="inc-1") == [kept]
    finally:
        await reopened.close()


# --- closing ------------------------------------------------------------------------


async def test_close_finishes_queued_writes_then_refuses_everything(
    open_store: StoreOpener,
) -> None:
    store = await open_store()
    queued = [
        asyncio.ensure_future(store.ingest([alert("InterfaceDown", instance=f"q{i}")], RECEIVED))
        for i in range(20)
    ]
    await asyncio.sleep(0)  # the ingests are queued
    await store.close()
    await store.close()  # idempotent
    assert all(task.result() == IngestResult(1, 0) for task in queued)

    late = alert("InterfaceDown", instance="late")
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: store.ingest([late], RECEIVED),
        lambda: store.pending(1),
        lambda: store.alert_count(),
        lambda: store.backlog(),
        lambda: store.save_progress(0, []),
        lambda: store.save_incidents([stored_incident("late")]),
        lambda: store.save_incidents([]),
        lambda: store.list_incidents(),
        lambda: store.get_incident("late"),
        lambda: store.add_feedback("x", True, "", T0),
        lambda: store.feedback("x"),
        lambda: store.enqueue_posts([plan(copy("m1"))], PEERS, now=NOW, repeat_for=1.0),
        lambda: store.enqueue_posts([], PEERS, now=NOW, repeat_for=1.0),
        lambda: store.due_posts([], before=NOW),
        lambda: store.sync_outbox_peers(PEERS, now=NOW),
        lambda: store.next_post_due(PEERS),
        lambda: store.firing_members(),
        lambda: store.firing_copies(),
        lambda: store.active_incidents(T0),
        lambda: store.latest_update(),
        lambda: store.incident_ids(),
        lambda: store.list_posts(),
        lambda: store.count_due_posts(now=NOW),
        lambda: store.prune(CUTOFF, batch=10),
        lambda: store.record_llm_exchange(exchange("x", T0)),
        lambda: store.llm_exchanges(),
        lambda: store.prune_llm_exchanges(CUTOFF, batch=10),
    ]
    for call in calls:
        with pytest.raises(StoreClosedError, match=r"the store .* is closed"):
            await call()
    assert issubclass(StoreClosedError, StoreError)
    assert issubclass(StoreError, SidecarError)

    reopened = await open_store()
    try:
        assert await reopened.alert_count() == 20
    finally:
        await reopened.close()

"""The console's incident list (:meth:`Store.incident_page`), checked on each store.

Part of the store contract: the same filters, order, paging and handling on
SQLite and PostgreSQL, and the summary row follows the incident through saves,
retention and an upgrade from a store that had none.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from ai_sidecar.models import Analysis, Incident
from ai_sidecar.store import (
    IncidentAction,
    IncidentQuery,
    PostgresStore,
    SqliteStore,
    Store,
)
from ai_sidecar.store.listing import MAX_SEARCH, listing_row
from tests.ai_sidecar.builders import T0, alert, member, member_of, stored_incident
from tests.ai_sidecar.replay import correlator, fold, storm
from tests.ai_sidecar.store.conftest import StoreOpener


def storm_incidents(name: str) -> list[Incident]:
    """The incidents a storm file folds into, each as it was last changed."""
    latest: dict[str, Incident] = {}
    for change in fold(correlator(), storm(name)):
        latest[change.incident.id] = change.incident
    return list(latest.values())


def at(minutes: int, incident: Incident) -> Incident:
    """``incident`` created ``minutes`` after T0 (lists sort by creation)."""
    created = T0 + timedelta(minutes=minutes)
    return replace(incident, created_at=created, updated_at=created)


async def ids(store: Store, query: IncidentQuery, limit: int = 50, offset: int = 0) -> list[str]:
    page = await store.incident_page(query, limit=limit, offset=offset)
    return [row.id for row in page.rows]


async def test_a_storm_lists_with_plain_words_titles_newest_first(store: Store) -> None:
    incidents = storm_incidents("two-sites.yml")
    assert len(incidents) == 2
    await store.save_incidents(incidents)

    page = await store.incident_page(IncidentQuery(), limit=50)

    assert page.total == 2
    newest = sorted(incidents, key=lambda i: (i.created_at, i.id), reverse=True)
    assert [row.id for row in page.rows] == [i.id for i in newest]
    by_id = {row.id: row for row in page.rows}
    for incident in incidents:
        row = by_id[incident.id]
        assert row.title == listing_row(incident)[7]
        assert row.members == len(incident.members)
        assert row.firing == len(incident.firing)
        assert row.status == incident.status
        assert row.priority == incident.priority
        assert row.created_at == incident.created_at
    hq = next(row for row in page.rows if row.site == "hq")
    assert "down on core1" in hq.title
    assert "(site hq)" in hq.title
    assert hq.cause == "Te1/1/1 down on core1"


async def test_filters_combine_and_paging_counts_them_all(store: Store) -> None:
    incidents = [
        at(i, stored_incident(f"i{i:02}", priority="P1" if i % 3 == 0 else "P3")) for i in range(12)
    ]
    incidents[4] = replace(incidents[4], status="resolved", resolved_at=T0 + timedelta(hours=1))
    incidents[5] = replace(incidents[5], group={"site": "paris"})
    await store.save_incidents(incidents)

    assert await ids(store, IncidentQuery(), limit=3) == ["i11", "i10", "i09"]
    second = await store.incident_page(IncidentQuery(), limit=3, offset=3)
    assert [r.id for r in second.rows] == ["i08", "i07", "i06"]
    assert second.total == 12
    assert await ids(store, IncidentQuery(priorities=("P1",))) == ["i09", "i06", "i03", "i00"]
    assert await ids(store, IncidentQuery(priorities=("P1", "P3"), status="resolved")) == ["i04"]
    assert await ids(store, IncidentQuery(site="paris")) == ["i05"]
    assert await ids(store, IncidentQuery(site="Paris")) == []
    window = IncidentQuery(since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=5))
    assert await ids(store, window) == ["i04", "i03", "i02"]
    filtered = await store.incident_page(IncidentQuery(status="open", priorities=("P3",)), limit=2)
    assert filtered.total == 7
    assert [r.id for r in filtered.rows] == ["i11", "i10"]
    beyond = await store.incident_page(IncidentQuery(), limit=5, offset=100)
    assert beyond.rows == ()
    assert beyond.total == 12


async def test_text_search_looks_in_title_root_cause_and_labels(store: Store) -> None:
    analysed = replace(
        at(1, stored_incident("analysed")),
        analysis=Analysis("s", "Carrier cut the FIBRE", "i", (), 0.9, 0.1),
        analyst="local",
    )
    labelled = at(2, stored_incident("labelled", member_of(alert("DiskFull", rack="R42-é"))))
    plain = at(3, stored_incident("plain"))
    await store.save_incidents([analysed, labelled, plain])

    assert await ids(store, IncidentQuery(words=("fibre",))) == ["analysed"]
    assert await ids(store, IncidentQuery(words=("r42-É",))) == ["labelled"]
    assert await ids(store, IncidentQuery(words=("disk full",))) == ["labelled"]  # the title
    assert await ids(store, IncidentQuery(words=("sw-plain", "down"))) == ["plain"]
    assert await ids(store, IncidentQuery(words=("sw-plain", "fibre"))) == []
    [row] = (await store.incident_page(IncidentQuery(words=("fibre",)), limit=5)).rows
    assert row.cause == "Carrier cut the FIBRE"
    assert row.analyst == "local"


async def test_the_title_is_in_the_saved_language_and_searched_in_every_one(
    store: Store,
) -> None:
    probe = member_of(alert("ProbeTargetUnreachable", instance="db-7", site="lyon"))
    french = at(1, stored_incident("french", probe))
    english = at(2, stored_incident("english", member("ProbeTargetUnreachable", "web-3")))
    await store.save_incidents([french], language="fr")
    await store.save_incidents([english])

    rows = {row.id: row for row in (await store.incident_page(IncidentQuery(), limit=5)).rows}
    assert rows["french"].title == "P2 · db-7 injoignable (site lyon)"
    assert rows["french"].cause == "db-7 injoignable"
    assert rows["english"].title == "P2 · web-3 unreachable (site hq)"
    # A reader finds either by the words of their language, whichever it was saved in.
    assert await ids(store, IncidentQuery(words=("injoignable",))) == ["english", "french"]
    assert await ids(store, IncidentQuery(words=("unreachable",))) == ["english", "french"]
    # Saved again under another language: the row follows.
    await store.save_incidents([french], language="en")
    [row] = (await store.incident_page(IncidentQuery(words=("db-7",)), limit=5)).rows
    assert row.title == "P2 · db-7 unreachable (site lyon)"


async def test_the_search_text_of_a_huge_incident_is_capped() -> None:
    members = [member("InterfaceDown", f"sw-{n:05}") for n in range(2000)]
    row = listing_row(stored_incident("huge", *members))
    assert len(row[-1]) == MAX_SEARCH


async def test_rows_show_acknowledgement_and_assignment(store: Store) -> None:
    await store.save_incidents([at(1, stored_incident("a")), at(2, stored_incident("b"))])
    for kind, actor, detail in (
        ("acknowledge", "ana", ""),
        ("assign", "ana", "bob"),
        ("unacknowledge", "bob", ""),
        ("acknowledge", "bob", ""),
        ("assign", "bob", "carol"),
    ):
        assert await store.record_action(IncidentAction("a", kind, actor, detail, T0))  # type: ignore[arg-type]
    assert await store.record_action(IncidentAction("b", "acknowledge", "ana", "", T0))
    assert await store.record_action(IncidentAction("b", "unacknowledge", "ana", "", T0))

    rows = {r.id: r for r in (await store.incident_page(IncidentQuery(), limit=5)).rows}

    assert (rows["a"].acknowledged_by, rows["a"].assignee) == ("bob", "carol")
    assert (rows["b"].acknowledged_by, rows["b"].assignee) == (None, "")


async def test_the_row_follows_saves_and_retention(store: Store) -> None:
    incident = at(1, stored_incident("x"))
    await store.save_incidents([incident])
    resolved = replace(
        incident,
        status="resolved",
        resolved_at=T0 + timedelta(minutes=30),
        updated_at=T0 + timedelta(minutes=30),
    )
    await store.save_incidents([resolved])

    [row] = (await store.incident_page(IncidentQuery(status="resolved"), limit=5)).rows
    assert row.title.startswith("Resolved · ")
    assert row.resolved_at == resolved.resolved_at
    assert (await store.incident_page(IncidentQuery(status="open"), limit=5)).total == 0

    await store.prune(T0 + timedelta(days=1), batch=10)
    assert (await store.incident_page(IncidentQuery(), limit=5)).total == 0


async def test_incidents_stored_before_the_list_are_listed_once_reopened(
    open_store: StoreOpener,
) -> None:
    store = await open_store()
    incidents = [at(n, stored_incident(f"old{n}")) for n in range(3)]
    await store.save_incidents(incidents)
    # As a store of the previous schema left them: incidents, no list rows.
    if isinstance(store, SqliteStore):
        await store.engine.write(lambda conn: conn.execute("DELETE FROM incident_listing"))
    else:
        assert isinstance(store, PostgresStore)

        async def forget(cur) -> None:  # type: ignore[no-untyped-def]
            await cur.execute("DELETE FROM incident_listing")

        await store.engine.transaction(forget)
    assert (await store.incident_page(IncidentQuery(), limit=5)).total == 0
    await store.close()

    reopened = await open_store()
    try:
        page = await reopened.incident_page(IncidentQuery(), limit=5)
        assert [r.id for r in page.rows] == ["old2", "old1", "old0"]
        assert page.rows[0].title == listing_row(incidents[2])[7]
    finally:
        await reopened.close()

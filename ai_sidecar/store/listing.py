"""The console's incident list: a summary row per incident, and the SQL both stores share.

Listing 10,000 incidents by decoding each one's document (and its members)
would take seconds. Instead each save also writes a narrow row of
``incident_listing``: the columns the list filters and shows, with the
plain-words title of the notifications (:mod:`ai_sidecar.notify.wording`)
in the config's ``language`` when the incident was saved, and ``search``,
the case-folded text a search looks in (the title in every language with a
catalogue, the root cause, the members' labels). A page is then one indexed
query plus a count, and the acknowledgement and assignment of its rows one
more query on ``incident_actions``.

Rows of incidents stored before the table existed are written when a store
opens (``ListingQueries.missing``, :func:`listing_row`), in English. A
row is written again, in the language then configured, at its incident's
next save: a row an older release wrote (an English title, searched in
English only), or one written before a reload changed ``language``, stays
as it is until its incident changes; a resolved incident that never changes
again keeps it until retention removes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from ai_sidecar.i18n import SOURCE_LANGUAGE, available_languages, translator
from ai_sidecar.models import Incident, IncidentStatus, Member, Priority
from ai_sidecar.store.protocol import IncidentAction, IncidentQuery, IncidentSummary
from ai_sidecar.store.sqlite.incidents import stamp, unstamp

# The search text keeps at most this many characters: a storm incident of
# thousands of members would otherwise carry megabytes no one searches.
MAX_SEARCH = 8000
# Incidents whose rows are written per transaction when a store backfills them.
BACKFILL_BATCH = 200
# Which actions decide the acknowledgement and assignment shown in a list.
HANDLING_KINDS = ("acknowledge", "unacknowledge", "assign")

COLUMNS = (
    "id, status, priority, created_at, updated_at, resolved_at, site, title, cause,"
    " members, firing, analyst, search"
)
_SHOWN = (
    "id, status, priority, created_at, updated_at, resolved_at, site, title, cause,"
    " members, firing, analyst"
)


def _storable(text: str) -> str:
    """``text`` any database takes as text: no U+0000, no lone surrogate."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def fold(text: str) -> str:
    """How searched text and search words are compared: case-folded, storable."""
    return _storable(text.casefold())


def listing_row(incident: Incident, language: str = SOURCE_LANGUAGE) -> tuple[Any, ...]:
    """``incident``'s row of ``incident_listing``, in :data:`COLUMNS` order: its title
    in ``language`` (the config's, as the notifications word it), and a search text
    with its title in every language, so a reader finds it by the words of theirs."""
    # Imported here: ai_sidecar.notify imports the store, which imports this.
    from ai_sidecar.notify.wording import TITLE_ANNOTATION, Wording, problem, root_member

    members = list(incident.members.values())
    if members:
        root = root_member(incident)
        titles = {
            spoken: Wording(language=spoken).annotations(incident)[TITLE_ANNOTATION]
            for spoken in dict.fromkeys((language, *available_languages()))
        }
        title = titles[language]
        site = root.labels.get("site") or incident.group.get("site", "")
        cause = problem(root, translator(language, "notify"))
    else:
        title, cause, site = f"{incident.priority} · incident {incident.id}", "", ""
        titles = {language: title}
    if incident.analysis is not None and incident.analysis.root_cause:
        cause = incident.analysis.root_cause
    # The title in the other languages holds the root problem in their words too.
    worded = list(dict.fromkeys([*titles.values(), cause]))
    room = MAX_SEARCH - sum(len(text) + 1 for text in worded)
    search = fold("\n".join([*worded, *_labels(members, room)]))[:MAX_SEARCH]
    return (
        incident.id,
        incident.status,
        incident.priority,
        stamp(incident.created_at),
        stamp(incident.updated_at),
        None if incident.resolved_at is None else stamp(incident.resolved_at),
        _storable(site),
        _storable(title),
        _storable(cause),
        len(members),
        len(incident.firing),
        _storable(incident.analyst or ""),
        search,
    )


def _labels(members: Iterable[Member], room: int) -> list[str]:
    """Each ``name=value`` of ``members`` once, in order, until ``room`` characters are
    filled: a storm's members share most labels (site, job, severity), and an
    incident of 10,000 members is not read past what the search text keeps."""
    seen: dict[str, None] = {}
    for member in members:
        if room <= 0:
            break
        for name, value in member.labels.items():
            pair = f"{name}={value}"
            if pair not in seen:
                seen[pair] = None
                room -= len(pair) + 1
    return list(seen)


@dataclass(frozen=True)
class ListingQueries:
    """The statements, written with one backend's parameter marker."""

    mark: str
    # The substring test: instr() in SQLite, strpos() in PostgreSQL.
    contains: str
    upsert: str
    insert_missing: str
    missing: str
    delete_of: str
    handling_of: str

    def where(self, query: IncidentQuery) -> tuple[str, list[Any]]:
        """The WHERE clause (or "") and its parameters for ``query``."""
        m = self.mark
        where: list[str] = []
        params: list[Any] = []
        if query.status is not None:
            where.append(f"status = {m}")
            params.append(query.status)
        if query.priorities:
            where.append(f"priority IN ({', '.join(m for _ in query.priorities)})")
            params.extend(query.priorities)
        if query.site is not None:
            where.append(f"site = {m}")
            params.append(_storable(query.site))
        if query.since is not None:
            where.append(f"created_at >= {m}")
            params.append(stamp(query.since))
        if query.until is not None:
            where.append(f"created_at < {m}")
            params.append(stamp(query.until))
        for word in query.words:
            where.append(self.contains.format(mark=m))
            params.append(fold(word))
        return (" WHERE " + " AND ".join(where)) if where else "", params

    def page(self, query: IncidentQuery, limit: int, offset: int) -> tuple[str, list[Any]]:
        where, params = self.where(query)
        sql = (
            f"SELECT {_SHOWN} FROM incident_listing{where}"
            f" ORDER BY created_at DESC, id DESC LIMIT {self.mark} OFFSET {self.mark}"
        )
        return sql, [*params, limit, offset]

    def count(self, query: IncidentQuery) -> tuple[str, list[Any]]:
        where, params = self.where(query)
        return f"SELECT count(*) FROM incident_listing{where}", params


def listing_queries(mark: str, contains: str, any_of: str, missing_limit: str) -> ListingQueries:
    """``any_of``: a membership test on ``incident_id`` for a list of ids, with its markers."""
    placeholders = ", ".join(mark for _ in COLUMNS.split(","))
    updates = ", ".join(
        f"{c.strip()} = excluded.{c.strip()}" for c in COLUMNS.split(",") if c.strip() != "id"
    )
    insert = f"INSERT INTO incident_listing ({COLUMNS}) VALUES ({placeholders})"
    kinds = ", ".join(f"'{kind}'" for kind in HANDLING_KINDS)
    return ListingQueries(
        mark=mark,
        contains=contains,
        upsert=f"{insert} ON CONFLICT (id) DO UPDATE SET {updates}",
        # A backfill never overwrites a row the worker wrote meanwhile.
        insert_missing=f"{insert} ON CONFLICT (id) DO NOTHING",
        missing=(
            "SELECT i.id FROM incidents AS i WHERE NOT EXISTS"
            f" (SELECT 1 FROM incident_listing AS l WHERE l.id = i.id) {missing_limit}"
        ),
        delete_of=f"DELETE FROM incident_listing WHERE id {any_of}",
        handling_of=(
            "SELECT incident_id, kind, actor, detail, at FROM incident_actions"
            f" WHERE incident_id {any_of} AND kind IN ({kinds}) ORDER BY id"
        ),
    )


SQLITE = listing_queries("?", "instr(search, {mark}) > 0", "IN ({marks})", "LIMIT ?")
POSTGRES = listing_queries("%s", "strpos(search, {mark}) > 0", "= ANY(%s)", "LIMIT %s")


@dataclass(frozen=True, slots=True)
class Handling:
    """Who acknowledged an incident (None: nobody, or taken back) and who it is assigned to."""

    acknowledged_by: str | None = None
    assignee: str = ""


def handling(actions: Iterable[IncidentAction]) -> Handling:
    """The state ``actions`` (in the order taken) leave an incident in."""
    acknowledged_by: str | None = None
    assignee = ""
    for action in actions:
        if action.kind == "acknowledge":
            acknowledged_by = action.actor
        elif action.kind == "unacknowledge":
            acknowledged_by = None
        elif action.kind == "assign":
            assignee = action.detail
    return Handling(acknowledged_by, assignee)


def decode_summaries(
    rows: Sequence[Sequence[Any]], actions: Sequence[IncidentAction]
) -> tuple[IncidentSummary, ...]:
    """Page rows (in the ``_SHOWN`` order) with their handling folded from ``actions``."""
    by_incident: dict[str, list[IncidentAction]] = {}
    for action in actions:
        by_incident.setdefault(action.incident_id, []).append(action)
    summaries = []
    for row in rows:
        (
            incident_id,
            status,
            priority,
            created,
            updated,
            resolved,
            site,
            title,
            cause,
            members,
            firing,
            analyst,
        ) = row
        state = handling(by_incident.get(incident_id, ()))
        summaries.append(
            IncidentSummary(
                id=incident_id,
                status=cast(IncidentStatus, status),
                priority=cast(Priority, priority),
                created_at=unstamp(created),
                updated_at=unstamp(updated),
                resolved_at=None if resolved is None else unstamp(resolved),
                site=site,
                title=title,
                cause=cause,
                members=int(members),
                firing=int(firing),
                analyst=analyst,
                acknowledged_by=state.acknowledged_by,
                assignee=state.assignee,
            )
        )
    return tuple(summaries)

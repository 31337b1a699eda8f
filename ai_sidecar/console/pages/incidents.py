"""The incident list and an incident's page.

The list reads one page of summary rows from the store
(:meth:`~ai_sidecar.store.protocol.Store.incident_page`): filters by status,
priority (several), site, words (title, root cause, labels) and a creation
time range typed in the configured zone, newest first, :data:`PAGE_SIZE` a
page. A filter value that makes no sense is said on the page (400), never
guessed at.

An incident's page shows everything the incident records: the members'
timeline, the root cause and why, the priority and why, the analysis and its
LLM cost, the graph (the signed graph route, same origin), links out, and the
feedback and actions people gave; operators get the action forms.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, cast
from urllib.parse import quote, urlencode

from aiohttp import web
from multidict import MultiMapping

from ai_sidecar.clock import utc_now
from ai_sidecar.console.language import Words, page_words
from ai_sidecar.console.pages.common import INCIDENTS_PATH, flash_of, incident_path, not_found
from ai_sidecar.console.session import console_user
from ai_sidecar.console.templating import render
from ai_sidecar.console.words import N_
from ai_sidecar.graph_route import GRAPHS
from ai_sidecar.i18n import SOURCE_LANGUAGE, Translator, translator
from ai_sidecar.keys import CONFIG, SETTINGS, STORE
from ai_sidecar.models import (
    INCIDENT_LABEL,
    PRIORITIES,
    Incident,
    IncidentStatus,
    Member,
    Priority,
)
from ai_sidecar.notify.wording import TITLE_ANNOTATION, problem, root_member
from ai_sidecar.sanitize import safe_link
from ai_sidecar.store import IncidentQuery
from ai_sidecar.store.listing import handling

PAGE_SIZE = 50
MAX_PAGE = 100_000
MAX_WORDS = 10
MAX_WORD = 100
MAX_SITE = 200
# Members the page lists one by one; a storm incident's others are counted.
MAX_MEMBERS_SHOWN = 200
MAX_EXCHANGES = 100
# The datetime-local input's format (seconds optional).
LOCAL_FORMATS = ("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S")
STATUSES: tuple[IncidentStatus, ...] = ("open", "resolved")
# Statuses as pages show them (incidents', members' and the filter's), and the
# date fields' problems.
STATUS_NAMES = (N_("open"), N_("resolved"), N_("firing"))
DATE_PROBLEMS = {
    "since": N_("Since: expected a date and time like 2026-12-03T14:30 ({zone}), got {value}."),
    "until": N_("Until: expected a date and time like 2026-12-03T14:30 ({zone}), got {value}."),
}
# A local time the clocks skip (the hour lost to summer time) is no time at all.
SKIPPED_PROBLEMS = {
    "since": N_("Since: {value} does not exist in {zone}: the clocks skip that hour."),
    "until": N_("Until: {value} does not exist in {zone}: the clocks skip that hour."),
}


@dataclass
class Filters:
    """The list's filters as typed (to show them back) and as understood (to query)."""

    status: str = ""
    priorities: list[str] = field(default_factory=list)
    site: str = ""
    q: str = ""
    since: str = ""
    until: str = ""
    page: int = 1
    problems: list[str] = field(default_factory=list)

    def query(self, zone: tzinfo) -> IncidentQuery:
        words = tuple(self.q.split())
        return IncidentQuery(
            status=cast(IncidentStatus, self.status) if self.status else None,
            priorities=tuple(cast(Priority, p) for p in self.priorities),
            site=self.site or None,
            words=words,
            since=_local_time(self.since, zone) if self.since else None,
            until=_local_time(self.until, zone, latest=True) if self.until else None,
        )

    def since_after_until(self, zone: tzinfo) -> bool:
        """Whether the range is empty by construction (both ends must parse)."""
        return _local_time(self.since, zone) >= _local_time(self.until, zone, latest=True)

    def link(self, page: int) -> str:
        """The list's URL with these filters, at ``page``."""
        pairs = [("status", self.status), *(("priority", p) for p in self.priorities)]
        pairs += [("site", self.site), ("q", self.q), ("since", self.since), ("until", self.until)]
        pairs = [(name, value) for name, value in pairs if value]
        if page > 1:
            pairs.append(("page", str(page)))
        return INCIDENTS_PATH + ("?" + urlencode(pairs) if pairs else "")


class SkippedTimeError(ValueError):
    """A local time the zone's clocks never show (they jump over it to summer time)."""


def _local_time(text: str, zone: tzinfo, *, latest: bool = False) -> datetime:
    """A datetime-local value in ``zone``, as UTC; ValueError if it is none (or out of
    range), :class:`SkippedTimeError` if the clocks skip it.

    A time the clocks show twice (the hour repeated when summer time ends) is
    its first instant, or its second with ``latest``: a range's ``since`` takes
    the first and its ``until`` the second, so the range holds whichever was meant.
    """
    for pattern in LOCAL_FORMATS:
        try:
            naive = datetime.strptime(text, pattern)
            local = naive.replace(tzinfo=zone, fold=int(latest))
            found = local.astimezone(UTC)
            # A skipped time comes back from UTC as another wall time.
            if found.astimezone(zone).replace(tzinfo=None) != naive:
                raise SkippedTimeError(text)
            return found
        except SkippedTimeError:
            raise
        except ValueError:
            continue
        except OverflowError:  # 0001-01-01T00:00 east of UTC is before year 1 there
            break
    raise ValueError(text)


def parse_filters(query: MultiMapping[str], zone: tzinfo, t: Translator | None = None) -> Filters:
    """The filters of a list request; each value that makes no sense adds a problem,
    in ``t``'s language (English without one)."""
    t = t or translator(SOURCE_LANGUAGE, "console")
    found = Filters(
        status=query.get("status", ""),
        priorities=query.getall("priority", []),
        site=query.get("site", "").strip(),
        q=query.get("q", "").strip(),
        since=query.get("since", "").strip(),
        until=query.get("until", "").strip(),
    )
    problems = found.problems
    if found.status not in ("", *STATUSES):
        problems.append(t.gettext("Status: choose open or resolved (or any)."))
        found.status = ""
    wrong = [p for p in found.priorities if p not in PRIORITIES]
    if wrong:
        problems.append(t.gettext("Priority: choose among P1, P2, P3 and P4."))
    found.priorities = [p for p in PRIORITIES if p in found.priorities]
    if len(found.site) > MAX_SITE:
        problems.append(t.gettext("Site: at most {count} characters.").format(count=MAX_SITE))
        found.site = ""
    if len(found.q.split()) > MAX_WORDS:
        problems.append(t.gettext("Search: at most {count} words.").format(count=MAX_WORDS))
    if any(len(word) > MAX_WORD for word in found.q.split()):
        problems.append(
            t.gettext("Search: words of at most {count} characters.").format(count=MAX_WORD)
        )
    for name in ("since", "until"):
        value = getattr(found, name)
        if not value:
            continue
        try:
            _local_time(value, zone)
        except SkippedTimeError:
            problems.append(
                t.gettext(SKIPPED_PROBLEMS[name]).format(zone=zone, value=repr(value[:40]))
            )
            setattr(found, name, "")
        except ValueError:
            problems.append(
                t.gettext(DATE_PROBLEMS[name]).format(zone=zone, value=repr(value[:40]))
            )
            setattr(found, name, "")
    if found.since and found.until and found.since_after_until(zone):
        problems.append(
            t.gettext("Until: {until} is not after since ({since}).").format(
                until=found.until[:40], since=found.since[:40]
            )
        )
        found.until = ""
    page = query.get("page", "1")
    if page.isascii() and page.isdigit() and 1 <= int(page) <= MAX_PAGE:
        found.page = int(page)
    else:
        problems.append(
            t.gettext("Page: expected a whole number from 1 to {last}.").format(last=MAX_PAGE)
        )
    return found


async def incident_list(request: web.Request) -> web.Response:
    user = await console_user(request)
    zone = request.app[CONFIG].notifications.zone
    words = await page_words(request, user)
    filters = parse_filters(request.query, zone, words.t)
    context: dict[str, Any] = {"filters": filters, "priorities": PRIORITIES, "zone": str(zone)}
    if filters.problems:
        context.update(rows=[], total=0, page=1, pages=1, prev_link=None, next_link=None)
        return await render(request, "incidents.html", context, user=user, status=400)
    offset = (filters.page - 1) * PAGE_SIZE
    result = await request.app[STORE].incident_page(
        filters.query(zone), limit=PAGE_SIZE, offset=offset
    )
    pages = max(1, math.ceil(result.total / PAGE_SIZE))
    if filters.page > pages:
        # Said, with a way back: an empty page would read as "nothing matches".
        filters.problems.append(
            words.t.ngettext(
                "Page: these filters give {pages} page; page {page} is past the last.",
                "Page: these filters give {pages} pages; page {page} is past the last.",
                pages,
            ).format(pages=pages, page=filters.page)
        )
        context.update(
            rows=[],
            total=result.total,
            page=filters.page,
            pages=pages,
            prev_link=filters.link(pages),
            next_link=None,
        )
        return await render(request, "incidents.html", context, user=user, status=400)
    now = utc_now()
    rows = [
        {
            "summary": row,
            "href": incident_path(row.id),
            "age": words.age(row.created_at, now),
            "created": words.time(row.created_at),
        }
        for row in result.rows
    ]
    context.update(
        rows=rows,
        total=result.total,
        page=filters.page,
        pages=pages,
        prev_link=filters.link(filters.page - 1) if filters.page > 1 else None,
        next_link=filters.link(filters.page + 1) if filters.page < pages else None,
    )
    return await render(request, "incidents.html", context, user=user)


def _timeline(members: list[Member], shown: Words) -> list[dict[str, str]]:
    """What happened to the members, oldest first: fired, fired again (flaps), resolved."""
    events: list[tuple[datetime, str, str, str]] = []
    t = shown.t
    for m in members:
        events.append((m.first_starts_at, m.fingerprint, shown.what(m), t.gettext("fired")))
        if m.flap_count and m.starts_at != m.first_starts_at:
            again = t.gettext("fired again (flap {count})").format(count=m.flap_count)
            events.append((m.starts_at, m.fingerprint, shown.what(m), again))
        if m.status == "resolved" and m.ends_at is not None:
            events.append((m.ends_at, m.fingerprint, shown.what(m), t.gettext("resolved")))
    events.sort(key=lambda e: (e[0], e[1]))
    return [{"at": shown.time(at), "what": what, "event": event} for at, _, what, event in events]


def _links(
    request: web.Request, incident: Incident, root: Member | None, t: Translator
) -> list[dict[str, str]]:
    """Prometheus (the root cause's generator URL), Grafana, and each Alertmanager peer."""
    links = []
    prometheus = safe_link(root.generator_url) if root is not None else None
    if prometheus:
        links.append(
            {"label": t.gettext("Prometheus: the root cause's expression"), "href": prometheus}
        )
    grafana = request.app[CONFIG].return_trip.grafana_url
    if grafana is not None:
        links.append({"label": "Grafana", "href": str(grafana)})
    matcher = quote(f'{{{INCIDENT_LABEL}="{incident.id}"}}', safe="")
    for peer in request.app[SETTINGS].alertmanager_urls:
        links.append(
            {
                "label": t.gettext("Alertmanager {peer}: this incident's alerts").format(peer=peer),
                "href": f"{peer.rstrip('/')}/#/alerts?filter={matcher}",
            }
        )
    return links


def _graph_src(request: web.Request, incident_id: str) -> str | None:
    """The signed graph URL on this origin, when graphs are served."""
    service = request.app.get(GRAPHS)
    if service is None:
        return None
    path = f"/graphs/{quote(incident_id, safe='')}.png"
    return f"{path}?{service.signer.query(incident_id, utc_now())}"


async def incident_page(request: web.Request) -> web.Response:
    user = await console_user(request)
    incident_id = request.match_info["id"]
    store = request.app[STORE]
    incident = await store.get_incident(incident_id)
    shown = await page_words(request, user)
    if incident is None:
        raise not_found(incident_id, shown.t)
    members = sorted(incident.members.values(), key=lambda m: (m.first_starts_at, m.fingerprint))
    root = root_member(incident) if members else None
    listed = members[:MAX_MEMBERS_SHOWN]
    if root is not None and root not in listed:
        # A storm's root cause often fires after its first symptoms: keep it listed.
        listed = sorted([*listed[:-1], root], key=lambda m: (m.first_starts_at, m.fingerprint))
    # The notifications' title, in the page's language (ai_sidecar.notify).
    annotations = shown.wording.annotations(incident)
    actions = await store.actions(incident_id)
    exchanges = await store.llm_exchanges(incident_id=incident_id, limit=MAX_EXCHANGES)
    ended = incident.resolved_at if incident.status == "resolved" else None
    context: dict[str, Any] = {
        "incident": incident,
        "title": annotations.get(
            TITLE_ANNOTATION, shown.t.gettext("Incident {id}").format(id=incident.id)
        ),
        "created": shown.time(incident.created_at),
        "updated": shown.time(incident.updated_at),
        "resolved": None if ended is None else shown.time(ended),
        "lasted": shown.duration((ended or utc_now()) - incident.created_at),
        "root": root,
        "root_problem": problem(root, shown.wording.t) if root is not None else "",
        "members": [
            {
                "member": m,
                "first": shown.time(m.first_starts_at),
                "ended": "" if m.ends_at is None else shown.time(m.ends_at),
                "link": safe_link(m.generator_url),
            }
            for m in listed
        ],
        "members_left_out": len(members) - len(listed),
        "timeline": _timeline(listed, shown),
        "exchanges": [{"exchange": e, "at": shown.time(e.at)} for e in exchanges],
        # Every call of the incident, not only the newest listed.
        "llm": await store.llm_usage(incident_id),
        "graph_src": _graph_src(request, incident.id),
        "links": _links(request, incident, root, shown.t),
        "feedback": [
            {"item": f, "at": shown.time(f.at)} for f in await store.feedback(incident_id)
        ],
        "actions": [{"item": a, "at": shown.time(a.at)} for a in actions],
        "handling": handling(actions),
        "path": incident_path(incident.id),
        "flash": flash_of(request.query, shown.t, user, incident_path(incident.id)),
        "durations": SILENCE_CHOICES,
        "submission": secrets.token_urlsafe(16),
        "peers": request.app[SETTINGS].alertmanager_urls,
    }
    return await render(request, "incident.html", context, user=user)


# The silence form's choices: value, label. "custom" reads the custom field.
SILENCE_CHOICES: tuple[tuple[str, str], ...] = (
    ("1h", N_("1 hour")),
    ("4h", N_("4 hours")),
    ("24h", N_("24 hours")),
    ("custom", N_("Custom (below)")),
)
MAX_SILENCE = timedelta(days=7)

"""What operators do from an incident's page: feedback, acknowledge, assign, silence.

Every action needs the operator role (:func:`operator_user`: 403 otherwise)
and the session's CSRF token (:func:`checked_form`: 403 otherwise), and ends
in a 303 back to the incident's page with a flash message. What was typed
that does not fit is refused with a message, never cut short silently.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from datetime import timedelta

import aiohttp
from aiohttp import web
from multidict import MultiMapping

from ai_sidecar.clock import utc_now
from ai_sidecar.console.language import page_words
from ai_sidecar.console.pages.common import back_to, not_found, wording
from ai_sidecar.console.pages.incidents import MAX_SILENCE, SILENCE_CHOICES
from ai_sidecar.console.pages.silences import create_silences, silence_plan
from ai_sidecar.console.session import ConsoleUser, checked_form, operator_user
from ai_sidecar.keys import SETTINGS, STORE
from ai_sidecar.store import IncidentAction
from ai_sidecar.store.protocol import ActionKind
from exporter.common.durations import parse_duration

MAX_COMMENT = 2000
MAX_ASSIGNEE = 100

CLIENT = web.AppKey("console_client", aiohttp.ClientSession)

# The hidden field of the silence form: a token drawn when the page is rendered.
SUBMISSION_FIELD = "submission"


class Submissions:
    """The silence forms already sent, by their one-time token: a double click, or
    the browser's back button and a second send, would otherwise create a second
    set of silences on every Alertmanager. Kept in memory (the console runs in
    one process) for a day, at most ``capacity`` tokens, oldest forgotten first."""

    def __init__(self, capacity: int = 10_000, keep_for: float = 86_400.0) -> None:
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._capacity = capacity
        self._keep_for = keep_for

    def first_use(self, user: str, token: str) -> bool:
        """Whether ``user`` sends ``token`` for the first time; records it."""
        now = time.monotonic()
        while self._seen and (
            len(self._seen) >= self._capacity
            or next(iter(self._seen.values())) < now - self._keep_for
        ):
            self._seen.popitem(last=False)
        key = (user, token)
        if key in self._seen:
            return False
        self._seen[key] = now
        return True


SUBMISSIONS = web.AppKey("console_submissions", Submissions)


def _typed(form: MultiMapping[str], name: str) -> str:
    """What was typed in ``name``, its line breaks as LF: a textarea's maxlength counts
    a line break as one character, and the browser sends it as CRLF."""
    return form.get(name, "").replace("\r\n", "\n").strip()


async def _record(request: web.Request, kind: ActionKind, user: ConsoleUser, detail: str) -> None:
    incident_id = request.match_info["id"]
    action = IncidentAction(incident_id, kind, user.name, detail, utc_now())
    if not await request.app[STORE].record_action(action):
        raise not_found(incident_id, (await page_words(request, user)).t)


async def give_feedback(request: web.Request) -> web.Response:
    user = await operator_user(request)
    form = await checked_form(request, user)
    incident_id = request.match_info["id"]
    useful = form.get("useful")
    comment = _typed(form, "comment")
    if useful not in ("yes", "no"):
        raise back_to(incident_id, user, refused="useful")
    if len(comment) > MAX_COMMENT:
        raise back_to(incident_id, user, refused="comment")
    recorded = await request.app[STORE].add_feedback(
        incident_id, useful == "yes", comment, utc_now()
    )
    if not recorded:
        raise not_found(incident_id, (await page_words(request, user)).t)
    raise back_to(incident_id, user, done="feedback")


async def acknowledge(request: web.Request) -> web.Response:
    user = await operator_user(request)
    await checked_form(request, user)
    await _record(request, "acknowledge", user, "")
    raise back_to(request.match_info["id"], user, done="acknowledged")


async def unacknowledge(request: web.Request) -> web.Response:
    user = await operator_user(request)
    await checked_form(request, user)
    await _record(request, "unacknowledge", user, "")
    raise back_to(request.match_info["id"], user, done="unacknowledged")


async def assign(request: web.Request) -> web.Response:
    user = await operator_user(request)
    form = await checked_form(request, user)
    assignee = " ".join(form.get("assignee", "").split())
    if len(assignee) > MAX_ASSIGNEE:
        raise back_to(request.match_info["id"], user, refused="assignee")
    await _record(request, "assign", user, assignee)
    raise back_to(request.match_info["id"], user, done="assigned" if assignee else "unassigned")


def silence_length(choice: str, custom: str) -> timedelta | None:
    """How long a silence lasts, from the form; None when it is not a valid choice."""
    if choice not in {value for value, _ in SILENCE_CHOICES}:
        return None
    text = custom.strip() if choice == "custom" else choice
    try:
        length = parse_duration(text)
    # OverflowError: a number of days or milliseconds too large for a timedelta.
    except (ValueError, TypeError, OverflowError):
        return None
    return length if timedelta(0) < length <= MAX_SILENCE else None


async def silence(request: web.Request) -> web.Response:
    user = await operator_user(request)
    form = await checked_form(request, user)
    incident_id = request.match_info["id"]
    length = silence_length(form.get("duration", ""), form.get("custom", ""))
    comment = _typed(form, "comment")
    if length is None:
        raise back_to(incident_id, user, refused="duration")
    if len(comment) > MAX_COMMENT:
        raise back_to(incident_id, user, refused="comment")
    incident = await request.app[STORE].get_incident(incident_id)
    if incident is None:
        raise not_found(incident_id, (await page_words(request, user)).t)
    peers = request.app[SETTINGS].alertmanager_urls
    if not peers:
        raise back_to(incident_id, user, done="no-peers")
    if not incident.firing:
        raise back_to(incident_id, user, done="nothing-firing")
    token = form.get(SUBMISSION_FIELD, "")[:64]
    if token and not request.app[SUBMISSIONS].first_use(user.name, token):
        raise back_to(incident_id, user, done="already-sent")
    plan = silence_plan(incident)
    starts = utc_now()
    ends = starts + length
    outcomes = await create_silences(
        request.app[CLIENT],
        peers,
        plan,
        starts=starts,
        ends=ends,
        created_by=user.name,
        comment=comment or f"Silenced from the Scout console: incident {incident_id}",
    )
    failed = [o for o in outcomes if o.error]
    parts = [f"until {wording(request).time(ends)}"]
    if plan.left_out:
        parts.append(f"{plan.left_out} firing alerts covered by the incident silence only")
    for outcome in outcomes:
        if outcome.error:
            made = f" after {', '.join(outcome.ids)}" if outcome.ids else ""
            parts.append(f"{outcome.peer} failed{made}: {outcome.error}")
        else:
            parts.append(f"{outcome.peer}: {', '.join(outcome.ids)}")
    await _record(request, "silence", user, "; ".join(parts))
    ok = len(outcomes) - len(failed)
    code = "silenced" if not failed else ("silenced-partly" if ok else "silence-failed")
    raise back_to(incident_id, user, done=code, ok=ok, failed=len(failed), peers=len(outcomes))

"""What the console's pages share: times in the configured zone, flash messages."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import quote, urlencode

from aiohttp import web

from ai_sidecar.console.session import ConsoleUser
from ai_sidecar.console.words import N_
from ai_sidecar.i18n import Translator
from ai_sidecar.keys import CONFIG
from ai_sidecar.notify.wording import Wording

INCIDENTS_PATH = "/console/incidents"


def wording(request: web.Request) -> Wording:
    """Times as notifications show them: to the second, in ``notifications.timezone``."""
    return Wording(request.app[CONFIG].notifications.zone)


def incident_path(incident_id: str) -> str:
    return f"{INCIDENTS_PATH}/{quote(incident_id, safe='')}"


# Flash messages by code: the redirect after an action names one, never text
# of its own, so nothing a person typed is reflected from the URL.
FLASHES: Mapping[str, str] = {
    "feedback": N_("Thank you: your feedback is recorded."),
    "acknowledged": N_("The incident is acknowledged."),
    "unacknowledged": N_("The acknowledgement is taken back."),
    "assigned": N_("The assignment is recorded."),
    "unassigned": N_("The incident is no longer assigned."),
    "silenced": N_("Silenced on every Alertmanager ({ok} of {peers})."),
    "silenced-partly": N_(
        "Silenced on {ok} of {peers} Alertmanagers; {failed} failed: see the actions below."
    ),
    "silence-failed": N_(
        "No Alertmanager took the silence ({failed} failed): see the actions below."
    ),
    "no-peers": N_(
        "No Alertmanager is configured (SCOUT_ALERTMANAGER_URLS): nothing was silenced."
    ),
    "nothing-firing": N_("Nothing of this incident fires: there is nothing to silence."),
    "already-sent": N_(
        "This silence form was already sent: the silences it created are in the actions below."
    ),
}
# Codes whose message is a problem (role="alert"), not a confirmation.
PROBLEMS = frozenset({"silence-failed", "no-peers", "nothing-firing"})
# Problems with what was typed: the message of the refused form, by code.
REFUSALS: Mapping[str, str] = {
    "useful": N_("Say whether the analysis was useful (yes or no)."),
    "comment": N_("The comment is too long (at most 2000 characters)."),
    "assignee": N_("The assignee is too long (at most 100 characters)."),
    "duration": N_(
        "Choose how long to silence for: 1 h, 4 h, 24 h, or a custom duration up to 7 d."
    ),
}


# The query names a flash reads; the signature covers exactly these.
FLASH_FIELDS = ("done", "refused", "ok", "failed", "peers")
SIGNATURE_FIELD = "sig"


def flash_signature(user: ConsoleUser, path: str, query: Mapping[str, str]) -> str:
    """An HMAC of a flash's fields and the page they are for, keyed by the session's
    CSRF token: only a redirect this server made for this session carries it, so a
    crafted link cannot show a false confirmation ("Silenced on every
    Alertmanager") to someone who acted on nothing."""
    fields = urlencode([(name, str(query[name])) for name in FLASH_FIELDS if name in query])
    message = f"{path}?{fields}".encode()
    return hmac.new(user.csrf_token.encode(), message, hashlib.sha256).hexdigest()[:32]


def signed_for(query: Mapping[str, str], user: ConsoleUser, path: str) -> bool:
    """Whether ``query``'s flash was signed by this server for ``user``'s session at
    ``path``."""
    given = query.get(SIGNATURE_FIELD, "")
    expected = flash_signature(user, path, query)
    return hmac.compare_digest(given.encode(errors="surrogateescape"), expected.encode())


def flash_of(
    query: Mapping[str, str], t: Translator, user: ConsoleUser, path: str
) -> tuple[str, bool] | None:
    """The message the redirect asked for, in ``t``'s language, and whether it is a
    problem; None without one, or when the redirect was not made for ``user``'s
    session at ``path``."""
    if not signed_for(query, user, path):
        return None
    code = query.get("done", "")
    counts = {
        name: int(query[name]) if query.get(name, "").isdigit() and len(query[name]) < 6 else 0
        for name in ("ok", "failed", "peers")
    }
    if code in FLASHES:
        return t.gettext(FLASHES[code]).format(**counts), code in PROBLEMS
    refused = query.get("refused", "")
    if refused in REFUSALS:
        return t.gettext(REFUSALS[refused]), True
    return None


def signed_redirect(
    user: ConsoleUser, path: str, fragment: str = "", **query: str | int
) -> web.HTTPSeeOther:
    """The 303 to ``path`` with a flash only ``user``'s session can show."""
    fields = {name: str(value) for name, value in query.items()}
    fields[SIGNATURE_FIELD] = flash_signature(user, path, fields)
    anchor = f"#{fragment}" if fragment else ""
    return web.HTTPSeeOther(f"{path}?{urlencode(fields)}{anchor}")


def back_to(incident_id: str, user: ConsoleUser, **query: str | int) -> web.HTTPSeeOther:
    """The 303 to the incident's page after an action, with its flash."""
    return signed_redirect(user, incident_path(incident_id), "status", **query)


def not_found(incident_id: str, t: Translator) -> web.HTTPNotFound:
    """The 404 of an incident the store does not have, in ``t``'s language."""
    text = t.gettext("There is no incident {id}.").format(id=repr(incident_id[:64]))
    return web.HTTPNotFound(text=text)

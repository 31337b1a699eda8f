"""The language a console page speaks, and its times, durations and numbers.

A page is in the first of:

1. the language the signed-in user chose (``/console/preferences``, kept in
   the store's ``console_preferences``);
2. the best of the browser's ``Accept-Language`` among the languages with a
   catalogue (Babel's :func:`~babel.core.negotiate_locale`);
3. ``language`` in the sidecar's config in force (a reload changes it).

Times and durations are written as the notifications write them, in the
page's language (English as before: ``2026-12-02 23:41:25 CET``, ``3 h 12
min``; French: ``2 déc. 2026, 23:41:25 CET``, ``2 j 3 h``); decimals take the
language's separator.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo

from aiohttp import web
from babel.core import negotiate_locale
from babel.numbers import format_decimal

from ai_sidecar.anomaly.evidence import evidence_band, evidence_subject
from ai_sidecar.clock import utc_now
from ai_sidecar.console.session import ConsoleUser
from ai_sidecar.console.words import SKIP_REASONS
from ai_sidecar.i18n import Translator, available_languages, catalogue_language, translator
from ai_sidecar.keys import CONFIG, RELOADER, STORE
from ai_sidecar.models import AnomalyEvidence, Member
from ai_sidecar.notify.phrases import TIME_FORMAT
from ai_sidecar.notify.wording import Wording, duration, member_what

# Where a request keeps its page language once found (one store read per request).
_LANGUAGE_KEY = web.RequestKey("console_language", str)
# An Accept-Language header longer than this is not read (a browser's is short).
MAX_ACCEPT_LANGUAGE = 500


def accepted_languages(header: str) -> list[str]:
    """The languages of an ``Accept-Language`` header, most wanted first (q=0 left out)."""
    if len(header) > MAX_ACCEPT_LANGUAGE:
        return []
    weighed: list[tuple[float, int, str]] = []
    for position, item in enumerate(header.split(",")):
        tag, _, parameters = item.strip().partition(";")
        quality = 1.0
        name, _, value = parameters.strip().partition("=")
        if name.strip() == "q":
            try:
                quality = float(value)
            except ValueError:
                continue
        if tag and tag != "*" and math.isfinite(quality) and quality > 0:
            weighed.append((-quality, position, tag.strip()))
    return [tag for _, _, tag in sorted(weighed)]


def negotiated_language(header: str) -> str | None:
    """The language with a catalogue the browser prefers, or None."""
    found = negotiate_locale(accepted_languages(header), available_languages(), sep="-")
    # Babel matches ignoring case but answers the tag as the header spelled it
    # ("FR-FR" gives "FR"); the catalogues know only their own spelling.
    return None if found is None else catalogue_language(found)


def configured_language(app: web.Application) -> str:
    """The config's ``language`` in force: the reloaded one after a reload."""
    reloader = app.get(RELOADER)
    return (reloader.config if reloader is not None else app[CONFIG]).language


async def page_language(request: web.Request, user: ConsoleUser | None) -> str:
    """The language of the page ``request`` asks for (module docstring)."""
    if _LANGUAGE_KEY in request:
        return request[_LANGUAGE_KEY]
    chosen = await request.app[STORE].get_console_language(user.name) if user else ""
    if chosen not in available_languages():
        chosen = negotiated_language(
            request.headers.get("Accept-Language", "")
        ) or configured_language(request.app)
    request[_LANGUAGE_KEY] = chosen
    return chosen


@dataclass(frozen=True, slots=True)
class Words:
    """Times, durations and numbers as a page in ``t``'s language shows them: times and
    durations as the notifications write them (:class:`~ai_sidecar.notify.wording.Wording`)."""

    t: Translator
    zone: tzinfo
    # Made once: a list page asks it for each row's time and age.
    wording: Wording = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "wording", Wording(self.zone, self.t.language))

    @property
    def language(self) -> str:
        return self.t.language

    def time(self, value: datetime) -> str:
        """To the second in the zone: ``2026-12-02 23:41:25 CET``, ``2 déc. 2026, 23:41:25 CET``."""
        return self.wording.time(value)

    def duration(self, value: timedelta) -> str:
        """``1 h 2 min 5 s``; ``2 j 3 h`` in French."""
        return duration(max(value, timedelta(0)), self.wording.t)

    def age(self, since: datetime, now: datetime | None = None) -> str:
        """The time since ``since`` in its two largest units: ``3 h 12 min``."""
        return " ".join(self.duration((now or utc_now()) - since).split()[:4])

    def what(self, member: Member) -> str:
        """How the page names an alert: ``InterfaceDown on core1``, as notifications do."""
        return member_what(member, translator(self.language, "notify"))

    def subject(self, evidence: AnomalyEvidence) -> str:
        """What an anomaly is about, in the page's language (its series' labels say it again)."""
        return evidence_subject(evidence, translator(self.language, "analysis"))

    def silence_detail(self, detail: str) -> str:
        """A recorded silence's detail (kept in English, as the API gives it) in the
        page's language: ``until 2026-12-02 23:41:25 CET; http://am:9093: id`` reads
        ``jusqu'au 2 déc. 2026, 23:41:25 CET ; http://am:9093 : id`` in French.

        Errors the peers answered stay as they were written; a part this does
        not recognise is shown as it is.
        """
        if self.t.is_source:
            return detail
        return self.t.gettext("; ").join(self._silence_part(p) for p in detail.split("; "))

    def _silence_part(self, part: str) -> str:
        if until := _UNTIL.fullmatch(part):
            return self.t.gettext("until {time}").format(time=self._recorded_time(until[1]))
        if left_out := _LEFT_OUT.fullmatch(part):
            count = int(left_out[1])
            return self.t.ngettext(
                "{count} firing alert covered by the incident silence only",
                "{count} firing alerts covered by the incident silence only",
                count,
            ).format(count=count)
        if failed := _PEER_FAILED.fullmatch(part):
            peer, ids, error = failed.groups()
            if ids:
                return self.t.gettext("{peer} failed after {ids}: {error}").format(
                    peer=peer, ids=ids, error=error
                )
            return self.t.gettext("{peer} failed: {error}").format(peer=peer, error=error)
        if made := _PEER_MADE.fullmatch(part):
            return self.t.gettext("{peer}: {ids}").format(peer=made[1], ids=made[2])
        return part

    def _recorded_time(self, text: str) -> str:
        """A time recorded in English (``2026-12-02 23:41:25 CET``) as this page shows
        times; as recorded when the zone is no longer the one it was written in."""
        try:
            naive = datetime.strptime(text[:19], "%Y-%m-%d %H:%M:%S")
        except ValueError:
            return text
        local = naive.replace(tzinfo=self.zone)
        if local.strftime(TIME_FORMAT) != text:
            return text
        return self.time(local)

    def band(self, evidence: AnomalyEvidence) -> str | None:
        """An anomaly's expected band, in the page's language (``1,5-3 Gbit/s``)."""
        return evidence_band(evidence, translator(self.language, "analysis"))

    def skip_reason(self, reason: str) -> str:
        """Why an analyst did not answer, in the page's language (fr: ``délai dépassé``)."""
        return self.t.gettext(SKIP_REASONS[reason]) if reason in SKIP_REASONS else reason

    def decimal(self, value: float, digits: int) -> str:
        """``value`` to ``digits`` decimals: ``0.87`` in English, ``0,87`` in French."""
        if self.t.is_source:
            return f"{value:.{digits}f}"
        return self.t.number(value, digits=digits)

    def significant(self, value: float) -> str:
        """``value`` to 4 significant digits (``%.4g``), in the language's separators."""
        text = f"{value:.4g}"
        if self.t.is_source or not math.isfinite(value) or "e" in text:
            return text
        return format_decimal(float(text), locale=self.t.locale)


# The parts of a recorded silence's detail (ai_sidecar.console.pages.actions.silence).
_UNTIL = re.compile(r"until (.+)")
_LEFT_OUT = re.compile(r"(\d+) firing alerts covered by the incident silence only")
_PEER_FAILED = re.compile(r"(\S+) failed(?: after ([^:]+))?: (.*)", re.DOTALL)
_PEER_MADE = re.compile(r"(\S+): (.*)", re.DOTALL)


def words_in(language: str, zone: tzinfo) -> Words:
    return Words(translator(language, "console"), zone)


async def page_words(request: web.Request, user: ConsoleUser | None) -> Words:
    """The words of the page ``request`` asks for, in the configured zone."""
    language = await page_language(request, user)
    return words_in(language, request.app[CONFIG].notifications.zone)

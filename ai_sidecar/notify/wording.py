"""What people read first in an enriched notification: the title, the times, what resolved it.

Built from the incident alone (no analyst), with the phrases of
:mod:`ai_sidecar.notify.phrases`, and carried on every copy as annotations:

========================  ====================================================
``scout_title``           ``P3 · Gi1/0/1 down on sw-3 (site paris)``; once
                          resolved, ``Resolved · … · lasted 12 min 5 s``
``scout_timeline``        when it started and, once resolved, ended and lasted
``scout_resolution``      once resolved only: what resolved it
========================  ====================================================

Times are to the second in the configured zone (``notifications.timezone``).
The words are the configured language's (``language``, the ``notify``
catalogue of :mod:`ai_sidecar.i18n`); English is the phrases' own text, and
names (devices, interfaces, labels) are never translated.
Label values are untrusted: every text goes through
:func:`ai_sidecar.sanitize.clean` on one line, so it can neither notify nor
carry markup, a line break (an e-mail header) or a hidden character; the
templates escape it again for Slack and HTML.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo

from ai_sidecar.correlate import INTERFACE_LABELS
from ai_sidecar.i18n import SOURCE_LANGUAGE, Translator, translator
from ai_sidecar.models import Incident, Member, merged_into, notified_priority
from ai_sidecar.notify import phrases
from ai_sidecar.sanitize import CAPS, clean

TITLE_ANNOTATION = "scout_title"
TIMELINE_ANNOTATION = "scout_timeline"
RESOLUTION_ANNOTATION = "scout_resolution"

# Words of a CamelCase alert name: "PowerSupplyFailed", "BGPDown", "Disk2Full".
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+|[^A-Za-z0-9]+")


@dataclass(frozen=True, slots=True)
class Wording:
    """How times are shown, the zone (``notifications.timezone``), and in which
    language (``language``)."""

    zone: tzinfo = UTC
    language: str = SOURCE_LANGUAGE
    t: Translator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "t", translator(self.language, "notify"))

    def time(self, value: datetime) -> str:
        """``2026-12-02 23:41:25 CET``: to the second, in the zone; in another
        language, its own date format (fr: ``2 déc. 2026, 23:41:25 CET``)."""
        local = value.astimezone(self.zone)
        if self.t.is_source:
            return local.strftime(phrases.TIME_FORMAT)
        return self.t.gettext(phrases.ZONED_TIME).format(
            time=self.t.datetime(value, self.zone), zone=local.strftime("%Z")
        )

    def annotations(self, incident: Incident) -> dict[str, str]:
        """The ``scout_*`` text annotations of ``incident``'s copies (module docstring)."""
        members = list(incident.members.values())
        if not members:
            return {}
        root = root_member(incident)
        started = min(m.first_starts_at for m in members)
        _ = self.t.gettext
        site = _site(incident, root)
        title = _(phrases.TITLE).format(
            priority=notified_priority(incident),
            problem=problem(root, self.t),
            site=_(phrases.SITE).format(site=site) if site else "",
            related=phrases.related(self.t, len(members) - 1),
        )
        found = {TIMELINE_ANNOTATION: _(phrases.STARTED).format(start=self.time(started))}
        if incident.status == "resolved" and incident.resolved_at is not None:
            ended = max(incident.resolved_at, started)
            lasted = duration(ended - started, self.t)
            title = _(phrases.RESOLVED_TITLE).format(title=title, duration=lasted)
            found[TIMELINE_ANNOTATION] = _(phrases.LASTED).format(
                start=self.time(started), end=self.time(ended), duration=lasted
            )
            found[RESOLUTION_ANNOTATION] = self.resolution(incident, root, ended)
        found[TITLE_ANNOTATION] = title
        return {name: _one_line(text) for name, text in found.items()}

    def resolution(self, incident: Incident, root: Member, ended: datetime) -> str:
        """What resolved ``incident``: a merge, its root cause, or its last alert to clear."""
        _ = self.t.gettext
        at = self.time(ended)
        other = merged_into(incident)
        if other is not None:
            return _(phrases.RESOLVED_BY_MERGE).format(incident=other, time=at)
        members = list(incident.members.values())
        cleared = [m for m in members if m.status == "resolved" and m.ends_at is not None]
        firing = len(members) - len(cleared)
        if root.status == "resolved" and root.ends_at is not None and firing:
            # Resolved on its root cause alone (correlation.resolve: root_cause).
            return _(phrases.RESOLVED_BY_ROOT_CAUSE).format(
                problem=problem(root, self.t), time=self.time(root.ends_at)
            ) + phrases.still_firing(self.t, firing)
        if not cleared:
            return _(phrases.RESOLVED_UNKNOWN).format(time=at)
        last = max(cleared, key=lambda m: (m.ends_at or ended, m is root, m.fingerprint))
        when = self.time(last.ends_at or ended)
        if len(members) == 1:
            return _(phrases.RESOLVED_BY_ONLY_ALERT).format(
                problem=problem(last, self.t), time=when
            )
        if last is root:
            return _(phrases.RESOLVED_BY_ROOT_CAUSE).format(
                problem=problem(last, self.t), time=when
            )
        return phrases.resolved_by_last_alert(self.t, len(members), problem(last, self.t), when)


def root_member(incident: Incident) -> Member:
    """The root cause, or the earliest member when correlation named none."""
    found = incident.members.get(incident.root_cause or "")
    if found is not None:
        return found
    return min(incident.members.values(), key=lambda m: (m.first_starts_at, m.fingerprint))


ENGLISH = translator(SOURCE_LANGUAGE, "notify")


def member_what(member: Member, t: Translator = ENGLISH) -> str:
    """``InterfaceDown on core1`` (:attr:`Member.what`), in ``t``'s language."""
    if t.is_source:
        return member.what
    name = member.alertname or t.gettext("alert {fingerprint}").format(
        fingerprint=member.fingerprint
    )
    if not member.target:
        return name
    return t.gettext("{alert} on {target}").format(alert=name, target=member.target)


def problem(member: Member, t: Translator = ENGLISH) -> str:
    """What is wrong and where, in plain words: ``Gi1/0/1 down on sw-3``; the
    alert's name and label values are not translated."""
    phrase = phrases.PROBLEMS.get(member.alertname)
    values = {"target": member.target}
    interface = next((member.labels[n] for n in INTERFACE_LABELS if member.labels.get(n)), "")
    values["interface"] = interface
    if phrase is None:
        values["name"] = alert_words(member.alertname) or t.gettext(phrases.UNNAMED_ALERT)
        phrase = phrases.UNKNOWN_PROBLEM if member.target else phrases.UNKNOWN_PROBLEM_NO_TARGET
    phrase = t.gettext(phrase)
    fields = {name for _, name, _, _ in string.Formatter().parse(phrase) if name}
    for name in fields - values.keys():
        values[name] = member.labels.get(name, "")
    return phrase.format_map(
        {
            name: _one_line(value) or t.gettext(phrases.MISSING.get(name, phrases.MISSING_DEFAULT))
            for name, value in values.items()
        }
    )


def alert_words(name: str) -> str:
    """``PowerSupplyFailed`` as ``power supply failed``; acronyms (``BGP``) stay."""
    words = [w for w in _WORDS.findall(name) if w.strip(" _-")]
    return " ".join(w if w.isupper() else w.lower() for w in words)


def duration(value: timedelta, t: Translator = ENGLISH) -> str:
    """``1 h 2 min 5 s``, to the second (rounded down); units of zero left out."""
    left = max(0, math.floor(value.total_seconds()))
    parts = []
    for unit, seconds in phrases.DURATION_UNITS:
        count, left = divmod(left, seconds)
        if count:
            parts.append(t.gettext(unit).format(count=count))
    return " ".join(parts) or t.gettext(phrases.DURATION_UNITS[-1][0]).format(count=0)


def _site(incident: Incident, root: Member) -> str:
    return root.labels.get("site") or incident.group.get("site", "")


def _one_line(text: str) -> str:
    """``text`` safe for a title or an e-mail subject: one line, no markup, capped."""
    return clean(" ".join(text.split()), CAPS.summary)

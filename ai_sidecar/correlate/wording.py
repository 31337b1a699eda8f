"""The analysis's shared wording in the configured language (catalogue "analysis").

Root-cause reasons, priority explanations and the local analyst all count
alerts and targets, name alerts on their targets, and show times, durations
and scores; this is where those pieces are worded once. English keeps the
formats it always had (RFC 3339 times, ``5m`` durations, ``0.97`` scores), byte
for byte; another language gets its catalogue's words and Babel's formatting.
Names (alerts, devices, labels, metrics) are never translated.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from ai_sidecar.i18n import Translator, translator
from ai_sidecar.models import Member, format_time
from exporter.common.durations import format_duration


def N_(message: str) -> str:
    """Marks a message for the catalogue where it is defined; translated where shown."""
    return message


# The correlator's layers (config.LAYERS), as sentences name them.
LAYER_NAMES = {
    "device": N_("device"),
    "link": N_("link"),
    "network": N_("network"),
    "host": N_("host"),
    "service": N_("service"),
}


def layer_name(t: Translator, layer: str) -> str:
    """A layer as ``t``'s language names it (fr: ``liaison``); English as written."""
    if t.is_source or layer not in LAYER_NAMES:
        return layer
    return t.gettext(LAYER_NAMES[layer])


def analysis_translator(language: str) -> Translator:
    return translator(language, "analysis")


def number(t: Translator, value: int) -> str:
    return str(value) if t.is_source else t.number(value)


def score(t: Translator, value: float) -> str:
    """An anomaly score to two decimals (fr: ``0,97``)."""
    return f"{value:.2f}" if t.is_source else t.number(value, digits=2)


def when(t: Translator, value: datetime) -> str:
    """A time to the second, in UTC: RFC 3339 in English, the language's format else."""
    if t.is_source:
        return format_time(value)
    return t.gettext("{time} UTC").format(time=t.datetime(value, UTC))


def lasting(t: Translator, delta: timedelta) -> str:
    """A duration: ``5m`` in English, the language's words else (fr: ``5 minutes``)."""
    return format_duration(delta) if t.is_source else t.duration(delta)


def alerts(t: Translator, count: int) -> str:
    return t.ngettext("{count} alert", "{count} alerts", count).format(count=number(t, count))


def targets(t: Translator, count: int) -> str:
    return t.ngettext("{count} target", "{count} targets", count).format(count=number(t, count))


def other_alerts(t: Translator, count: int) -> str:
    return t.ngettext("{count} other alert", "{count} other alerts", count).format(
        count=number(t, count)
    )


def on_target(t: Translator, name: str, target: str) -> str:
    """``InterfaceDown on core1``, or the name alone when there is no target."""
    return t.gettext("{alert} on {target}").format(alert=name, target=target) if target else name


def what(t: Translator, member: Member) -> str:
    """How a sentence names a member (:attr:`Member.what` in English)."""
    if t.is_source:
        return member.what
    name = member.alertname or t.gettext("alert {fingerprint}").format(
        fingerprint=member.fingerprint
    )
    return on_target(t, name, member.target)


def join(t: Translator, words: Iterable[str]) -> str:
    """``a, b and c``: the last two joined by the language's "and"."""
    words = list(words)
    if len(words) <= 1:
        return "".join(words)
    return t.gettext("{listed} and {last}").format(listed=", ".join(words[:-1]), last=words[-1])


def in_turn(t: Translator, clauses: Iterable[str]) -> str:
    """``a; b; c``: clauses one after the other (French sets a space before ``;``)."""
    text = ""
    for clause in clauses:
        text = (
            t.gettext("{before}; {clause}").format(before=text, clause=clause) if text else clause
        )
    return text


def listed(t: Translator, names: Iterable[str], limit: int) -> str:
    """The first ``limit`` names, then ``and N more``."""
    names = list(names)
    shown = ", ".join(names[:limit])
    if len(names) <= limit:
        return shown
    more = len(names) - limit
    return t.ngettext("{listed} and {count} more", "{listed} and {count} more", more).format(
        listed=shown, count=number(t, more)
    )

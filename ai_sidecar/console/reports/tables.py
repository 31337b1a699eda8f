"""A report as titled tables of text: the one layout HTML, CSV, PDF and e-mail share.

Cells are plain strings, every rendering escaping them its own way, since
alert names and targets are untrusted text. Their figures are written for
people (HTML, PDF, e-mail: ``1h 10m``, ``67%``, ``1.5 GB``, ``2 of 4``, in the
report's language) or, with ``plain``, for programs and spreadsheets (the CSV:
seconds, fractions, bytes, plain numbers, an empty cell for none), which need
numbers they can sort and sum; so some rows and columns differ too (see
:func:`report_tables`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from babel.units import format_unit

from ai_sidecar.console.reports.model import (
    NO_ALERTNAME,
    NO_SITE,
    NO_TARGET,
    Durations,
    Noisy,
    Report,
)
from ai_sidecar.console.reports.period import Period
from ai_sidecar.console.words import N_
from ai_sidecar.i18n import SOURCE_LANGUAGE, Translator, translator
from ai_sidecar.notify.wording import duration

Gettext = Callable[[str], str]


@dataclass(frozen=True, slots=True)
class Table:
    """``key`` names it in the CSV's section column; ``unavailable`` replaces its rows."""

    key: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    unavailable: str | None = None
    # Shown under the title: what the numbers mean.
    note: str = ""


def duration_text(value: timedelta | None, t: Translator | None = None) -> str:
    """``2h 05m``, ``4m 10s``, ``12s``; an em dash for none.

    In another language than English, its own units in the two largest
    (fr: ``2 j 5 h``, ``4 min 10 s``), as the console writes durations.
    """
    if value is None:
        return "—"
    if t is not None and not t.is_source:
        spoken = duration(max(value, timedelta(0)), translator(t.language, "notify"))
        return " ".join(spoken.split()[:4])
    seconds = max(0, round(value.total_seconds()))
    days, seconds = divmod(seconds, 86_400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {seconds:02d}s"
    return f"{seconds}s"


def share_text(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.0%}"


def _share(value: float | None, t: Translator) -> str:
    """``67%``; in another language its own percent format (fr: ``67 %``)."""
    if t.is_source or value is None or math.isnan(value):
        return share_text(value)
    return t.percent(value)


def _decimal(value: float, digits: int, t: Translator) -> str:
    """``2.2``; in another language its own separator (fr: ``2,2``)."""
    return f"{value:.{digits}f}" if t.is_source else t.number(value, digits=digits)


def bytes_text(value: float, t: Translator | None = None) -> str:
    """``1.5 GB`` (powers of 1000); in another language its units (fr: ``1,5 Go``)."""
    if t is not None and not t.is_source:
        for unit in ("byte", "kilobyte", "megabyte", "gigabyte", "terabyte"):
            if abs(value) < 1000 or unit == "terabyte":
                pattern = "#,##0" if unit == "byte" else "#,##0.0"
                return format_unit(
                    value, f"digital-{unit}", length="short", format=pattern, locale=t.locale
                )
            value /= 1000
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


class Figures(Protocol):
    """How a table writes its figures."""

    def duration(self, value: timedelta | None) -> str: ...
    def share(self, value: float | None) -> str: ...
    def decimal(self, value: float | None, digits: int) -> str: ...
    def size(self, value: float) -> str: ...
    def over(self, count: int, total: int) -> str:
        """How many incidents a measure was taken over, of ``total``."""
        ...


@dataclass(frozen=True, slots=True)
class _Shown:
    """For people, in ``t``'s language: ``1h 10m``, ``67%``, ``2.2``, ``1.5 GB``, ``2 of
    4``; an em dash for none."""

    t: Translator

    def duration(self, value: timedelta | None) -> str:
        return duration_text(value, self.t)

    def share(self, value: float | None) -> str:
        return _share(value, self.t)

    def decimal(self, value: float | None, digits: int) -> str:
        return "—" if value is None else _decimal(value, digits, self.t)

    def size(self, value: float) -> str:
        return bytes_text(value, self.t)

    def over(self, count: int, total: int) -> str:
        return self.t.gettext("{count} of {total}").format(count=count, total=total)


# Decimals a plain figure keeps: a share to a ten-thousandth of a percent, a cost in USD
# to a millionth of a dollar (an LLM call can cost less than a cent).
PLAIN_DIGITS = 6


def plain_number(value: float) -> str:
    """``value`` as every spreadsheet and program reads a number: a point before the
    decimals, no separator, exponent or unit, trailing zeros dropped (``2.25``, ``0``)."""
    text = f"{value:.{PLAIN_DIGITS}f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


class _Plain:
    """For programs and spreadsheets: whole seconds, fractions (``0.666667`` for 67%),
    whole bytes, plain decimals; an empty cell for none."""

    def duration(self, value: timedelta | None) -> str:
        return "" if value is None else str(max(0, round(value.total_seconds())))

    def share(self, value: float | None) -> str:
        return "" if value is None or math.isnan(value) else plain_number(value)

    def decimal(self, value: float | None, digits: int) -> str:
        return "" if value is None else plain_number(value)

    def size(self, value: float) -> str:
        return str(round(value))

    def over(self, count: int, total: int) -> str:
        return str(count)


def _durations(name: str, value: Durations, of: int, figures: Figures) -> tuple[str, ...]:
    return (
        name,
        figures.duration(value.mean),
        figures.duration(value.median),
        figures.over(value.count, of),
    )


# Directions as Prometheus' series name them (WAN: in, out; flows: source, destination).
DIRECTIONS = {
    "in": N_("in"),
    "out": N_("out"),
    "source": N_("source"),
    "destination": N_("destination"),
}


def _direction(value: str, _: Gettext) -> str:
    """A direction in the report's language; one it does not know, as it came."""
    return _(DIRECTIONS[value]) if value in DIRECTIONS else value


def _named(name: str, none: str, _: Gettext) -> str:
    """``name``, or ``none`` (a catalogue message) in the report's language for ""."""
    return name or _(none)


def _noisy(key: str, title: str, what: str, rows: Sequence[Noisy], none: str, _: Gettext) -> Table:
    return Table(
        key,
        title,
        (what, _("Firings"), _("Incidents")),
        tuple((_named(n.name, none, _), str(n.firings), str(n.incidents)) for n in rows),
        note=_("Firings: each alert's firing episodes in the period's incidents, flaps included."),
    )


def _llm_rows(report: Report, plain: bool, _: Gettext) -> tuple[tuple[str, ...], ...]:
    """The summary's LLM calls and tokens: two figures a row for people, one for programs
    (under names of their own, not translated: the CSV's are English)."""
    calls, failed = report.llm_calls, report.llm_failed
    tokens_in, tokens_out = report.llm_input_tokens, report.llm_output_tokens
    if plain:
        return (
            ("LLM calls", str(calls)),
            ("LLM calls failed", str(failed)),
            ("LLM tokens in", str(tokens_in)),
            ("LLM tokens out", str(tokens_out)),
        )
    return (
        (_("LLM calls (failed)"), f"{calls} ({failed})"),
        (_("LLM tokens in / out"), f"{tokens_in} / {tokens_out}"),
    )


def report_tables(
    report: Report, t: Translator | None = None, *, plain: bool = False
) -> list[Table]:
    """The report's tables, their words in ``t``'s language (English without one).

    ``plain``: figures for programs (:class:`_Plain`); then the summary gives LLM
    calls, failed calls, tokens in and tokens out a row each, and the timing
    table's mean and median are headed ``(seconds)``, its incidents column the
    count alone."""
    t = t or translator(SOURCE_LANGUAGE, "console")
    _ = t.gettext
    figures: Figures = _Plain() if plain else _Shown(t)
    compression = report.compression
    summary = Table(
        "summary",
        _("Summary"),
        (_("Measure"), _("Value")),
        (
            (_("Incidents"), str(report.incidents)),
            (_("Still open"), str(report.open)),
            (_("Merged into others (not counted)"), str(report.merged)),
            (_("Alerts received (firing)"), str(report.received)),
            (_("Distinct alerts in these incidents"), str(report.alerts)),
            (
                _("Compression (alerts received per incident)"),
                figures.decimal(compression, 1),
            ),
            (_("Feedback given"), str(report.feedback)),
            (_("Found useful"), figures.share(report.useful_share)),
            *_llm_rows(report, plain, _),
            (_("LLM estimated cost (USD)"), figures.decimal(report.llm_cost, 4)),
        ),
        note=(
            _(
                "Incidents created in the period, and the alerts received that started in it:"
                " both by the alerts' own start time, so an alert delivered late counts on the"
                " day it started. Alerts received: firing episodes stored, re-deliveries not"
                " counted."
            )
        ),
    )
    timing = Table(
        "timing",
        _("Time to acknowledge and to resolve"),
        (
            (_("Measure"), "Mean (seconds)", "Median (seconds)", _("Incidents"))
            if plain
            else (_("Measure"), _("Mean"), _("Median"), _("Incidents"))
        ),
        (
            _durations(_("Time to acknowledge"), report.acknowledge, report.incidents, figures),
            _durations(_("Time to resolve"), report.resolve, report.incidents, figures),
        ),
        note=_("From the incident's creation to its first acknowledgement, and to its resolution."),
    )
    priority = Table(
        "priority",
        _("Incidents by priority"),
        (_("Priority"), _("Incidents")),
        tuple((p, str(n)) for p, n in report.by_priority),
    )
    site = Table(
        "site",
        _("Incidents by site"),
        (_("Site"), _("Incidents")),
        tuple((_named(s, NO_SITE, _), str(n)) for s, n in report.by_site),
    )
    bandwidth = Table(
        "bandwidth",
        _("Top bandwidth consumers"),
        (_("Address"), _("Direction"), _("Bytes")),
        tuple(
            (b.address, _direction(b.direction, _), figures.size(b.bytes))
            for b in report.bandwidth.rows
        ),
        unavailable=report.bandwidth.unavailable_in(t),
    )
    wan = Table(
        "wan",
        _("WAN utilisation"),
        (_("Device"), _("Interface"), _("Direction"), _("Mean"), _("Peak")),
        tuple(
            (
                w.instance,
                w.interface,
                _direction(w.direction, _),
                figures.share(w.mean),
                figures.share(w.peak),
            )
            for w in report.wan.rows
        ),
        unavailable=report.wan.unavailable_in(t),
    )
    anomalies = Table(
        "anomalies",
        _("Top anomalies"),
        (_("Signal"), _("Series"), _("Highest score")),
        tuple((a.signal, a.subject, figures.decimal(a.score, 2)) for a in report.anomalies.rows),
        unavailable=report.anomalies.unavailable_in(t),
    )
    return [
        summary,
        timing,
        priority,
        site,
        _noisy("rules", _("Noisiest alert rules"), _("Alert rule"), report.rules, NO_ALERTNAME, _),
        _noisy("targets", _("Noisiest targets"), _("Target"), report.targets, NO_TARGET, _),
        bandwidth,
        wan,
        anomalies,
    ]


def period_title(period: Period, t: Translator | None = None) -> str:
    """The period's title in ``t``'s language (English: :attr:`Period.title`), its
    times written as the console writes them (fr: ``5 déc. 2026, 22:09``)."""
    if t is None or t.is_source:
        return period.title
    return t.gettext(PERIOD_TITLES[period.kind]).format(
        start=period_time(period.start, period, t),
        end=period_time(period.end, period, t),
        zone=period.zone.key,
    )


def period_time(moment: datetime, period: Period, t: Translator) -> str:
    """``moment`` to the minute in the period's zone: ``2026-12-05 22:09`` in English (as
    :attr:`Period.title`), the language's own date format in another (fr: ``5 déc.
    2026, 22:09``)."""
    if t.is_source:
        return f"{moment.astimezone(period.zone):%Y-%m-%d %H:%M}"
    return t.minute(moment, period.zone)


PERIOD_TITLES = {
    "day": N_("Day from {start} to {end} ({zone})"),
    "week": N_("Week from {start} to {end} ({zone})"),
    "month": N_("Month from {start} to {end} ({zone})"),
}
# The report form's period names.
PERIOD_NAMES = (N_("day"), N_("week"), N_("month"))

"""A report as titled tables of text: the one layout HTML, CSV, PDF and e-mail share.

Cells are plain strings (already formatted: durations, shares, bytes); every
rendering escapes them its own way, since alert names and targets are
untrusted text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from ai_sidecar.console.reports.model import Durations, Noisy, Report


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


def duration_text(value: timedelta | None) -> str:
    """``2h 05m``, ``4m 10s``, ``12s``; an em dash for none."""
    if value is None:
        return "—"
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


def bytes_text(value: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _durations(name: str, value: Durations, of: int) -> tuple[str, ...]:
    return (name, duration_text(value.mean), duration_text(value.median), f"{value.count} of {of}")


def _noisy(key: str, title: str, what: str, rows: Sequence[Noisy]) -> Table:
    return Table(
        key,
        title,
        (what, "Firings", "Incidents"),
        tuple((n.name, str(n.firings), str(n.incidents)) for n in rows),
        note="Firings: each alert's firing episodes in the period's incidents, flaps included.",
    )


def report_tables(report: Report) -> list[Table]:
    compression = report.compression
    summary = Table(
        "summary",
        "Summary",
        ("Measure", "Value"),
        (
            ("Incidents", str(report.incidents)),
            ("Still open", str(report.open)),
            ("Merged into others (not counted)", str(report.merged)),
            ("Alerts received (firing)", str(report.received)),
            ("Distinct alerts in these incidents", str(report.alerts)),
            (
                "Compression (alerts received per incident)",
                "—" if compression is None else f"{compression:.1f}",
            ),
            ("Feedback given", str(report.feedback)),
            ("Found useful", share_text(report.useful_share)),
            ("LLM calls (failed)", f"{report.llm_calls} ({report.llm_failed})"),
            ("LLM tokens in / out", f"{report.llm_input_tokens} / {report.llm_output_tokens}"),
            ("LLM estimated cost (USD)", f"{report.llm_cost:.4f}"),
        ),
        note=(
            "Incidents created in the period. Alerts received: firing episodes stored,"
            " re-deliveries not counted."
        ),
    )
    timing = Table(
        "timing",
        "Time to acknowledge and to resolve",
        ("Measure", "Mean", "Median", "Incidents"),
        (
            _durations("Time to acknowledge", report.acknowledge, report.incidents),
            _durations("Time to resolve", report.resolve, report.incidents),
        ),
        note="From the incident's creation to its first acknowledgement, and to its resolution.",
    )
    priority = Table(
        "priority",
        "Incidents by priority",
        ("Priority", "Incidents"),
        tuple((p, str(n)) for p, n in report.by_priority),
    )
    site = Table(
        "site",
        "Incidents by site",
        ("Site", "Incidents"),
        tuple((s, str(n)) for s, n in report.by_site),
    )
    bandwidth = Table(
        "bandwidth",
        "Top bandwidth consumers",
        ("Address", "Direction", "Bytes"),
        tuple((t.address, t.direction, bytes_text(t.bytes)) for t in report.bandwidth.rows),
        unavailable=report.bandwidth.unavailable,
    )
    wan = Table(
        "wan",
        "WAN utilisation",
        ("Device", "Interface", "Direction", "Mean", "Peak"),
        tuple(
            (w.instance, w.interface, w.direction, share_text(w.mean), share_text(w.peak))
            for w in report.wan.rows
        ),
        unavailable=report.wan.unavailable,
    )
    anomalies = Table(
        "anomalies",
        "Top anomalies",
        ("Signal", "Series", "Highest score"),
        tuple((a.signal, a.subject, f"{a.score:.2f}") for a in report.anomalies.rows),
        unavailable=report.anomalies.unavailable,
    )
    return [
        summary,
        timing,
        priority,
        site,
        _noisy("rules", "Noisiest alert rules", "Alert rule", report.rules),
        _noisy("targets", "Noisiest targets", "Target", report.targets),
        bandwidth,
        wan,
        anomalies,
    ]

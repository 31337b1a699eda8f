"""Families for ``/snmp`` and their text exposition.

prometheus_client appends ``_total`` to every counter name, but ``/snmp`` must keep
snmp_exporter's names (``ifHCInOctets`` is a counter) so that existing rules and
dashboards work. So this endpoint renders the text format 0.0.4 itself; it is
small, and values stay exact integers (64-bit counters lose digits as floats).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from exporter.clients.snmp.speedups import compiled
from exporter.common.web import exposition_response

Labels = tuple[tuple[str, str], ...]


class RenderedLabels(Protocol):
    """Label sets rendered ahead, by identity; whoever holds one keeps those tuples alive."""

    @property
    def texts(self) -> Mapping[int, str]: ...


@dataclass(slots=True)
class Family:
    name: str
    help: str
    type: str  # "counter" or "gauge"
    samples: list[tuple[Labels, int | float]] = field(default_factory=list)
    # Texts of some of the samples' label sets, kept between scrapes (see mapping.RowLabels).
    rendered: RenderedLabels | None = None

    def add(self, labels: Labels, value: int | float) -> None:
        self.samples.append((labels, value))


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_value(value: int | float) -> str:
    if isinstance(value, int):
        return str(value)
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def render_labels(labels: Labels) -> str:
    """``{name="value",...}`` sorted by name, or nothing for no labels."""
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape_label(v)}"' for k, v in sorted(labels)) + "}"


def render_text(families: Iterable[Family]) -> str:
    """The text exposition format 0.0.4; families without samples are left out.

    The mapper gives every metric of a table row the same labels tuple, so each
    is rendered once, remembered by identity; a family whose label sets were
    rendered on an earlier scrape (``Family.rendered``) reuses those texts.
    """
    out: list[str] = []
    append = out.append
    rendered: dict[int, str] = {}
    keep: list[Labels] = []  # holds every memoised tuple, so no identity is reused
    for family in families:
        if not family.samples:
            continue
        name = family.name
        append(f"# HELP {name} {_escape_help(family.help)}")
        append(f"# TYPE {name} {family.type}")
        # The family holds what rendered its texts, which holds their tuples: no
        # identity in it can belong to another tuple while the family lives.
        ahead = family.rendered.texts if family.rendered is not None else rendered
        samples = family.samples
        if ahead is not rendered:
            if compiled is not None:
                text = compiled.render_int_samples(name, ahead, samples)
                if text is not None:
                    append(text)
                    continue
            # The usual family of a scrape that reuses a cache: every label set rendered
            # ahead, every value an int (str() of it is its text). One comprehension,
            # rather than the loop below, is most of the rendering's time saved; any
            # other sample (a float, a label set not rendered yet) takes the loop.
            try:
                lines = [f"{name}{ahead[id(lb)]} {v}" for lb, v in samples if type(v) is int]
            except KeyError:
                lines = []
            if len(lines) == len(samples):
                out += lines
                continue
        for labels, value in samples:
            text = ahead.get(id(labels))
            if text is None and ahead is not rendered:
                text = rendered.get(id(labels))
            if text is None:
                text = rendered[id(labels)] = render_labels(labels)
                keep.append(labels)
            if type(value) is int:
                append(f"{name}{text} {value}")
            else:
                append(f"{name}{text} {_format_value(value)}")
    append("")
    return "\n".join(out)


def merge_families(families: Iterable[Family]) -> list[Family]:
    """One family per name, each label set once: two modules may both read sysUpTime."""
    families = list(families)
    counts = Counter(family.name for family in families)
    merged: dict[str, Family] = {}
    seen: dict[str, set[Labels]] = {}
    for family in families:
        if counts[family.name] == 1:
            merged[family.name] = family  # the common case: nothing to merge
            continue
        into = merged.get(family.name)
        if into is None:
            into = merged[family.name] = Family(family.name, family.help, family.type)
            seen[family.name] = set()
        for labels, value in family.samples:
            key = tuple(sorted(labels))
            if key not in seen[family.name]:
                seen[family.name].add(key)
                into.add(labels, value)
    return list(merged.values())


class TextExposition:
    """``Family`` objects in the text format 0.0.4, whatever the scraper asks for."""

    def gauge(self, name: str, documentation: str, value: float) -> Family:
        family = Family(name, documentation, "gauge")
        family.add((), value)
        return family

    def info(self, name: str, documentation: str, labels: Sequence[Mapping[str, str]]) -> Family:
        family = Family(name, documentation, "gauge")
        for label_set in labels:
            family.add(tuple(label_set.items()), 1)
        return family

    def render(self, request: web.Request, families: Sequence[Family]) -> web.Response:
        return exposition_response(
            request,
            render_text(families).encode(),
            "text/plain; version=0.0.4; charset=utf-8",
        )


TEXT_EXPOSITION = TextExposition()

"""From metric conditions to alert episodes, the way Prometheus gets there.

A :class:`Condition` says when a rule's expression is true for one series in the
world (a port is down from 09:12:03 to 09:40:10). Prometheus only sees it on its
grids, so :func:`evaluate` turns conditions into :class:`Episode` values:

- the target is scraped every ``scrape_interval`` at a fixed random phase; a
  sample is stored a little after its timestamp (the scrape takes time);
- the rule is evaluated every 15 s at its group's own phase, on the latest
  stored sample;
- the alert is pending from the first evaluation that sees the condition and
  fires at the first evaluation at least ``for:`` later (``startsAt`` is that
  firing evaluation, as Prometheus sends ``FiredAt``); it resolves at the first
  evaluation that sees the condition false (``endsAt``);
- a condition shorter than the scrape gap may never be seen; one shorter than
  ``for:`` never fires. Both happen, as they do in reality.

Two conditions on the same series that overlap (or follow each other with no
false sample between them) are one episode, attributed to the earlier one.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from benchmarks.storms.rules import EVALUATION_INTERVAL, RuleSpec

# Seconds; per job in prometheus/prometheus.yml (global 15 s, the exporter's
# multi-target jobs 60 s). probe_http/probe_tcp follow probe_icmp's default.
SCRAPE_INTERVALS: Mapping[str, float] = {
    "snmp": 60.0,
    "firewall": 60.0,
    "winrm": 60.0,
    "probe_icmp": 15.0,
    "probe_http": 15.0,
    "probe_tcp": 15.0,
    "scout-exporter": 15.0,
}
DEFAULT_SCRAPE_INTERVAL = 15.0
EVALUATION = EVALUATION_INTERVAL.total_seconds()


@dataclass(frozen=True, slots=True)
class Condition:
    """A rule's expression true for one series from ``start`` to ``end`` (seconds after T0).

    ``labels`` are the series' labels (target labels plus e.g. ifName); the
    rule's own labels and ``alertname`` are added by :func:`evaluate`. ``end``
    None: still true when the storm ends. ``incident``, ``element`` and
    ``root`` are the ground truth the episode inherits.
    """

    rule: str
    labels: Mapping[str, str]
    start: float
    end: float | None
    incident: str
    element: str
    root: bool


@dataclass(frozen=True, slots=True)
class Episode:
    """One firing of one alert: what Prometheus sends, and the truth behind it."""

    labels: Mapping[str, str]
    fingerprint: str
    fired_at: float
    resolved_at: float | None
    incident: str
    element: str
    root: bool


def fingerprint(labels: Mapping[str, str]) -> str:
    """16 hex digits over the sorted label set, like Alertmanager's fingerprint."""
    text = "\xff".join(f"{name}\xfe{value}" for name, value in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _next_on_grid(t: float, phase: float, step: float) -> float:
    """The first grid point ``phase + k * step`` at or after ``t``."""
    return phase + math.ceil((t - phase) / step - 1e-9) * step


def observed_spans(
    spans: Iterable[tuple[float, float]],
    scrape_phase: float,
    scrape_interval: float,
    eval_phase: float,
    lag: float,
) -> list[tuple[float, float, int]]:
    """The evaluation-tick intervals during which the rule sees the condition true.

    ``spans`` are sorted, non-overlapping ``[start, end)`` in the world (``end``
    may be ``inf``). A sample at ``s`` is stored at ``s + lag``. Each interval
    comes with the index of the first span it saw: spans with no false sample
    between them are one interval.
    """
    seen: list[tuple[float, float, int]] = []
    for index, (start, end) in enumerate(spans):
        first_true = _next_on_grid(start, scrape_phase, scrape_interval)
        first_false = _next_on_grid(end, scrape_phase, scrape_interval) if end != math.inf else end
        if first_true >= first_false:
            continue  # fell between two scrapes
        begin = _next_on_grid(first_true + lag, eval_phase, EVALUATION)
        stop = (
            _next_on_grid(first_false + lag, eval_phase, EVALUATION)
            if first_false != math.inf
            else math.inf
        )
        if seen and begin <= seen[-1][1]:
            seen[-1] = (seen[-1][0], max(seen[-1][1], stop), seen[-1][2])
        else:
            seen.append((begin, stop, index))
    return seen


def evaluate(
    conditions: Iterable[Condition], rules: Mapping[str, RuleSpec], rng: random.Random
) -> list[Episode]:
    """Alert episodes for ``conditions`` under ``rules``, on jittered grids."""
    by_series: dict[tuple[str, tuple[tuple[str, str], ...]], list[Condition]] = {}
    for condition in conditions:
        key = (condition.rule, tuple(sorted(condition.labels.items())))
        by_series.setdefault(key, []).append(condition)
    scrape_phases: dict[tuple[str, str], float] = {}
    eval_phases: dict[str, float] = {}
    episodes: list[Episode] = []
    for (rule_name, _), found in sorted(by_series.items()):
        rule = rules[rule_name]
        first = found[0]
        job = first.labels.get("job", "")
        interval = SCRAPE_INTERVALS.get(job, DEFAULT_SCRAPE_INTERVAL)
        target = (job, first.labels.get("instance", ""))
        if target not in scrape_phases:
            scrape_phases[target] = rng.uniform(0, interval)
        if rule_name not in eval_phases:
            eval_phases[rule_name] = rng.uniform(0, EVALUATION)
        # A scrape of a device that does not answer lasts until its timeout.
        lag = rng.uniform(0.2, 3.0) + (rng.uniform(5, 25) if interval >= 60 else 0)
        merged = _merge(sorted(found, key=lambda c: c.start))
        labels = {"alertname": rule_name, **first.labels, **rule.labels}
        hold = rule.hold.total_seconds()
        spans = observed_spans(
            [span for span, _ in merged],
            scrape_phases[target],
            interval,
            eval_phases[rule_name],
            lag,
        )
        for active, stop, index in spans:
            cause = merged[index][1]
            fire = active + math.ceil(hold / EVALUATION - 1e-9) * EVALUATION
            if fire >= stop - 1e-6:
                continue
            episodes.append(
                Episode(
                    labels=labels,
                    fingerprint=fingerprint(labels),
                    fired_at=fire,
                    resolved_at=None if stop == math.inf else stop,
                    incident=cause.incident,
                    element=cause.element,
                    root=cause.root,
                )
            )
    episodes.sort(key=lambda e: (e.fired_at, e.fingerprint))
    return episodes


def _merge(found: list[Condition]) -> list[tuple[tuple[float, float], Condition]]:
    """Overlapping conditions on one series as one span, owned by the earliest."""
    merged: list[tuple[tuple[float, float], Condition]] = []
    for condition in found:
        end = math.inf if condition.end is None else condition.end
        if merged and condition.start <= merged[-1][0][1]:
            (start, last_end), owner = merged[-1]
            merged[-1] = ((start, max(last_end, end)), owner)
        else:
            merged.append(((condition.start, end), condition))
    return merged

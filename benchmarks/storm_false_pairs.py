"""Which alerts the correlator joins wrongly in the replayed storms, and by which rule.

A diagnostic beside :mod:`benchmarks.storm_replay`: each storm is folded as
that benchmark folds it (the topology correlator, co-firing learned from
``--history`` earlier storms), and every change that puts alerts of two
ground-truth incidents into one found incident is printed, once per pair of
true incidents: the storm, the alert that did it (alertname, instance, site,
port), the found incident's alert from the other true incident it was joined
to, and the rule that joined them:

- ``graph: <relation>``: the graph connected the alert to the incident
  (same element, a cause upstream, an effect below, a symptom behind the same
  parent), with the member that is so related;
- ``learned``: a co-firing edge learned from history;
- ``key``: the group-key fallback for symptoms the graph cannot place;
- ``claimed``: an outage claimed an incident of unplaced symptoms waiting for it;
- ``absorbed``: one alert connected two incidents and the older took the other.

The correlator is not told the truth; this script reads it to name the false
pairs only. Nothing is asserted.

Usage: python -m benchmarks.storm_false_pairs [--seeds N] [--first-seed N]
       [--scenario NAME ...] [--history N]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ai_sidecar.correlation import Correlator, Placement
from ai_sidecar.models import Alert
from benchmarks.storm_replay import learned_history, topology_correlator
from benchmarks.storms.alertmanager import at_time
from benchmarks.storms.scenarios import SCENARIOS, Storm, generate
from benchmarks.storms.scoring import _key, preset_config

_SHOWN = ("instance", "site", "ifName", "volume", "mountpoint", "name", "upstream", "via")


def describe(labels: Mapping[str, str]) -> str:
    shown = " ".join(f"{k}={labels[k]}" for k in _SHOWN if labels.get(k))
    return f"{labels.get('alertname', '?')} [{shown}]"


@dataclass(slots=True)
class _Trace:
    """What the correlator's join rules answered for the alert being placed."""

    learned: set[str]
    by_key: str | None
    claimed: set[str]
    late: set[str]


class TracingCorrelator:
    """Wraps a correlator's join rules to record which one joined each alert.

    Reads private methods on purpose: this is a diagnostic of their answers.
    """

    def __init__(self, correlator: Correlator) -> None:
        self.inner = correlator
        self.trace = _Trace(set(), None, set(), set())
        inner: Any = correlator
        learned, by_key, claimed, related = (
            inner._learned_related,
            inner._by_key,
            inner._claimed,
            inner._related,
        )

        def traced_learned(*args: Any) -> dict[str, bool]:
            found: dict[str, bool] = learned(*args)
            self.trace.learned |= set(found)
            return found

        def traced_by_key(*args: Any) -> Any:
            found = by_key(*args)
            self.trace.by_key = None if found is None else found.incident.id
            return found

        def traced_claimed(*args: Any) -> Any:
            found = claimed(*args)
            self.trace.claimed |= {t.incident.id for t in found}
            return found

        def traced_related(*args: Any) -> Any:
            found, late = related(*args)
            self.trace.late |= {t.incident.id for t in late}
            return found, late

        inner._learned_related = traced_learned
        inner._by_key = traced_by_key
        inner._claimed = traced_claimed
        inner._related = traced_related

    def apply(self, alert: Alert, now: Any) -> Any:
        self.trace = _Trace(set(), None, set(), set())
        return self.inner.apply(alert, now)

    def placement(self, incident_id: str, fingerprint: str) -> Placement | None:
        tracked = self.inner._tracked.get(incident_id)
        return None if tracked is None else tracked.placements.get(fingerprint)


def relation(mine: Placement, theirs: Placement | None) -> str:
    """How the graph relates two placements, as the join rules read it."""
    if theirs is None or mine.node is None or theirs.node is None:
        return "unplaced"
    if mine.node == theirs.node:
        return "same element"
    if theirs.node in mine.ancestors:
        return f"cause upstream ({theirs.node}, strength {mine.ancestors[theirs.node]})"
    if mine.node in theirs.ancestors:
        return f"effect below ({mine.node})"
    if mine.also is not None and mine.also in theirs.ancestors:
        return f"unknown port of {mine.also}"
    if set(mine.parents) & set(theirs.parents):
        return f"behind the same parent ({sorted(set(mine.parents) & set(theirs.parents))})"
    return "other"


def diagnose(storm: Storm, correlator: TracingCorrelator) -> list[str]:
    """The false joins of one storm, one line per pair of true incidents."""
    truth_of = {_key(e.fingerprint, at_time(e.fired_at)): e.incident for e in storm.episodes}
    # Found incident -> fingerprint -> (true incident, labels) of its members.
    found: dict[str, dict[str, tuple[str, Mapping[str, str]]]] = {}
    reported: set[frozenset[str]] = set()
    lines = []
    # As benchmarks.storms.scoring.replay folds them, forgetting included.
    event_time = datetime.min.replace(tzinfo=at_time(0.0).tzinfo)
    for delivery in storm.deliveries:
        now = at_time(delivery.at)
        for alert in delivery.alerts:
            event_time = max(event_time, alert.ends_at or alert.starts_at)
            truth = truth_of.get(_key(alert.fingerprint, alert.starts_at))
            change = correlator.apply(alert, now)
            if change is None:
                continue
            trace = correlator.trace
            incident = change.incident
            members = found.setdefault(incident.id, {})
            before = {t for t, _ in members.values()}
            sources: dict[str, str] = {}
            for gone in change.absorbed:
                why = (
                    "claimed"
                    if gone.id in trace.claimed
                    else "late (resolved effect)"
                    if gone.id in trace.late
                    else "absorbed"
                )
                for fp, (t, labels) in found.pop(gone.id, {}).items():
                    members.setdefault(fp, (t, labels))
                    sources.setdefault(t, why)
            if truth is not None and change.kind in ("created", "joined"):
                members[alert.fingerprint] = (truth, alert.labels)
                if change.kind == "joined" and truth not in before:
                    if incident.id in trace.learned:
                        why = "learned"
                    elif trace.by_key == incident.id:
                        why = "key"
                    else:
                        why = "graph"
                    sources.setdefault(truth, why)
            for new, why in sources.items():
                for old in before - {new}:
                    pair = frozenset((old, new))
                    if pair in reported:
                        continue
                    reported.add(pair)
                    lines.append(_line(storm, correlator, incident.id, members, old, new, why))
        event_time = min(event_time, now)
        correlator.inner.forget_resolved_before(event_time - correlator.inner._config.flap_window)
    return lines


def _line(
    storm: Storm,
    correlator: TracingCorrelator,
    incident_id: str,
    members: Mapping[str, tuple[str, Mapping[str, str]]],
    old: str,
    new: str,
    why: str,
) -> str:
    def first(truth: str) -> tuple[str, Mapping[str, str]]:
        return next((fp, labels) for fp, (t, labels) in members.items() if t == truth)

    new_fp, new_labels = first(new)
    old_fp, old_labels = first(old)
    if why == "graph":
        mine = correlator.placement(incident_id, new_fp)
        theirs = correlator.placement(incident_id, old_fp)
        why = f"graph: {relation(mine, theirs) if mine else 'unplaced'}"
    truths = storm.incidents
    return (
        f"{storm.scenario} seed {storm.seed}: {truths[new].description!r} + "
        f"{truths[old].description!r}\n"
        f"    {describe(new_labels)} joined {describe(old_labels)}: {why}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--history", type=int, default=5)
    parser.add_argument("--preset", default="network", choices=("network", "firewall", "windows"))
    args = parser.parse_args()
    config = preset_config(args.preset)
    total = 0
    for name in args.scenario or list(SCENARIOS):
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            storm = generate(name, seed)
            factory = topology_correlator
            if args.history:
                factory = partial(
                    topology_correlator,
                    cofiring=learned_history(name, seed, args.history, config),
                )
            correlator = TracingCorrelator(factory(config, storm.estate.observed()))
            for line in diagnose(storm, correlator):
                total += 1
                print(line)
    print(f"\n{total} wrong joins of two true incidents")


if __name__ == "__main__":
    main()

"""Replaying a storm through a correlator and scoring its incidents against the truth.

The unit scored is the alert *episode* (fingerprint and ``startsAt``) that
reached the sidecar: repeats and HA copies of it are the same unit, and a port
that flaps five times is five units. After the replay, each found incident
claims the episodes of each member between its ``first_starts_at`` and
``starts_at`` (a flapping member holds several); an episode nobody claims is an
incident of its own. Then, per storm:

- **pairwise precision / recall / F1** of the partition: over all pairs of
  episodes, a pair is a true positive when truth and correlator both put it in
  one incident (precision 1.0 when the correlator joins nothing, recall 1.0
  when the truth has no pair);
- **root-cause accuracy**: per true incident whose root element raised an
  alert, the found incident holding its earliest root alert must name as root
  cause a member that is a root alert of that same true incident;
- **background merged**: episodes of unrelated background faults that share a
  found incident with another true incident's episodes;
- **compression**: episodes per found incident (and per true incident).

The correlator is reached through :class:`CorrelatorUnderTest`, built by a
:data:`CorrelatorFactory` from the shipped config and the observed topology,
so a topology-aware correlator is measured by the same code as today's.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from ai_sidecar.config import CorrelationConfig, parse_config
from ai_sidecar.correlation import Change, Correlator
from ai_sidecar.models import Alert, Incident
from benchmarks.storms.alertmanager import T0, at_time
from benchmarks.storms.estate import ObservedTopology
from benchmarks.storms.scenarios import Storm


class CorrelatorUnderTest(Protocol):
    """What the scorer needs of a correlator: fold alerts, then look incidents up."""

    def apply(self, alert: Alert, now: datetime) -> Change | None:
        """Fold one alert in, as the worker does; ``now`` is the delivery time."""
        ...

    def incident(self, id_: str) -> Incident | None:
        """The incident's latest value; None if it no longer exists (forgotten, merged)."""
        ...

    def forget_resolved_before(self, cutoff: datetime) -> None:
        """Drop incidents resolved before ``cutoff``, as the worker does after each batch."""
        ...


CorrelatorFactory = Callable[[CorrelationConfig, ObservedTopology], CorrelatorUnderTest]


def todays_correlator(config: CorrelationConfig, topology: ObservedTopology) -> Correlator:
    """The shipped correlator; it has no use for the topology."""
    del topology
    return Correlator(config)


def in_language(factory: CorrelatorFactory, language: str) -> CorrelatorFactory:
    """``factory``'s correlator, writing its root-cause reasons in ``language``.

    The language changes words only: a replay in French must find the same
    incidents and root causes as in English, which the benchmark and the
    tests check by scoring both.
    """

    def build(config: CorrelationConfig, topology: ObservedTopology) -> CorrelatorUnderTest:
        correlator = factory(config, topology)
        if isinstance(correlator, Correlator):
            correlator.language = language
        return correlator

    return build


def preset_config(preset: str = "network") -> CorrelationConfig:
    """A shipped preset through the real config parser, as a user would write it."""
    return parse_config(f"correlation:\n  preset: {preset}\n", f"{preset}.yml").correlation


# -- pairwise partition metrics ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PairScores:
    """Pair counts of two partitions of the same units, and what they give."""

    true_positive: int
    false_positive: int
    false_negative: int

    @property
    def precision(self) -> float:
        joined = self.true_positive + self.false_positive
        return 1.0 if joined == 0 else self.true_positive / joined

    @property
    def recall(self) -> float:
        expected = self.true_positive + self.false_negative
        return 1.0 if expected == 0 else self.true_positive / expected

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def pairwise(truth: Sequence[Hashable], found: Sequence[Hashable]) -> PairScores:
    """Pairwise scores of ``found`` against ``truth`` (cluster labels, one per unit)."""
    if len(truth) != len(found):
        raise ValueError("both partitions must label the same units")
    cells: dict[tuple[Hashable, Hashable], int] = {}
    true_sizes: dict[Hashable, int] = {}
    found_sizes: dict[Hashable, int] = {}
    for t, f in zip(truth, found, strict=True):
        cells[(t, f)] = cells.get((t, f), 0) + 1
        true_sizes[t] = true_sizes.get(t, 0) + 1
        found_sizes[f] = found_sizes.get(f, 0) + 1
    together = sum(_pairs(n) for n in cells.values())
    return PairScores(
        together,
        sum(_pairs(n) for n in found_sizes.values()) - together,
        sum(_pairs(n) for n in true_sizes.values()) - together,
    )


# -- replay and score ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Replay:
    """The correlator's final incidents after folding every delivery, and the time it took."""

    incidents: Mapping[str, Incident]
    alerts: int
    cpu_seconds: float


def replay(
    storm: Storm,
    config: CorrelationConfig,
    factory: CorrelatorFactory = todays_correlator,
    *,
    settled: bool = False,
) -> Replay:
    """Fold every delivered alert, in delivery order, with the delivery time as ``now``.

    As the worker does, after each delivery the correlator forgets incidents
    that resolved more than ``flap_window`` before the latest alert time seen
    (no later alert can flap into them or join them), and the final incidents
    are the last value each change returned, as the store keeps them: a
    forgotten incident keeps its members, an absorbed one is gone.

    ``settled``: collect garbage before the clock starts, so the time does not
    include a full collection owed to generating the storm and building the
    graph just before (about a fifth of a 10,000-alert fold otherwise; the
    worker builds its graph on a schedule, not before every storm).
    """
    correlator = factory(config, storm.estate.observed())
    if settled:
        gc.collect()
    final: dict[str, Incident] = {}
    alerts = 0
    event_time = datetime.min.replace(tzinfo=T0.tzinfo)
    started = time.process_time()
    for delivery in storm.deliveries:
        now = at_time(delivery.at)
        for alert in delivery.alerts:
            change = correlator.apply(alert, now)
            alerts += 1
            event_time = max(event_time, alert.ends_at or alert.starts_at)
            if change is not None:
                final[change.incident.id] = change.incident
                for gone in change.absorbed:
                    final.pop(gone.id, None)
        event_time = min(event_time, now)
        correlator.forget_resolved_before(event_time - config.flap_window)
    spent = time.process_time() - started
    return Replay(final, alerts, spent)


def shifted(incident: Incident, by: timedelta) -> Incident:
    """``incident`` moved in time by ``by``: an earlier storm placed on an earlier day."""
    members = {
        fp: replace(
            member,
            starts_at=member.starts_at + by,
            first_starts_at=member.first_starts_at + by,
            ends_at=None if member.ends_at is None else member.ends_at + by,
        )
        for fp, member in incident.members.items()
    }
    return replace(
        incident,
        members=members,
        created_at=incident.created_at + by,
        updated_at=incident.updated_at + by,
        resolved_at=None if incident.resolved_at is None else incident.resolved_at + by,
    )


@dataclass(frozen=True, slots=True)
class StormScore:
    """One storm's figures; see the module docstring for each."""

    scenario: str
    seed: int
    alerts: int
    incidents_expected: int
    incidents_found: int
    pairs: PairScores
    root_correct: int
    root_scored: int
    background_alerts: int
    background_merged: int
    # The same, for the scenario's own incidents only (background ones are
    # mostly single alerts, whose root cause cannot be wrong).
    main_root_correct: int = 0
    main_root_scored: int = 0

    @property
    def compression(self) -> float:
        return self.alerts / self.incidents_found if self.incidents_found else 0.0

    @property
    def expected_compression(self) -> float:
        return self.alerts / self.incidents_expected if self.incidents_expected else 0.0


def _key(fingerprint: str, starts_at: datetime) -> tuple[str, int]:
    return fingerprint, round((starts_at - T0).total_seconds() * 1000)


def score(storm: Storm, found: Mapping[str, Incident]) -> StormScore:
    """Score the correlator's final incidents ``found`` against ``storm``'s truth."""
    by_key = {_key(e.fingerprint, at_time(e.fired_at)): e for e in storm.episodes}
    delivered: dict[tuple[str, int], None] = {}
    for delivery in storm.deliveries:
        for alert in delivery.alerts:
            key = _key(alert.fingerprint, alert.starts_at)
            if key in by_key:
                delivered[key] = None
    units = list(delivered)
    episodes_of: dict[str, list[tuple[str, int]]] = {}
    for unit in units:
        episodes_of.setdefault(unit[0], []).append(unit)
    owner: dict[tuple[str, int], str] = {}
    for incident in sorted(found.values(), key=lambda i: (i.created_at, i.id)):
        for member in incident.members.values():
            low = _key(member.fingerprint, member.first_starts_at)[1]
            high = _key(member.fingerprint, member.starts_at)[1]
            for unit in episodes_of.get(member.fingerprint, ()):
                if low <= unit[1] <= high:
                    owner[unit] = incident.id
    truth = [by_key[u].incident for u in units]
    clusters = [owner.get(u, f"unplaced:{u[0]}:{u[1]}") for u in units]
    pairs = pairwise(truth, clusters)

    members: dict[str, list[tuple[str, int]]] = {}
    for unit, cluster in zip(units, clusters, strict=True):
        members.setdefault(cluster, []).append(unit)
    correct = scored = main_correct = main_scored = 0
    for incident_id, truth_incident in storm.incidents.items():
        roots = [u for u in units if by_key[u].incident == incident_id and by_key[u].root]
        if not roots:
            continue  # its root element raised no alert the sidecar saw
        first = min(roots, key=lambda u: (by_key[u].fired_at, u))
        placed = owner.get(first)
        right = placed is not None and any(
            u[0] == found[placed].root_cause
            and by_key[u].incident == incident_id
            and by_key[u].root
            for u in members[placed]
        )
        scored += 1
        correct += right
        if not truth_incident.background:
            main_scored += 1
            main_correct += right
    background = [u for u in units if storm.incidents[by_key[u].incident].background]
    merged = sum(
        1
        for u in background
        if u in owner and any(by_key[o].incident != by_key[u].incident for o in members[owner[u]])
    )
    return StormScore(
        scenario=storm.scenario,
        seed=storm.seed,
        alerts=len(units),
        incidents_expected=len({by_key[u].incident for u in units}),
        incidents_found=len(set(clusters)),
        pairs=pairs,
        root_correct=correct,
        root_scored=scored,
        background_alerts=len(background),
        background_merged=merged,
        main_root_correct=main_correct,
        main_root_scored=main_scored,
    )


def evaluate_storm(
    storm: Storm, config: CorrelationConfig, factory: CorrelatorFactory = todays_correlator
) -> StormScore:
    return score(storm, replay(storm, config, factory).incidents)


# -- aggregation -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Summary:
    """Several storms' figures: per-storm means of the pairwise ones, sums of the counts."""

    storms: int
    alerts: int
    incidents_expected: int
    incidents_found: int
    precision: float
    recall: float
    f1: float
    root_correct: int
    root_scored: int
    background_alerts: int
    background_merged: int
    main_root_correct: int
    main_root_scored: int

    @property
    def root_accuracy(self) -> float:
        return self.root_correct / self.root_scored if self.root_scored else 1.0

    @property
    def main_root_accuracy(self) -> float:
        return self.main_root_correct / self.main_root_scored if self.main_root_scored else 1.0

    @property
    def compression(self) -> float:
        return self.alerts / self.incidents_found if self.incidents_found else 0.0


def summarise(scores: Iterable[StormScore]) -> Summary:
    found = list(scores)
    n = len(found) or 1
    return Summary(
        storms=len(found),
        alerts=sum(s.alerts for s in found),
        incidents_expected=sum(s.incidents_expected for s in found),
        incidents_found=sum(s.incidents_found for s in found),
        precision=sum(s.pairs.precision for s in found) / n,
        recall=sum(s.pairs.recall for s in found) / n,
        f1=sum(s.pairs.f1 for s in found) / n,
        root_correct=sum(s.root_correct for s in found),
        root_scored=sum(s.root_scored for s in found),
        background_alerts=sum(s.background_alerts for s in found),
        background_merged=sum(s.background_merged for s in found),
        main_root_correct=sum(s.main_root_correct for s in found),
        main_root_scored=sum(s.main_root_scored for s in found),
    )

"""Learned co-firing edges: alerts that keep firing together gain a statistical dependency.

No source tells the sidecar that the applications checked by name resolve
through one DNS server, or that a probe always fails with a given port. What
it does see is history: alert episodes (fingerprint and ``startsAt``) in the
incidents it stored. :func:`learn` counts, over that history, how often two
alerts started within ``window`` of each other, and keeps an edge between them
when:

- they did so on at least ``min_together`` separate occasions (one
  coincidence, or two, never makes an edge);
- those occasions are at least ``min_share`` of the episodes of the alert that
  fired more often (an alert that fires all the time co-fires with everything
  by chance, and gains no edge);
- neither episode fell in a burst of more than ``max_burst`` alerts within the
  window: a storm that large is a topology failure the graph explains, and
  counting its pairs would cost quadratic time and teach nothing.

An edge is directed when one side started first in at least ``lead_share`` of
the occasions: that side is the likely cause (it *explains* the other when
ranking a root cause), otherwise the two only join. The result is a value
(:class:`CoFiring`), rebuilt from the store's incidents at start and on a
schedule, so it survives restarts without a table of its own, and forgets what
has aged out of the history.

Pairs are counted over every stored episode, whichever incident holds it: the
pairs that matter most are the ones correlation kept apart, and once an edge
joins them they still count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ai_sidecar.config import CoFiringConfig
from ai_sidecar.models import Incident


@dataclass(frozen=True, slots=True)
class Partner:
    """One learned edge as seen from one alert: the other alert, and the evidence."""

    fingerprint: str
    # How it is named in reasons: ``ProbeFailed on dns-1:53``.
    what: str
    # Occasions both started within the window, and the larger of their episode counts.
    together: int
    episodes: int
    # The partner started first on most occasions: it is the likely cause.
    leads: bool
    # This alert started first on most occasions: the partner is the likely effect.
    follows: bool


@dataclass(frozen=True, slots=True)
class CoFiring:
    """Learned edges by fingerprint (both directions), and how they were learned."""

    partners: Mapping[str, tuple[Partner, ...]] = field(default_factory=dict)
    window: timedelta = timedelta(minutes=15)
    episodes: int = 0

    @property
    def edges(self) -> int:
        """Distinct learned pairs."""
        return sum(len(found) for found in self.partners.values()) // 2

    def of(self, fingerprint: str) -> tuple[Partner, ...]:
        return self.partners.get(fingerprint, ())


NO_COFIRING = CoFiring()


@dataclass(frozen=True, slots=True)
class _Episode:
    start: datetime
    fingerprint: str


def episodes_of(incidents: Iterable[Incident]) -> tuple[list[_Episode], dict[str, str]]:
    """Each stored episode once (an absorbed incident repeats its members), and names."""
    seen: dict[tuple[str, datetime], None] = {}
    names: dict[str, str] = {}
    for incident in incidents:
        for member in incident.members.values():
            names.setdefault(member.fingerprint, member.what)
            for start in {member.first_starts_at, member.starts_at}:
                seen[(member.fingerprint, start)] = None
    found = [_Episode(start, fingerprint) for fingerprint, start in seen]
    found.sort(key=lambda e: (e.start, e.fingerprint))
    return found, names


def learn_with(config: CoFiringConfig, incidents: Iterable[Incident]) -> CoFiring:
    """:func:`learn` with the ``correlation.cofiring`` settings."""
    if not config.enabled:
        return NO_COFIRING
    return learn(
        incidents,
        window=config.window,
        min_together=config.min_together,
        min_share=config.min_share,
    )


def learn(
    incidents: Iterable[Incident],
    *,
    window: timedelta = timedelta(minutes=15),
    min_together: int = 3,
    min_share: float = 0.5,
    lead_share: float = 2 / 3,
    max_burst: int = 200,
) -> CoFiring:
    """The co-firing edges in ``incidents``' history; see the module docstring."""
    if min_together < 2:
        raise ValueError("min_together must be at least 2: one coincidence is not an edge")
    found, names = episodes_of(incidents)
    counts: dict[str, int] = {}
    for episode in found:
        counts[episode.fingerprint] = counts.get(episode.fingerprint, 0) + 1
    # How many episodes start within the window around each (two pointers).
    crowd = [0] * len(found)
    low = high = 0
    for index, episode in enumerate(found):
        while found[low].start < episode.start - window:
            low += 1
        while high < len(found) and found[high].start <= episode.start + window:
            high += 1
        crowd[index] = high - low - 1
    # (a, b) with a < b: pairings of an episode with the next of the other
    # alert, and how often each started first.
    together: dict[tuple[str, str], list[int]] = {}
    # (a, b) -> the episodes (indices) of either that had the other near: a
    # flapping alert pairs each of its episodes with one of the other's, and
    # one occasion must not count as two (see _occasions).
    paired_episodes: dict[tuple[str, str], list[int]] = {}
    for index, episode in enumerate(found):
        if crowd[index] > max_burst:
            continue
        mine = episode.fingerprint
        paired: set[str] = set()
        for other in range(index + 1, len(found)):
            later = found[other]
            if later.start - episode.start > window:
                break
            theirs = later.fingerprint
            if theirs == mine or theirs in paired or crowd[other] > max_burst:
                continue
            paired.add(theirs)
            pair = (mine, theirs) if mine < theirs else (theirs, mine)
            tally = together.get(pair)
            if tally is None:
                tally = together[pair] = [0, 0, 0]
                paired_episodes[pair] = []
            tally[0] += 1
            paired_episodes[pair] += (index, other)
            if later.start > episode.start:
                tally[1 if pair[0] == mine else 2] += 1
    partners: dict[str, list[Partner]] = {}
    for (a, b), (pairings, a_first, b_first) in together.items():
        if pairings < min_together:
            continue  # each side's episodes number at most the pairings
        most = max(counts[a], counts[b])
        times = _occasions(found, paired_episodes[(a, b)], a)
        if times < min_together or times < min_share * most:
            continue
        a_leads = a_first >= lead_share * pairings
        b_leads = b_first >= lead_share * pairings
        partners.setdefault(a, []).append(Partner(b, names[b], times, most, b_leads, a_leads))
        partners.setdefault(b, []).append(Partner(a, names[a], times, most, a_leads, b_leads))
    return CoFiring(
        {fp: tuple(sorted(edges, key=lambda p: p.fingerprint)) for fp, edges in partners.items()},
        window,
        len(found),
    )


def _occasions(found: list[_Episode], indices: list[int], a: str) -> int:
    """Occasions two alerts fired together: the fewer of either's episodes with the other near."""
    episodes = set(indices)
    of_a = sum(1 for index in episodes if found[index].fingerprint == a)
    return min(of_a, len(episodes) - of_a)

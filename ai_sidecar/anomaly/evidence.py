"""Anomaly evidence for incidents, read back from the scores Prometheus scraped.

The scoring loop exports ``scout_anomaly_score`` (and its band,
``scout_anomaly_lower`` / ``scout_anomaly_upper``) per series on the sidecar's
``/metrics``, labelled with ``signal`` and the series' own labels; Prometheus
scrapes them with ``honor_labels``. Reading them back through PromQL, rather
than from the scoring loop's memory, works in the worker process and on any
replica, and sees the scores as they were during the incident.

For an incident, one instant query asks for every series on its members'
instances (the root cause's first, at most :data:`MAX_INSTANCES`):

- the highest score over the incident's span (from :data:`LEAD` before its
  earliest alert to its resolution, or now; at most :data:`MAX_SPAN`), and the
  latest score, leaving out points where the series was still warming up;
- the last lower and upper bound over that span, for the band text.

A series supports a member when they share the instance and agree on every
other label both carry (``job``, ``ifName``, ``mountpoint``, ``signal``...): an
``InterfaceDown`` on ``ifName="Gi0/1"`` is supported by that interface's
throughput, not by its neighbour's; a ``HostDown`` with no interface label by
every series of the host. Scores below :data:`EVIDENCE_FLOOR` are left out, and
the strongest :data:`MAX_EVIDENCE` are kept.

The worker asks on every change of an incident and once a minute for open
ones, so the cost is bounded: answers are cached for :data:`CACHE_TTL`, at most
:data:`QUERY_RATE` queries a second are made (a storm's other incidents keep
their last evidence until the next round: the one this source found, or the
one the incident was saved with), and each is time-boxed. A slow
Prometheus that still answers within the box costs the worker at most
:data:`WAIT_SHARE` of its time (after a burst of :data:`WAIT_BURST` seconds):
queries wait for their turn, as over the query budget. A failing
Prometheus degrades to the last evidence known (or none): the outage is logged
when it starts and when it ends, counted in
``scout_sidecar_anomaly_evidence_queries_total{outcome="failed"}``, and the
engine is left alone for a pause that doubles from :data:`RETRY_FIRST` to
:data:`RETRY_MAX`. A query the engine refuses (HTTP 400 or 422: a limit on
series or samples) is that incident's problem: it keeps its last evidence for
:data:`CACHE_TTL`, and the others are asked as usual.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, TypeVar

from babel.numbers import format_decimal
from prometheus_client import CollectorRegistry, Counter

from ai_sidecar.clock import utc_now
from ai_sidecar.i18n import SOURCE_LANGUAGE, Translator, translator
from ai_sidecar.models import AnomalyEvidence, Incident, Member
from ai_sidecar.promql import BadQueryError, PromQLClient, PromQLError, Sample

log = logging.getLogger("ai_sidecar.anomaly.evidence")

SCORE = "scout_anomaly_score"
LOWER = "scout_anomaly_lower"
UPPER = "scout_anomaly_upper"
WARMING = "scout_anomaly_warming"
# Anomalies often show before the alert: rules wait out their `for:`.
LEAD = timedelta(minutes=10)
MIN_SPAN = timedelta(minutes=5)
MAX_SPAN = timedelta(hours=6)
# The resolution of the warm-up filter over the span (the default scoring interval).
STEP = timedelta(minutes=1)
MAX_INSTANCES = 50
MAX_EVIDENCE = 10
# The priority table's lowest anomaly row: a weaker score is no evidence.
EVIDENCE_FLOOR = 0.5
TIME_BOX = timedelta(seconds=3)
CACHE_TTL = 60.0
CACHE_SIZE = 4096
QUERY_RATE = 10.0
QUERY_BURST = 50.0
# Seconds the worker may spend waiting for answers, per second, and at once:
# one change of a storm's incidents asks one query after another.
WAIT_SHARE = 0.1
WAIT_BURST = 5.0
RETRY_FIRST = 10.0
RETRY_MAX = 300.0
# Labels that name the element of a device a series is about, in the order a
# subject prefers them.
_ELEMENT_LABELS = ("ifName", "interface", "ifDescr", "mountpoint", "ifIndex")
# Words a signal's name spells in lower case that people write in capitals.
_ACRONYMS = frozenset(
    [
        "bgp",
        "cpu",
        "dns",
        "http",
        "icmp",
        "ip",
        "isp",
        "lan",
        "rtt",
        "snmp",
        "tcp",
        "udp",
        "vpn",
        "wan",
    ]
)
# Statuses that refuse one query (its syntax, its cost), not the engine's service.
_QUERY_FAULTS = (400, 422)
# Which row of the answer a sample is: the label the query adds to tell them apart.
_KIND = "scout_evidence"
Outcome = Literal["answered", "failed", "skipped"]
Unit = Literal["bit/s", "s", "ratio", ""]
_UNIT_WORDS: tuple[tuple[re.Pattern[str], Unit], ...] = (
    (re.compile(r"bits|throughput|bandwidth"), "bit/s"),
    (re.compile(r"rtt|latency|jitter|seconds|duration"), "s"),
    (re.compile(r"ratio|utili[sz]ation|loss|cpu|memory|filesystem|usage|_use"), "ratio"),
)
_SI = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class EvidenceMetrics:
    """How the evidence queries went, by outcome: answered, failed, skipped."""

    queries: Counter


def create_evidence_metrics(registry: CollectorRegistry) -> EvidenceMetrics:
    return EvidenceMetrics(
        queries=Counter(
            "scout_sidecar_anomaly_evidence_queries",
            "Queries for an incident's anomaly scores, by outcome: answered, failed "
            "(the incident gets its last evidence, or none) or skipped (Prometheus "
            "failed moments ago, or the query budget is spent).",
            ["outcome"],
            registry=registry,
        )
    )


@dataclass(frozen=True, slots=True)
class EvidenceQuery:
    """An incident's evidence query, where it is evaluated, and what its answer depends on.

    ``key`` leaves out the end of an open incident's span, which moves with the
    clock: asked again within CACHE_TTL, such an incident gets the same answer.
    """

    query: str
    at: datetime
    members: tuple[Member, ...]
    key: tuple[object, ...]


class ScrapedAnomalyEvidence:
    """:class:`~ai_sidecar.priority.AnomalyEvidenceSource` over the scraped scores.

    ``clock`` gives the wall time incidents are measured against; ``monotonic``
    paces the cache, the query budget and the pauses after failures.
    """

    def __init__(
        self,
        client: PromQLClient,
        *,
        time_box: timedelta = TIME_BOX,
        floor: float = EVIDENCE_FLOOR,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._time_box = time_box
        self._floor = floor
        self._clock = clock
        self._monotonic = monotonic
        self._metrics: EvidenceMetrics | None = None
        # (incident id, *window key) -> (when answered, evidence); least recent first.
        self._answers: OrderedDict[tuple[object, ...], tuple[float, tuple[AnomalyEvidence, ...]]]
        self._answers = OrderedDict()
        # Incident id -> its latest evidence, served while no query can be made.
        self._last: OrderedDict[str, tuple[AnomalyEvidence, ...]] = OrderedDict()
        self._tokens = QUERY_BURST
        self._wait_credit = WAIT_BURST
        self._budget_at = monotonic()
        self._failures = 0
        self._paused_until = 0.0

    def observe(self, metrics: EvidenceMetrics) -> None:
        """Count queries on ``metrics`` from now on."""
        self._metrics = metrics

    async def evidence(self, incident: Incident) -> tuple[AnomalyEvidence, ...]:
        window = evidence_window(incident, self._clock())
        if window is None:
            return ()
        key = (incident.id, *window.key)
        now = self._monotonic()
        cached = self._answers.get(key)
        if cached is not None and now - cached[0] < CACHE_TTL:
            return cached[1]
        if now < self._paused_until or not self._take_turn(now):
            self._count("skipped")
            return self._last_known(incident)
        try:
            samples = await self._client.instant(window.query, window.at, time_box=self._time_box)
        except PromQLError as exc:
            if isinstance(exc, BadQueryError) and exc.status in _QUERY_FAULTS:
                self._refused(incident, key, exc)
            else:
                self._failed(exc)
            return self._last_known(incident)
        finally:
            self._wait_credit -= self._monotonic() - now
        self._recovered()
        found = match_evidence(samples, window.members, self._floor)
        _remember(self._answers, key, (self._monotonic(), found))
        _remember(self._last, incident.id, found)
        return found

    def _last_known(self, incident: Incident) -> tuple[AnomalyEvidence, ...]:
        """The latest evidence this source found, else what the incident was saved with.

        After a restart, or on the replica that took the worker over, the saved
        evidence is the last known: an outage must not strip it.
        """
        return self._last.get(incident.id, incident.anomaly_evidence)

    def _take_turn(self, now: float) -> bool:
        """Whether both budgets, queries and seconds waited, allow a query now."""
        elapsed = now - self._budget_at
        self._budget_at = now
        self._tokens = min(QUERY_BURST, self._tokens + elapsed * QUERY_RATE)
        self._wait_credit = min(WAIT_BURST, self._wait_credit + elapsed * WAIT_SHARE)
        if self._tokens < 1.0 or self._wait_credit <= 0.0:
            return False
        self._tokens -= 1.0
        return True

    def _refused(self, incident: Incident, key: tuple[object, ...], exc: BadQueryError) -> None:
        """This incident's query was refused (too many series for the engine's limits...).

        The engine is fine: other incidents go on being asked, and this one
        keeps its last evidence until its answer would have expired anyway.
        """
        self._count("failed")
        log.warning(
            "anomaly evidence query refused; the incident keeps its last evidence",
            extra={"incident": incident.id, "error": str(exc)},
        )
        _remember(self._answers, key, (self._monotonic(), self._last_known(incident)))

    def _failed(self, exc: PromQLError) -> None:
        self._count("failed")
        self._failures += 1
        pause = min(RETRY_MAX, RETRY_FIRST * (1 << min(self._failures - 1, 16)))
        self._paused_until = self._monotonic() + pause
        if self._failures == 1:
            log.warning(
                "anomaly evidence unavailable; incidents keep their last evidence meanwhile",
                extra={"error": str(exc), "retry_in": pause},
            )

    def _recovered(self) -> None:
        self._count("answered")
        if self._failures:
            log.info("anomaly evidence available again", extra={"failures": self._failures})
        self._failures = 0
        self._paused_until = 0.0

    def _count(self, outcome: Outcome) -> None:
        if self._metrics is not None:
            self._metrics.queries.labels(outcome).inc()


def _remember(cache: OrderedDict[K, V], key: K, value: V) -> None:
    """Store ``key`` as the most recent entry, forgetting the oldest beyond CACHE_SIZE."""
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > CACHE_SIZE:
        cache.popitem(last=False)


def evidence_window(incident: Incident, now: datetime) -> EvidenceQuery | None:
    """The query for ``incident``'s evidence; None when no member names an instance."""
    members = sorted(
        (m for m in incident.members.values() if m.labels.get("instance")),
        key=lambda m: (
            m.fingerprint != incident.root_cause,
            m.status != "firing",
            m.first_starts_at,
        ),
    )
    instances = list(dict.fromkeys(m.labels["instance"] for m in members))[:MAX_INSTANCES]
    if not instances:
        return None
    chosen = tuple(m for m in members if m.labels["instance"] in instances)
    start = min(m.first_starts_at for m in chosen) - LEAD
    resolved = incident.resolved_at if incident.status == "resolved" else None
    end = now if resolved is None else min(resolved, now)
    span = min(MAX_SPAN, max(MIN_SPAN, end - start))
    minutes = math.ceil(span.total_seconds() / 60)
    selector = f"{{instance=~{_alternatives(instances)}}}"
    step = int(STEP.total_seconds())
    trusted = f"{SCORE}{selector} unless {WARMING}{selector} == 1"
    query = " or ".join(
        (
            _tagged(f"max_over_time(({trusted})[{minutes}m:{step}s])", "score"),
            # The subquery's last point is on the minute: the latest score too.
            _tagged(trusted, "latest"),
            _tagged(f"last_over_time({LOWER}{selector}[{minutes}m])", "lower"),
            _tagged(f"last_over_time({UPPER}{selector}[{minutes}m])", "upper"),
        )
    )
    key = (tuple(m.fingerprint for m in chosen), start, resolved)
    return EvidenceQuery(query, end, chosen, key)


def _tagged(expr: str, kind: str) -> str:
    """``expr`` with a label saying which part of the answer its samples are."""
    return f'label_replace({expr}, "{_KIND}", "{kind}", "", "")'


def _alternatives(values: Iterable[str]) -> str:
    """A PromQL string holding an RE2 alternation that matches exactly ``values``.

    JSON's string escapes are a subset of PromQL's: a label value may hold a
    newline, which a PromQL string cannot hold raw. Characters beyond ASCII
    stay as they are (PromQL reads UTF-8; JSON's surrogate pairs it refuses).
    """
    return json.dumps("|".join(re.escape(value) for value in values), ensure_ascii=False)


def match_evidence(
    samples: Sequence[Sample], members: Sequence[Member], floor: float
) -> tuple[AnomalyEvidence, ...]:
    """Evidence from one answer: each matched series once, strongest first."""
    bands: dict[tuple[tuple[str, str], ...], dict[str, float]] = {}
    scores: dict[tuple[tuple[str, str], ...], tuple[dict[str, str], float]] = {}
    for sample in samples:
        labels = {k: v for k, v in sample.labels.items() if k not in ("__name__", _KIND)}
        kind, key, value = sample.labels.get(_KIND), _key(labels), sample.value
        if kind in ("score", "latest") and not math.isnan(value):
            if key not in scores or value > scores[key][1]:
                scores[key] = (labels, value)
        elif kind in ("lower", "upper") and math.isfinite(value):
            bands.setdefault(key, {})[kind] = value
    # Members by instance, in their order: a storm's incident has thousands of
    # members and its answer thousands of series; each series is only matched
    # against its own device's members, strongest first, until enough are found.
    on_instance: dict[str, list[Member]] = {}
    for m in members:
        on_instance.setdefault(m.labels.get("instance", ""), []).append(m)
    strongest = sorted(
        (
            (describe_series(labels), min(1.0, score), labels)
            for labels, score in scores.values()
            if score >= floor
        ),
        key=lambda c: (-c[1], c[0], sorted(c[2].items())),
    )
    found: list[AnomalyEvidence] = []
    for subject, score, labels in strongest:
        candidates = on_instance.get(labels.get("instance", ""), ())
        member = next((m for m in candidates if _supports(labels, m.labels)), None)
        if member is None:
            continue
        bound = bands.get(_key(labels), {})
        signal = labels.get("signal", "")
        band = None
        if "lower" in bound and "upper" in bound:
            band = format_band(signal, bound["lower"], bound["upper"])
        found.append(
            AnomalyEvidence(
                subject=subject, score=score, band=band, member=member.fingerprint, labels=labels
            )
        )
        if len(found) == MAX_EVIDENCE:
            break
    return tuple(found)


def _key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def _supports(series: Mapping[str, str], alert: Mapping[str, str]) -> bool:
    """Same instance, and every other label both carry agrees."""
    if series.get("instance") != alert.get("instance"):
        return False
    return all(alert[name] == value for name, value in series.items() if name in alert)


def _english() -> Translator:
    return translator(SOURCE_LANGUAGE, "analysis")


def signal_name(signal: str, t: Translator | None = None) -> str:
    """``wan_throughput`` -> ``WAN throughput``: how text names a signal."""
    words = [w.upper() if w in _ACRONYMS else w for w in re.split(r"[_\s]+", signal) if w]
    return " ".join(words) or (t or _english()).gettext("an unnamed signal")


def describe_series(labels: Mapping[str, str], t: Translator | None = None) -> str:
    """``WAN throughput of fw-1 wan0``: the signal, the device and the element.

    In ``t``'s language (English by default); the signal's words are its
    name's, as a label's value.
    """
    t = t or _english()
    where = labels.get("instance", "")
    element = next((labels[n] for n in _ELEMENT_LABELS if labels.get(n)), "")
    if element and element == labels.get("ifIndex"):
        element = f"ifIndex {element}"
    device = f"{where} {element}".strip()
    name = signal_name(labels.get("signal", ""), t)
    if not device:
        return name
    return t.gettext("{signal} of {device}").format(signal=name, device=device)


def evidence_subject(evidence: AnomalyEvidence, t: Translator) -> str:
    """What ``evidence`` is about in ``t``'s language: its subject is saved in English,
    and its series' labels say it again in another."""
    if t.is_source or not evidence.labels:
        return evidence.subject
    return describe_series(evidence.labels, t)


# A band as format_band writes it in English: two numbers, then the unit.
_SAVED_BAND = re.compile(r"(-?[0-9.]+(?:e[+-][0-9]+)?)(?:-| to )(-?[0-9.]+(?:e[+-][0-9]+)?)(.*)")


def evidence_band(evidence: AnomalyEvidence, t: Translator) -> str | None:
    """``evidence``'s band in ``t``'s language: it is saved in English (``1.5-3 Gbit/s``),
    and read again as its numbers and unit (fr: ``1,5-3 Gbit/s``)."""
    band = evidence.band
    if t.is_source or band is None:
        return band
    saved = _SAVED_BAND.fullmatch(band)
    if saved is None:
        return band
    lower, upper, unit = saved.groups()
    return _range(float(lower), float(upper), "\u00a0%" if unit == "%" else unit, t)


def signal_unit(signal: str) -> Unit:
    """The unit a signal's values are in, as far as its name tells ('' when it does not)."""
    lowered = signal.lower()
    return next((unit for pattern, unit in _UNIT_WORDS if pattern.search(lowered)), "")


def format_band(signal: str, lower: float, upper: float, t: Translator | None = None) -> str:
    """``120-340 Mbit/s``: the expected range, in the signal's unit when its name tells it.

    In ``t``'s language (English by default): ``1,5-3,2 Mbit/s`` in French.
    """
    t = t or _english()
    unit = signal_unit(signal)
    largest = max(abs(lower), abs(upper))
    if unit == "ratio" and largest <= 2:
        return _range(max(0.0, lower) * 100, upper * 100, "%" if t.is_source else "\u00a0%", t)
    if unit == "s" and largest < 1:
        return _range(max(0.0, lower) * 1000, upper * 1000, " ms", t)
    if unit == "s":
        return _range(max(0.0, lower), upper, " s", t)
    scale, prefix = next(((s, p) for s, p in _SI if largest >= s), (1.0, ""))
    if unit == "bit/s":
        return _range(max(0.0, lower) / scale, upper / scale, f" {prefix}bit/s", t)
    # A unit the name does not tell: SI prefixes still keep big numbers short.
    return _range(lower / scale, upper / scale, f" {prefix}" if prefix else "", t)


def _range(lower: float, upper: float, unit: str, t: Translator) -> str:
    # A hyphen between two numbers reads as a minus when the first is negative.
    if lower < 0:
        return t.gettext("{lower} to {upper}{unit}").format(
            lower=_number(lower, t), upper=_number(upper, t), unit=unit
        )
    return f"{_number(lower, t)}-{_number(upper, t)}{unit}"


def _number(value: float, t: Translator) -> str:
    """Three significant digits; whole numbers up to 999,999 in full (1234, not 1.23e+03).

    In the language's separators beyond English (``1,5`` in French).
    """
    text = f"{value:.3g}"
    if "e+" in text and abs(value) < 1e6:
        text = f"{value:.0f}"
    if t.is_source or "e" in text or not math.isfinite(value):
        return text
    return format_decimal(float(text), format="0.###", locale=t.locale)

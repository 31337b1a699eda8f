"""What a report reads from Prometheus: top bandwidth consumers, WAN utilisation, anomalies.

Each part is one or a few instant queries at the period's end over a range as
long as the period, time-boxed by ``reports.query_timeout``. None of them may
fail a report: no Prometheus configured, an engine that does not answer or
refuses, or a metric nobody exports give a :class:`Measured` with no rows and
a sentence saying why, which every rendering shows instead of the table. A
Prometheus known to be down (:func:`prometheus_down`: the console's health
probe, or the CLI's own) is not asked at all: each query would wait out its
time box, on every report.

- **Bandwidth**: the flow collector's talker counters
  (``scout_flow_talker_bytes_total``, exporter/collectors/flows), summed over
  exporters by address and direction, ``other`` left out.
- **WAN utilisation**: ``wan_ifIndex:if_{in,out}_utilisation:ratio_rate5m``
  (prometheus/rules/wan.rules.yml), average and peak over the period.
- **Anomalies**: the highest ``scout_anomaly_score`` (ai_sidecar.anomaly) each
  series reached over the period.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, TypeVar

from ai_sidecar.anomaly.evidence import SCORE
from ai_sidecar.console.reports.period import Period
from ai_sidecar.console.words import N_
from ai_sidecar.i18n import Translator
from ai_sidecar.promql import PromQLClient, PromQLError, Sample

T = TypeVar("T")

TALKER_BYTES = "scout_flow_talker_bytes_total"
WAN_UTILISATION = "wan_ifIndex:if_{direction}_utilisation:ratio_rate5m"
# Labels that say which series an anomaly score is about, besides its own.
_SCORE_NOISE = frozenset({"__name__", "job", "signal"})
NO_PROMETHEUS = N_("not available: no Prometheus is configured (SCOUT_PROMETHEUS_URL)")
PROMETHEUS_DOWN = N_(
    "not available: Prometheus did not answer the last health check, so the report did not ask it"
)


@dataclass(frozen=True, slots=True)
class Measured(Generic[T]):
    """Rows read from Prometheus, or why there are none (``unavailable``)."""

    rows: tuple[T, ...] = ()
    unavailable: str | None = None
    # ``unavailable`` as a catalogue message and its values, for other languages.
    why: str = ""
    why_values: tuple[tuple[str, str], ...] = ()

    def unavailable_in(self, t: Translator) -> str | None:
        """``unavailable`` in ``t``'s language (Prometheus' own error stays as it came)."""
        if self.unavailable is None or not self.why:
            return self.unavailable
        return t.gettext(self.why).format(**dict(self.why_values))


def _unavailable(message: str, **values: str) -> Measured[Any]:
    """No rows, because of ``message`` (a catalogue message) with ``values``."""
    return Measured(
        unavailable=message.format(**values), why=message, why_values=tuple(values.items())
    )


def prometheus_down() -> Measured[Any]:
    """What a table says when Prometheus was not asked because it is known to be down."""
    return _unavailable(PROMETHEUS_DOWN)


@dataclass(frozen=True, slots=True)
class Talker:
    address: str
    direction: str
    bytes: float


@dataclass(frozen=True, slots=True)
class WanLink:
    instance: str
    interface: str
    direction: str
    mean: float
    peak: float


@dataclass(frozen=True, slots=True)
class AnomalyPeak:
    signal: str
    subject: str
    score: float


def _range(period: Period) -> str:
    return f"{max(1, math.ceil(period.length.total_seconds()))}s"


def _finite(samples: Sequence[Sample]) -> list[Sample]:
    return [s for s in samples if math.isfinite(s.value)]


async def _instant(
    client: PromQLClient, query: str, period: Period, time_box: timedelta
) -> list[Sample]:
    return _finite(await client.instant(query, period.end, time_box=time_box))


def _why(error: PromQLError) -> Measured[Any]:
    return _unavailable(N_("not available: {error}"), error=str(error))


async def top_talkers(
    client: PromQLClient | None, period: Period, top: int, time_box: timedelta
) -> Measured[Talker]:
    if client is None:
        return _unavailable(NO_PROMETHEUS)
    query = (
        f"topk({top}, sum by (address, direction) "
        f'(increase({TALKER_BYTES}{{address!="other"}}[{_range(period)}])))'
    )
    try:
        samples = await _instant(client, query, period, time_box)
    except PromQLError as exc:
        return _why(exc)
    if not samples:
        return _unavailable(
            N_("not available: no flow metrics ({metric}) in Prometheus"), metric=TALKER_BYTES
        )
    rows = sorted(
        (
            Talker(s.labels.get("address", ""), s.labels.get("direction", ""), s.value)
            for s in samples
        ),
        key=lambda t: (-t.bytes, t.address, t.direction),
    )
    return Measured(tuple(rows[:top]))


def _interface(labels: Mapping[str, str]) -> str:
    return labels.get("ifName") or labels.get("ifAlias") or labels.get("ifIndex", "")


async def wan_utilisation(
    client: PromQLClient | None, period: Period, top: int, time_box: timedelta
) -> Measured[WanLink]:
    if client is None:
        return _unavailable(NO_PROMETHEUS)
    window = _range(period)
    queries = [
        (direction, f"{fn}_over_time({WAN_UTILISATION.format(direction=direction)}[{window}])")
        for direction in ("in", "out")
        for fn in ("avg", "max")
    ]
    try:
        answers = await asyncio.gather(
            *(_instant(client, query, period, time_box) for _, query in queries)
        )
    except PromQLError as exc:
        return _why(exc)
    # (instance, interface, direction) -> [mean, peak]
    links: dict[tuple[str, str, str], list[float]] = {}
    for (direction, query), samples in zip(queries, answers, strict=True):
        slot = 0 if query.startswith("avg") else 1
        for sample in samples:
            key = (sample.labels.get("instance", ""), _interface(sample.labels), direction)
            links.setdefault(key, [math.nan, math.nan])[slot] = sample.value
    if not links:
        return _unavailable(
            N_("not available: no WAN utilisation series ({metric}) in Prometheus"),
            metric=WAN_UTILISATION.format(direction="in"),
        )
    rows = sorted(
        (WanLink(*key, mean=values[0], peak=values[1]) for key, values in links.items()),
        key=lambda link: (-_or_zero(link.peak), link.instance, link.interface, link.direction),
    )
    return Measured(tuple(rows[:top]))


def _or_zero(value: float) -> float:
    return 0.0 if math.isnan(value) else value


async def top_anomalies(
    client: PromQLClient | None, period: Period, top: int, time_box: timedelta
) -> Measured[AnomalyPeak]:
    if client is None:
        return _unavailable(NO_PROMETHEUS)
    query = f"topk({top}, max_over_time({SCORE}[{_range(period)}]))"
    try:
        samples = await _instant(client, query, period, time_box)
    except PromQLError as exc:
        return _why(exc)
    if not samples:
        return _unavailable(
            N_("not available: no anomaly scores ({metric}) in Prometheus"), metric=SCORE
        )
    rows = sorted(
        (
            AnomalyPeak(
                s.labels.get("signal", ""),
                " ".join(
                    f"{name}={value}"
                    for name, value in sorted(s.labels.items())
                    if name not in _SCORE_NOISE
                ),
                s.value,
            )
            for s in samples
        ),
        key=lambda a: (-a.score, a.signal, a.subject),
    )
    return Measured(tuple(rows[:top]))

"""Prometheus context for the analyst: what an alert's expression says right now.

Alertmanager passes each alert's ``generatorURL``, a link to Prometheus' graph
page whose ``g0.expr`` parameter is the alerting rule's PromQL. For a member,
:class:`PrometheusContext` runs that expression as an instant query (the current
values) and as a range query (the recent trend), both within one time box.

A rule like ``up == 0`` only returns series while they match, which says
nothing a person does not already know; so when the expression is a single
comparison at the top level, its value side (``up``) is queried instead. The
results are narrowed to the series whose labels agree with the alert's, since
one rule usually covers many targets.

Context is a nice-to-have: when there is no expression, Prometheus is down,
slow, or refuses the query, the answer says so (``available=False`` and a
reason) instead of raising, and the analyst works without it.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol, TypeVar, cast
from urllib.parse import parse_qs, urlsplit

from ai_sidecar.clock import utc_now
from ai_sidecar.config import AnalysisConfig
from ai_sidecar.models import Member
from ai_sidecar.promql import PromQLClient, PromQLError, Sample, Series
from ai_sidecar.promql.http import gather_all
from exporter.common.durations import format_duration

Trend = Literal["rising", "falling", "flat"]
# A change smaller than this share of the larger end is "flat": counters of
# idle links and gauges with noise should not read as a trend.
FLAT_TOLERANCE = 0.05
# Series reported per member; the rest are counted, not listed.
MAX_SERIES = 5
_COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
_SET_OPERATORS = ("and", "or", "unless")
_OPENERS, _CLOSERS = "([{", ")]}"
LabelKey = tuple[tuple[str, str], ...]
A = TypeVar("A")
B = TypeVar("B")


@dataclass(frozen=True, slots=True)
class SeriesContext:
    """One series of a member's expression: its value now and over the range."""

    labels: Mapping[str, str]
    value: float | None
    first: float | None = None
    last: float | None = None
    trend: Trend | None = None

    def describe(self, lookback: timedelta) -> str:
        now = "no current value" if self.value is None else f"now {number_text(self.value)}"
        if self.trend is None or self.first is None or self.last is None:
            return now
        span = format_duration(lookback)
        return (
            f"{now}, {self.trend} {number_text(self.first)} → {number_text(self.last)} over {span}"
        )


@dataclass(frozen=True, slots=True)
class MemberContext:
    """What Prometheus says about one member; ``reason`` explains an unavailable one."""

    fingerprint: str
    available: bool
    reason: str = ""
    query: str = ""
    series: tuple[SeriesContext, ...] = ()
    # Matching series beyond MAX_SERIES, counted but not listed.
    omitted: int = 0
    lookback: timedelta = timedelta(0)

    def describe(self) -> str:
        """One line for a person, the same for the same context."""
        if not self.available:
            return f"Prometheus context unavailable: {self.reason}"
        if not self.series:
            return f"{self.query}: no series for this alert"
        parts = []
        for series in self.series:
            shown = labels_text(series.labels)
            parts.append(f"{shown} {series.describe(self.lookback)}".strip())
        more = f"; and {self.omitted} more series" if self.omitted else ""
        return f"{self.query}: " + "; ".join(parts) + more


class MetricsContextSource(Protocol):
    """Where the analyst's metric context comes from (Prometheus, or a fake in tests).

    Implementations never raise for an unreachable or unhelpful backend: they
    return a :class:`MemberContext` with ``available=False`` and a reason.
    """

    async def context(self, member: Member) -> MemberContext: ...


def expression_of(generator_url: str) -> str | None:
    """The ``g0.expr`` PromQL of a Prometheus graph link, or None."""
    values = parse_qs(urlsplit(generator_url).query).get("g0.expr")
    if not values or not values[0].strip():
        return None
    return values[0].strip()


def value_expression(expr: str) -> str:
    """The value side of a top-level comparison: ``rate(x[5m]) > 0.1`` -> ``rate(x[5m])``.

    Anything else is returned as is: ``bool`` comparisons (already values), set
    operators at the top level, several comparisons, or a comparison whose value
    side is a literal on both ends.
    """
    found: list[tuple[int, str]] = []
    depth, index, quote = 0, 0, ""
    while index < len(expr):
        char = expr[index]
        if quote:
            if char == "\\":
                index += 1
            elif char == quote:
                quote = ""
        elif char in "\"'`":
            quote = char
        elif char == "#":
            newline = expr.find("\n", index)
            index = len(expr) if newline < 0 else newline
        elif char in _OPENERS:
            depth += 1
        elif char in _CLOSERS:
            depth -= 1
        elif depth == 0:
            if char.isalpha() and (index == 0 or not _word_char(expr[index - 1])):
                word = _word_at(expr, index)
                if word in _SET_OPERATORS:
                    return expr
                index += len(word)
                continue
            operator = next((op for op in _COMPARISONS if expr.startswith(op, index)), None)
            if operator is not None:
                found.append((index, operator))
                index += len(operator)
                continue
        index += 1
    if len(found) != 1:
        return expr
    at, operator = found[0]
    left, right = expr[:at].strip(), expr[at + len(operator) :].strip()
    if _word_at(right, 0) == "bool":
        return expr
    if _is_number(left):
        # `0.5 < rate(...)`: the value is on the right, after any on()/ignoring().
        return expr if _is_number(right) or not right else _strip_modifiers(right)
    return left or expr


def _word_char(char: str) -> bool:
    return char.isalnum() or char in "_:"


def _word_at(text: str, index: int) -> str:
    end = index
    while end < len(text) and _word_char(text[end]):
        end += 1
    return text[index:end]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _strip_modifiers(text: str) -> str:
    """Drop leading ``on(...)``/``ignoring(...)``/``group_left(...)`` from an operand."""
    while True:
        word = _word_at(text, 0)
        if word not in ("on", "ignoring", "group_left", "group_right"):
            return text
        rest = text[len(word) :].lstrip()
        if rest.startswith("("):
            rest = rest[rest.find(")") + 1 :].lstrip()
        text = rest


def number_text(value: float) -> str:
    return f"{value:g}"


def labels_text(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def trend_of(values: Sequence[float]) -> Trend | None:
    """rising, falling or flat from the first to the last value; None for < 2 values."""
    if len(values) < 2:
        return None
    first, last = values[0], values[-1]
    scale = max(abs(first), abs(last))
    if scale == 0 or abs(last - first) <= FLAT_TOLERANCE * scale:
        return "flat"
    return "rising" if last > first else "falling"


class PrometheusContext:
    """Instant and range queries of each member's expression, through a PromQL client.

    ``client`` None means no context (``SCOUT_PROMETHEUS_URL`` unset).
    """

    def __init__(
        self,
        client: PromQLClient | None,
        *,
        timeout: timedelta,
        range: timedelta,  # the PromQL name for it, shadowing the builtin here only
        step: timedelta,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._client = client
        self._timeout = timeout
        self._range = range
        self._step = step
        self._clock = clock

    @classmethod
    def from_config(
        cls,
        client: PromQLClient | None,
        config: AnalysisConfig,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> PrometheusContext:
        return cls(
            client,
            timeout=config.context_timeout,
            range=config.context_range,
            step=config.context_step,
            clock=clock,
        )

    async def context(self, member: Member) -> MemberContext:
        fingerprint = member.fingerprint
        expr = expression_of(member.generator_url)
        if expr is None:
            return MemberContext(
                fingerprint, False, "the alert's generatorURL carries no expression (g0.expr)"
            )
        client = self._client
        if client is None:
            # Never the host named in the generatorURL: alert text is untrusted,
            # and following it would let anyone who can post an alert aim the
            # sidecar's requests at any address.
            return MemberContext(fingerprint, False, "SCOUT_PROMETHEUS_URL is not set")
        query = value_expression(expr)
        now = self._clock()
        box = self._timeout
        try:
            # Side by side, each in the same time box: the analyst waits for the slower.
            instant, ranged = await _both(
                client.instant(query, now, time_box=box),
                client.range(query, now - self._range, now, self._step, time_box=box),
            )
        except PromQLError as exc:
            return MemberContext(fingerprint, False, str(exc), query)
        return _build(member, query, instant, ranged, self._range)


async def _both(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Both results; the first failure cancels the other and is raised as itself."""
    one, two = await gather_all([first, second])
    return cast(A, one), cast(B, two)


def _matches(series: Mapping[str, str], member: Member) -> bool:
    """Every label the series has (bar its name) has the alert's value."""
    return all(
        member.labels.get(name) == value for name, value in series.items() if name != "__name__"
    )


def _build(
    member: Member,
    query: str,
    instant: Sequence[Sample],
    ranged: Sequence[Series],
    lookback: timedelta,
) -> MemberContext:
    now = {_key(sample.labels): _finite(sample.value) for sample in instant}
    history = {
        _key(series.labels): [v for v in series.values if math.isfinite(v)] for series in ranged
    }
    keys = sorted(k for k in now.keys() | history.keys() if _matches(dict(k), member))
    series_context = []
    for key in keys[:MAX_SERIES]:
        values = history.get(key, [])
        series_context.append(
            SeriesContext(
                labels={k: v for k, v in key if k != "__name__"},
                value=now.get(key),
                first=values[0] if values else None,
                last=values[-1] if values else None,
                trend=trend_of(values),
            )
        )
    return MemberContext(
        member.fingerprint,
        True,
        query=query,
        series=tuple(series_context),
        omitted=max(0, len(keys) - MAX_SERIES),
        lookback=lookback,
    )


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _key(labels: Mapping[str, str]) -> LabelKey:
    return tuple(sorted(labels.items()))

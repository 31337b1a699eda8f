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

import asyncio
import json
import math
import os
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs, urlsplit, urlunsplit

import aiohttp

from ai_sidecar.config import AnalysisConfig, format_duration
from ai_sidecar.models import Member

Trend = Literal["rising", "falling", "flat"]
# A change smaller than this share of the larger end is "flat": counters of
# idle links and gauges with noise should not read as a trend.
FLAT_TOLERANCE = 0.05
# Series reported per member; the rest are counted, not listed.
MAX_SERIES = 5
_COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
_SET_OPERATORS = ("and", "or", "unless")
_OPENERS, _CLOSERS = "([{", ")]}"


@dataclass(frozen=True, slots=True)
class SeriesContext:
    """One series of a member's expression: its value now and over the range."""

    labels: Mapping[str, str]
    value: float | None
    first: float | None = None
    last: float | None = None
    trend: Trend | None = None

    def describe(self, lookback: timedelta) -> str:
        now = "no current value" if self.value is None else f"now {_number(self.value)}"
        if self.trend is None or self.first is None or self.last is None:
            return now
        span = format_duration(lookback)
        return f"{now}, {self.trend} {_number(self.first)} → {_number(self.last)} over {span}"


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
            shown = _labels(series.labels)
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


def _number(value: float) -> str:
    return f"{value:g}"


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def _float(text: object) -> float | None:
    try:
        value = float(str(text))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def trend_of(values: Sequence[float]) -> Trend | None:
    """rising, falling or flat from the first to the last value; None for < 2 values."""
    if len(values) < 2:
        return None
    first, last = values[0], values[-1]
    scale = max(abs(first), abs(last))
    if scale == 0 or abs(last - first) <= FLAT_TOLERANCE * scale:
        return "flat"
    return "rising" if last > first else "falling"


class _Unavailable(Exception):
    """Prometheus answered, but not with data; the message is the reason."""


def utc_now() -> datetime:
    return datetime.now(UTC)


class PrometheusContext:
    """Instant and range queries of each member's expression against Prometheus.

    ``base_url`` None means no context (``SCOUT_PROMETHEUS_URL`` unset). The
    session is the caller's (one per app).
    """

    def __init__(
        self,
        base_url: str | None,
        session: aiohttp.ClientSession,
        *,
        timeout: timedelta,
        range: timedelta,  # the PromQL name for it, shadowing the builtin here only
        step: timedelta,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._base_url = None if base_url is None else base_url.rstrip("/")
        self._session = session
        self._timeout = timeout
        self._range = range
        self._step = step
        self._clock = clock

    @classmethod
    def from_config(
        cls,
        base_url: str | None,
        session: aiohttp.ClientSession,
        config: AnalysisConfig,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> PrometheusContext:
        return cls(
            base_url,
            session,
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
        base = self._base_url
        if base is None:
            # Never the host named in the generatorURL: alert text is untrusted,
            # and following it would let anyone who can post an alert aim the
            # sidecar's requests at any address.
            return MemberContext(fingerprint, False, "SCOUT_PROMETHEUS_URL is not set")
        query = value_expression(expr)
        now = self._clock()
        instant_params = {"query": query, "time": _unix(now)}
        range_params = {
            "query": query,
            "start": _unix(now - self._range),
            "end": _unix(now),
            "step": f"{self._step.total_seconds():g}",
        }
        try:
            async with asyncio.timeout(self._timeout.total_seconds()):
                instant, ranged = await _both(
                    self._get(f"{base}/api/v1/query", instant_params),
                    self._get(f"{base}/api/v1/query_range", range_params),
                )
        except TimeoutError:
            reason = f"Prometheus did not answer within {format_duration(self._timeout)}"
            return MemberContext(fingerprint, False, reason, query)
        except aiohttp.ClientError as exc:
            reason = f"cannot reach Prometheus at {_safe(base)}: {_client_error(exc)}"
            return MemberContext(fingerprint, False, reason, query)
        except _Unavailable as exc:
            return MemberContext(fingerprint, False, str(exc), query)
        return _build(member, query, instant, ranged, self._range)

    async def _get(self, url: str, params: Mapping[str, str]) -> Any:
        async with self._session.get(url, params=params) as response:
            body = await response.text()
            try:
                payload = json.loads(body)
            except ValueError:
                raise _Unavailable(
                    f"Prometheus answered HTTP {response.status} without JSON"
                ) from None
            if not isinstance(payload, dict) or payload.get("status") != "success":
                error = payload.get("error") if isinstance(payload, dict) else None
                kind = payload.get("errorType") if isinstance(payload, dict) else None
                raise _Unavailable(
                    f"Prometheus refused the query (HTTP {response.status}, "
                    f"{kind or 'no error type'}): {error or 'no message'}"
                )
            return payload.get("data")


async def _both(
    first: Coroutine[Any, Any, Any], second: Coroutine[Any, Any, Any]
) -> tuple[Any, Any]:
    """Run both; the first failure cancels the other and is raised as itself."""
    try:
        async with asyncio.TaskGroup() as group:
            one = group.create_task(first)
            two = group.create_task(second)
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return one.result(), two.result()


def _unix(moment: datetime) -> str:
    return f"{moment.timestamp():.3f}"


def _safe(url: str) -> str:
    """The URL without any user:password part."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _client_error(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        # asyncio's own text repeats the address; the errno's text says why.
        errno = exc.os_error.errno
        return os.strerror(errno) if errno else str(exc.os_error) or type(exc.os_error).__name__
    return str(exc) or type(exc).__name__


def _matches(series: Mapping[str, str], member: Member) -> bool:
    """Every label the series has (bar its name) has the alert's value."""
    return all(
        member.labels.get(name) == value for name, value in series.items() if name != "__name__"
    )


def _build(
    member: Member, query: str, instant: Any, ranged: Any, lookback: timedelta
) -> MemberContext:
    now: dict[tuple[tuple[str, str], ...], float | None] = {}
    for row in _rows(instant, "vector"):
        value = row.get("value")
        now[_key(row)] = _float(value[1]) if isinstance(value, list) and len(value) == 2 else None
    history: dict[tuple[tuple[str, str], ...], list[float]] = {}
    for row in _rows(ranged, "matrix"):
        points = [_float(v[1]) for v in row.get("values", []) if isinstance(v, list)]
        history[_key(row)] = [p for p in points if p is not None]
    keys = sorted(k for k in now.keys() | history.keys() if _matches(dict(k), member))
    series = []
    for key in keys[:MAX_SERIES]:
        values = history.get(key, [])
        series.append(
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
        series=tuple(series),
        omitted=max(0, len(keys) - MAX_SERIES),
        lookback=lookback,
    )


def _rows(data: Any, kind: str) -> list[dict[str, Any]]:
    if not isinstance(data, dict) or data.get("resultType") != kind:
        return []
    result = data.get("result")
    return [row for row in result if isinstance(row, dict)] if isinstance(result, list) else []


def _key(row: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    metric = row.get("metric")
    if not isinstance(metric, dict):
        return ()
    return tuple(sorted((str(k), str(v)) for k, v in metric.items()))

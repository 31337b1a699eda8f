"""The PromQL seam: what a query client does, what it returns, and how it fails.

Errors, all raised by :class:`PromQLClient` methods::

    PromQLError               root; the message is fit to show a person
    ├── BadQueryError         the engine refused the query (HTTP 4xx with its error text)
    └── UnavailableError      no answer to use: HTTP 5xx, no connection, no JSON
        └── QueryTimeoutError the call's time box ran out

A message never contains credentials: URLs are shown without their user
information, and tokens are never part of one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from ai_sidecar.errors import SidecarError
from exporter.common.durations import format_duration


class PromQLError(SidecarError):
    """A query gave no result to use."""


class BadQueryError(PromQLError):
    """The engine understood the request and refused it: fixing the query is the cure.

    ``status`` is the HTTP status, ``kind`` the engine's ``errorType`` and
    ``error`` its own explanation.
    """

    def __init__(self, status: int, kind: str, error: str) -> None:
        super().__init__(f"Prometheus refused the query (HTTP {status}, {kind}): {error}")
        self.status = status
        self.kind = kind
        self.error = error


class UnavailableError(PromQLError):
    """The engine could not answer now; the same query may work later."""


class QueryTimeoutError(UnavailableError):
    def __init__(self, timeout: timedelta) -> None:
        super().__init__(f"Prometheus did not answer within {format_duration(timeout)}")
        self.timeout = timeout


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of an instant query. NaN stays NaN; infinities stay infinite."""

    labels: Mapping[str, str]
    timestamp: float
    value: float


@dataclass(frozen=True, slots=True)
class Series:
    """One series of a range query, in time order.

    ``timestamps`` (Unix seconds) and ``values`` pair up; a step the engine had
    no value for is missing from both (a gap stays a gap, never a zero).
    """

    labels: Mapping[str, str]
    timestamps: tuple[float, ...]
    values: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class BearerToken:
    """``Authorization: Bearer``, as Mimir, Thanos or a proxy in front may ask."""

    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class BasicAuth:
    username: str
    password: str = field(repr=False)


PromQLAuth = BearerToken | BasicAuth


class PromQLClient(Protocol):
    """Runs PromQL against a Prometheus-compatible engine.

    Each call finishes within ``time_box`` or raises :class:`QueryTimeoutError`;
    every failure is a :class:`PromQLError`. Results keep the engine's labels
    (``__name__`` included) and its values as floats.
    """

    async def instant(self, query: str, at: datetime, *, time_box: timedelta) -> tuple[Sample, ...]:
        """The query's value at one moment (a scalar is one sample without labels)."""
        ...

    async def range(
        self, query: str, start: datetime, end: datetime, step: timedelta, *, time_box: timedelta
    ) -> tuple[Series, ...]:
        """The query evaluated every ``step`` from ``start`` to ``end``, both included."""
        ...

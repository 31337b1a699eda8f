"""A client for the Prometheus query API, shared by every stage that reads metrics.

The analyst's context (:mod:`ai_sidecar.context`) uses it today, the anomaly
trainer next. Only the plain HTTP API is used (``/api/v1/query`` and
``/api/v1/query_range``), so the same client works against Prometheus, Thanos,
Mimir and VictoriaMetrics.

What the rest of the sidecar may import: the :class:`PromQLClient` seam, its
value types, its errors, and :class:`HttpPromQLClient`.
"""

from ai_sidecar.promql.base import (
    BadQueryError,
    BasicAuth,
    BearerToken,
    PromQLAuth,
    PromQLClient,
    PromQLError,
    QueryTimeoutError,
    Sample,
    Series,
    UnavailableError,
)
from ai_sidecar.promql.http import MAX_POINTS_PER_SERIES, HttpPromQLClient

__all__ = [
    "MAX_POINTS_PER_SERIES",
    "BadQueryError",
    "BasicAuth",
    "BearerToken",
    "HttpPromQLClient",
    "PromQLAuth",
    "PromQLClient",
    "PromQLError",
    "QueryTimeoutError",
    "Sample",
    "Series",
    "UnavailableError",
]

"""Durable storage of received alerts, incidents, feedback and the return trip's outbox.

:class:`Store` (:mod:`ai_sidecar.store.protocol`) is the seam every other part
of the sidecar uses; :class:`SqliteStore` (:mod:`ai_sidecar.store.sqlite`) is
the embedded implementation, :class:`PostgresStore` (:mod:`ai_sidecar.store.postgres`)
the shared one that several replicas use at once. Everything the webhook acknowledges is in the
store before the answer leaves, so a restart, or a kill -9, loses nothing
Alertmanager believes was delivered. :mod:`ai_sidecar.store.retention` prunes
what is older than the configured retention.
"""

from ai_sidecar.store.postgres import PostgresStore
from ai_sidecar.store.protocol import (
    Backlog,
    ConsoleAccount,
    ConsoleSession,
    Feedback,
    IncidentAction,
    IncidentPage,
    IncidentQuery,
    IncidentSummary,
    IngestResult,
    LlmUsage,
    OutboxCopy,
    OutboxPlan,
    OutboxRow,
    PostState,
    PruneResult,
    SchemaVersionError,
    Store,
    StoreClosedError,
    StoreError,
)
from ai_sidecar.store.sqlite import SqliteStore

__all__ = [
    "Backlog",
    "ConsoleAccount",
    "ConsoleSession",
    "Feedback",
    "IncidentAction",
    "IncidentPage",
    "IncidentQuery",
    "IncidentSummary",
    "IngestResult",
    "LlmUsage",
    "OutboxCopy",
    "OutboxPlan",
    "OutboxRow",
    "PostState",
    "PostgresStore",
    "PruneResult",
    "SchemaVersionError",
    "SqliteStore",
    "Store",
    "StoreClosedError",
    "StoreError",
]

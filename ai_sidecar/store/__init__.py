"""Durable storage of received alerts, incidents and feedback.

SQLite (:mod:`ai_sidecar.store.sqlite`) is the embedded default. Everything the
webhook acknowledges is in the store before the answer leaves, so a restart,
or a kill -9, loses nothing Alertmanager believes was delivered.
"""

from ai_sidecar.store.sqlite import Backlog, Database, Feedback, IngestResult, StoreError

__all__ = ["Backlog", "Database", "Feedback", "IngestResult", "StoreError"]

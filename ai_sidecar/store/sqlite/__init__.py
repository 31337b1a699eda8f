"""The embedded store: one SQLite file in WAL mode, split by job.

- :mod:`.engine`: the writer thread with group commit, quick writes, the reader;
- :mod:`.transactions`: connection settings, lock waits, jobs in savepoints;
- :mod:`.quick`: the webhook's inserts, run on the event loop and committed
  on a thread;
- :mod:`.schema`: the tables and the migrations run at start-up;
- :mod:`.incidents`: SQL for alerts, the cursor, incidents and feedback;
- :mod:`.outbox`: SQL for the return trip's outbox;
- :mod:`.store`: :class:`SqliteStore`, the verbs of
  :class:`ai_sidecar.store.protocol.Store` on top of them.
"""

from ai_sidecar.store.sqlite.engine import Engine
from ai_sidecar.store.sqlite.schema import SCHEMA_VERSION
from ai_sidecar.store.sqlite.store import SqliteStore
from ai_sidecar.store.sqlite.transactions import WRITE_LOCK_TIMEOUT, Synchronous

__all__ = ["SCHEMA_VERSION", "WRITE_LOCK_TIMEOUT", "Engine", "SqliteStore", "Synchronous"]

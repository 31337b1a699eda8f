"""The shared store: one PostgreSQL database for one or more sidecar replicas, split by job.

- :mod:`.engine`: where the server is (:class:`Location`), pooled
  connections, group-committed ingests, failures as ``StoreError``;
- :mod:`.schema`: the tables and the migrations run at start-up;
- :mod:`.incidents`: SQL for alerts, the cursor, incidents and feedback;
- :mod:`.outbox`: SQL for the return trip's outbox;
- :mod:`.store`: :class:`PostgresStore`, the verbs of
  :class:`ai_sidecar.store.protocol.Store` on top of them;
- :mod:`.lease`: the worker lease, which picks the one replica that runs the
  worker and the return trip, and fences the others out.
"""

from ai_sidecar.store.postgres.engine import LeaseLostError, Location
from ai_sidecar.store.postgres.lease import Lease, lead
from ai_sidecar.store.postgres.schema import SCHEMA_VERSION
from ai_sidecar.store.postgres.store import PostgresStore

__all__ = ["SCHEMA_VERSION", "Lease", "LeaseLostError", "Location", "PostgresStore", "lead"]

"""What the sidecar starts with: flags and ``SCOUT_*`` environment variables.

The YAML file (``--config.file``, :mod:`ai_sidecar.config`) holds how to
correlate and explain; these settings hold where things are (the data
directory, or a PostgreSQL store shared by replicas) and the secrets, so an
operator can run the sidecar without any file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from exporter.common.logs import LogFormat

# The store (psycopg) is imported when a PostgreSQL location is asked for:
# the command line reads these settings for commands that never open it.
if TYPE_CHECKING:
    from ai_sidecar.store.postgres import Location

DEFAULT_PORT = 8782
DATABASE_FILE = "scout.db"
# Alertmanager sends a whole group in one request; 10,000 alerts of about 600
# bytes each fit well inside this.
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SidecarSettings:
    listen_host: str | None = None
    listen_port: int = DEFAULT_PORT
    # None only with --web.insecure-no-auth; the CLI refuses to start otherwise.
    webhook_token: str | None = field(default=None, repr=False)
    prometheus_url: str | None = None
    # Sent as "Authorization: Bearer" to the Prometheus API (Mimir, Thanos, a proxy).
    prometheus_bearer_token: str | None = field(default=None, repr=False)
    alertmanager_urls: tuple[str, ...] = ()
    data_dir: Path = Path("data")
    # A PostgreSQL DSN (no password in it): the shared store of several replicas.
    # None: the SQLite file in data_dir. Not in the repr all the same: one built
    # by hand may hold a secret; store_location names the server safely.
    store_url: str | None = field(default=None, repr=False)
    store_password: str | None = field(default=None, repr=False)
    config_file: Path | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # The worker process configures its logging the same way.
    log_level: str = "info"
    log_format: LogFormat = "auto"

    @property
    def database_path(self) -> Path:
        return self.data_dir / DATABASE_FILE

    @property
    def store_location(self) -> Location | None:
        """Where the PostgreSQL store is, or None for the SQLite file."""
        if self.store_url is None:
            return None
        from ai_sidecar.store.postgres import Location

        return Location(self.store_url, self.store_password)

"""A real PostgreSQL server for tests: Debian's package, started privately.

:class:`PostgresServer` runs ``initdb`` and ``postgres`` from the
distribution's binaries (``/usr/lib/postgresql/*/bin``, or ``initdb`` on
PATH) in a directory of its own, listening only on a Unix socket in that
directory: no port to collide with other test runs. PostgreSQL refuses to run
as root, so as root every server command runs as the ``postgres`` user (the
package creates it) through ``runuser``, and the directory belongs to it.

Authentication is as in production: the superuser (``postgres``) is trusted
on the socket for set-up, while the sidecar's role (:data:`ROLE`) must give
its password (SCRAM), which the tests pass the way operators do, through
``SCOUT_STORE_PASSWORD`` or a file.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg
import pytest

ROLE = "scout"
# A canary: it must never show up in a log, an error or dry-run output.
PASSWORD = "canary-pg-password-5b1e9d"
SERVER_USER = "postgres"


def find_bindir() -> Path | None:
    """Where initdb, pg_ctl and postgres are, or None when PostgreSQL is not installed."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    on_path = shutil.which("initdb")
    return None if on_path is None else Path(on_path).parent


class PostgresServer:
    """One private PostgreSQL cluster; a context manager that removes it on exit."""

    def __init__(self, *, fsync: bool = False) -> None:
        bindir = find_bindir()
        if bindir is None:
            pytest.fail("PostgreSQL is not installed (Debian: apt-get install postgresql)")
        self.bindir = bindir
        self.fsync = fsync
        self._as_server: list[str] = []
        self.root = Path(tempfile.mkdtemp(prefix="scout-pg-"))
        if os.geteuid() == 0:
            self._as_server = ["runuser", "-u", SERVER_USER, "--"]
            account = pwd.getpwnam(SERVER_USER)
            os.chown(self.root, account.pw_uid, account.pw_gid)
        self.data = self.root / "data"
        self.socket_dir = self.root

    def _run(self, *argv: str) -> None:
        subprocess.run(
            [*self._as_server, *argv], check=True, capture_output=True, text=True, timeout=120
        )

    def start(self) -> None:
        if not self.data.exists():
            self._run(
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                SERVER_USER,
                "--auth-local=trust",
                "--auth-host=reject",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            )
            hba = self.data / "pg_hba.conf"
            hba.write_text(f"local all {SERVER_USER} trust\nlocal all all scram-sha-256\n")
        options = " ".join(
            (
                "-c listen_addresses=''",
                f"-c unix_socket_directories={self.socket_dir}",
                f"-c fsync={'on' if self.fsync else 'off'}",
                "-c max_connections=60",
                "-c shared_buffers=32MB",
            )
        )
        self._pg_ctl("-o", options, "-t", "60", "start")
        with self.superuser() as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone()
            if exists is None:
                conn.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")

    def _pg_ctl(self, *args: str) -> None:
        # -l: a server started here must not inherit our captured stdout.
        log = str(self.root / "server.log")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", log, "-w", *args)

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-m", mode, "stop")

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every session is ended, then the server comes back."""
        self._pg_ctl("-m", "fast", "restart")

    def superuser(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host=str(self.socket_dir), user=SERVER_USER, dbname=dbname, autocommit=True
        )

    def create_database(self, prefix: str = "scout") -> str:
        """A new, empty database owned by :data:`ROLE`; returns its DSN (no password)."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with self.superuser() as conn:
            conn.execute(f"CREATE DATABASE {name} OWNER {ROLE} TEMPLATE template0")
        return self.dsn(name)

    def dsn(self, dbname: str) -> str:
        return f"postgresql://{ROLE}@/{dbname}?host={self.socket_dir}"

    def log_text(self) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

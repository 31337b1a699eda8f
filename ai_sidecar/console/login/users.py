"""Who may sign in: users from ``console.users_file`` first, then the store's.

The file suits configuration management (users as code, hashes only)::

    users:
      - name: alice
        role: operator
        password_hash: $argon2id$v=19$m=65536,t=3,p=4$...
      - name: bob
        role: viewer
        password_hash: $2b$12$...       # bcrypt (htpasswd -B) is accepted too

A user in the file wins over a stored user of the same name (``scout-sidecar
user add`` cannot override it). Names compare ignoring case everywhere (sign-in,
lockout, ``user add``): ``Alice`` signs in as ``alice``, and is shown as spelt
where it is kept. The file is read at start and again whenever
it changes (its modification time, size, inode or mode), so ``SIGHUP`` is not even
needed; a file that no longer reads (broken, or gone) is logged and the users
read last stay: ``users: []`` removes them all.
"""

from __future__ import annotations

import contextlib
import logging
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from ai_sidecar.console.login.passwords import PasswordError, check_hash
from ai_sidecar.errors import ConfigError
from ai_sidecar.store import Store
from ai_sidecar.store.protocol import ConsoleAccount
from exporter.common.models import StrictModel
from exporter.common.yamlconfig import load_model

log = logging.getLogger("ai_sidecar.console.login")

# Letters, digits and . _ @ - : safe in a log line, a URL and a shell.
USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
RoleName = Literal["viewer", "operator"]


def folded(name: str) -> str:
    """``name`` as names compare: ignoring case (user names are ASCII)."""
    return name.lower()


def check_user_name(name: str) -> str:
    if not USER_NAME.fullmatch(name):
        raise ValueError(
            "a user name is 1 to 64 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    return name


def _password_hash(value: str) -> str:
    try:
        return check_hash(value)
    except PasswordError as exc:
        raise ValueError(str(exc)) from None


class FileUser(StrictModel):
    name: Annotated[str, AfterValidator(check_user_name)]
    role: RoleName
    password_hash: Annotated[str, AfterValidator(_password_hash)]


class UsersFile(StrictModel):
    users: list[FileUser] = Field(default_factory=list)

    @model_validator(mode="after")
    def _names_unique(self) -> UsersFile:
        names = [folded(user.name) for user in self.users]
        repeated = [
            u.name for u, name in zip(self.users, names, strict=True) if names.count(name) > 1
        ]
        if repeated:
            raise ValueError(
                f"user {repeated[0]!r} is listed twice (names compare ignoring case: "
                f"{', '.join(map(repr, repeated))})"
            )
        return self


def load_users_file(path: Path) -> dict[str, ConsoleAccount]:
    """The users ``path`` lists, by name; :class:`ConfigError` naming the line otherwise.

    A file anyone on the host may write is refused: it is read again as soon as
    it changes, so whoever writes it is an operator a moment later.
    """
    with contextlib.suppress(OSError):  # a file that cannot be read says so below
        if path.stat().st_mode & stat.S_IWOTH:
            raise ConfigError(
                f"console.users_file: {path} can be written by any user of this host, "
                "who could add an operator: chmod o-w it"
            )
    loaded = load_model(path, UsersFile, error=ConfigError, secret_paths=("users.*.password_hash",))
    return {u.name: ConsoleAccount(u.name, u.role, u.password_hash) for u in loaded.users}


@dataclass(frozen=True, slots=True)
class _Seen:
    mtime_ns: int
    size: int
    inode: int
    # A chmod that makes a refused file acceptable is a change too.
    mode: int


class UserDirectory:
    """Looks users up in the file (when configured), then in the store."""

    def __init__(self, store: Store, users_file: Path | None) -> None:
        self._store = store
        self._path = users_file
        self._seen: _Seen | None = None
        self._file_users: dict[str, ConsoleAccount] = {}
        self._file_by_folded_name: dict[str, ConsoleAccount] = {}
        if users_file is not None:
            self._refresh(first=True)

    @property
    def file_users(self) -> dict[str, ConsoleAccount]:
        self._refresh()
        return self._file_users

    async def find(self, name: str) -> ConsoleAccount | None:
        """The user called ``name`` ignoring case (the file's first), or None."""
        self._refresh()
        account = self._file_by_folded_name.get(folded(name))
        if account is not None or not USER_NAME.fullmatch(name):
            return account
        return await self._store.get_console_user(name)

    def _refresh(self, *, first: bool = False) -> None:
        """Read the file again if it changed; at start, a bad file is an error."""
        if self._path is None:
            return
        try:
            status = self._path.stat()
        except OSError as exc:
            if first:
                raise ConfigError(
                    f"console.users_file: cannot read {self._path}: {exc.strerror}"
                ) from None
            # Said once, not at every request: a file gone (or made unreadable)
            # is refused like a broken one, and its users stay signed in.
            if self._seen is not None:
                log.error(
                    "console users file refused, keeping the users read before: cannot read %s: %s",
                    self._path,
                    exc.strerror,
                )
                self._seen = None
            return
        seen = _Seen(status.st_mtime_ns, status.st_size, status.st_ino, status.st_mode)
        if seen == self._seen:
            return
        try:
            users = load_users_file(self._path)
        except ConfigError as exc:
            if first:
                raise
            log.error("console users file refused, keeping the users read before: %s", exc)
            self._seen = seen
            return
        self._seen = seen
        self._file_users = users
        self._file_by_folded_name = {folded(name): account for name, account in users.items()}
        if not first:
            log.info("console users file read again", extra={"users": len(users)})

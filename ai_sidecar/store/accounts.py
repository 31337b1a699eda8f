"""Console users, their sessions and failed sign-ins: the rows and the SQL both stores run.

Three tables, the same in SQLite and PostgreSQL, so two replicas sharing a
PostgreSQL store share users, sessions and lockouts:

- ``console_users``: name, role, password hash (argon2id or bcrypt; never a
  password), when it was created and last changed;
- ``console_sessions``: one row per signed-in browser, keyed by the SHA-256 of
  the cookie's random id (the id itself is never stored: a copy of the
  database opens no session), with the session's CSRF token and a digest of
  the password hash it was opened with (a new password ends it);
- ``console_login_failures``: one row per failed attempt under a key (a digest
  of the user name typed, or the client's address), pruned as they age out.

Each function returns the SQL with ``mark`` as its placeholder and the
parameters, as :mod:`ai_sidecar.store.exchanges` does; the stores run them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ai_sidecar.store.protocol import ConsoleAccount, ConsoleSession
from ai_sidecar.store.sqlite.incidents import stamp, unstamp

Statement = tuple[str, Sequence[Any]]


# --- users -----------------------------------------------------------------------


def save_user(account: ConsoleAccount, at: datetime, mark: str = "?") -> Statement:
    """Insert ``account``, or replace the role and hash of the user of that name."""
    sql = (
        "INSERT INTO console_users (name, role, password_hash, created_at, updated_at)"
        f" VALUES ({mark}, {mark}, {mark}, {mark}, {mark})"
        " ON CONFLICT (name) DO UPDATE SET role = excluded.role,"
        " password_hash = excluded.password_hash, updated_at = excluded.updated_at"
    )
    when = stamp(at)
    return sql, (account.name, account.role, account.password_hash, when, when)


def replace_hash(
    name: str, old_hash: str, new_hash: str, at: datetime, mark: str = "?"
) -> Statement:
    """Set the user's password hash, only if it is still ``old_hash``: a user removed,
    or given a new password, meanwhile is left as they now are."""
    sql = (
        f"UPDATE console_users SET password_hash = {mark}, updated_at = {mark}"
        f" WHERE name = {mark} AND password_hash = {mark}"
    )
    return sql, (new_hash, stamp(at), name, old_hash)


# How each store folds the case of a user name: A-Z to a-z and nothing else, as
# the users file does. SQLite's lower() does only that; PostgreSQL's follows the
# collation, which depends on how the database was created (in a Turkish one,
# 'I' lowers to a dotless i, U+0131, and U+0130 to i), unless it is "C".
SQLITE_LOWER = "lower({})"
POSTGRES_LOWER = 'lower({} COLLATE "C")'


def select_users(name: str | None, mark: str = "?", lower: str = SQLITE_LOWER) -> Statement:
    """The user called ``name`` ignoring case, or every user by name when None.

    Names are ASCII (:data:`~ai_sidecar.console.login.users.USER_NAME`), and
    ``lower`` (:data:`SQLITE_LOWER` or :data:`POSTGRES_LOWER`) folds only
    ASCII letters, so a name matches in every store and database locale
    alike, and a name with any other letter matches none. A store from before
    names were compared so may hold two spellings of one name: the exact one
    comes first, else the one added first."""
    sql = "SELECT name, role, password_hash FROM console_users"
    if name is None:
        return sql + " ORDER BY name", ()
    matches = f"{lower.format('name')} = {lower.format(mark)}"
    return (
        sql + f" WHERE {matches} ORDER BY name = {mark} DESC, created_at, name LIMIT 1",
        (name, name),
    )


def decode_users(rows: Sequence[Sequence[Any]]) -> list[ConsoleAccount]:
    return [ConsoleAccount(str(name), str(role), str(hashed)) for name, role, hashed in rows]


def remove_user(name: str, mark: str = "?") -> list[Statement]:
    """Delete the user and every session of theirs; the first statement's rowcount says
    whether there was such a user."""
    return [
        (f"DELETE FROM console_users WHERE name = {mark}", (name,)),
        (f"DELETE FROM console_sessions WHERE user_name = {mark}", (name,)),
        (f"DELETE FROM console_preferences WHERE user_name = {mark}", (name,)),
    ]


# --- preferences ---------------------------------------------------------------------


def save_language(name: str, language: str, at: datetime, mark: str = "?") -> Statement:
    """Keep ``language`` as ``name``'s choice; "" forgets the choice."""
    if not language:
        return f"DELETE FROM console_preferences WHERE user_name = {mark}", (name,)
    sql = (
        "INSERT INTO console_preferences (user_name, language, updated_at)"
        f" VALUES ({mark}, {mark}, {mark})"
        " ON CONFLICT (user_name) DO UPDATE SET language = excluded.language,"
        " updated_at = excluded.updated_at"
    )
    return sql, (name, language, stamp(at))


def select_language(name: str, mark: str = "?") -> Statement:
    return f"SELECT language FROM console_preferences WHERE user_name = {mark}", (name,)


def decode_language(rows: Sequence[Sequence[Any]]) -> str:
    return str(rows[0][0]) if rows else ""


# --- sessions ----------------------------------------------------------------------


def insert_session(session: ConsoleSession, mark: str = "?") -> Statement:
    sql = (
        "INSERT INTO console_sessions"
        " (key, user_name, csrf_token, credential, created_at, seen_at)"
        f" VALUES ({mark}, {mark}, {mark}, {mark}, {mark}, {mark})"
    )
    return sql, (
        session.key,
        session.user,
        session.csrf_token,
        session.credential,
        stamp(session.created_at),
        stamp(session.seen_at),
    )


def select_session(key: str, mark: str = "?") -> Statement:
    sql = (
        "SELECT key, user_name, csrf_token, credential, created_at, seen_at"
        f" FROM console_sessions WHERE key = {mark}"
    )
    return sql, (key,)


def decode_session(row: Sequence[Any] | None) -> ConsoleSession | None:
    if row is None:
        return None
    key, user, csrf, credential, created, seen = row
    return ConsoleSession(
        str(key), str(user), str(csrf), str(credential), unstamp(created), unstamp(seen)
    )


def touch_session(key: str, seen_at: datetime, mark: str = "?") -> Statement:
    """Move the session's last request forward (never back: replicas race)."""
    when = stamp(seen_at)
    sql = f"UPDATE console_sessions SET seen_at = {mark} WHERE key = {mark} AND seen_at < {mark}"
    return sql, (when, key, when)


def delete_session(key: str, mark: str = "?") -> Statement:
    return f"DELETE FROM console_sessions WHERE key = {mark}", (key,)


def prune_sessions(created_before: datetime, seen_before: datetime, mark: str = "?") -> Statement:
    """Delete sessions past their lifetime or idle too long."""
    sql = f"DELETE FROM console_sessions WHERE created_at < {mark} OR seen_at < {mark}"
    return sql, (stamp(created_before), stamp(seen_before))


# --- failed sign-ins ---------------------------------------------------------------


def insert_failures(keys: Sequence[str], at: datetime, mark: str = "?") -> list[Statement]:
    when = stamp(at)
    sql = f"INSERT INTO console_login_failures (key, at) VALUES ({mark}, {mark})"
    return [(sql, (key, when)) for key in keys]


def forget_failures(before: datetime, mark: str = "?") -> Statement:
    return f"DELETE FROM console_login_failures WHERE at < {mark}", (stamp(before),)


def select_failures(keys: Sequence[str], since: datetime, mark: str = "?") -> Statement:
    """(key, at) of the failures under ``keys`` at or after ``since``, oldest first."""
    marks = ", ".join(mark for _ in keys)
    sql = (
        "SELECT key, at FROM console_login_failures"
        f" WHERE key IN ({marks}) AND at >= {mark} ORDER BY at"
    )
    return sql, (*keys, stamp(since))


def decode_failures(
    keys: Sequence[str], rows: Sequence[Sequence[Any]]
) -> dict[str, list[datetime]]:
    failures: dict[str, list[datetime]] = {key: [] for key in keys}
    for key, at in rows:
        failures[str(key)].append(unstamp(at))
    return failures


def clear_failures(key: str, mark: str = "?") -> Statement:
    return f"DELETE FROM console_login_failures WHERE key = {mark}", (key,)

"""``scout-sidecar user add|list|remove|passwd|role``: the console's stored users.

They read and write the store ``serve`` uses (``SCOUT_STORE_URL`` with
``SCOUT_STORE_PASSWORD`` or its ``_FILE``, else the SQLite file in
``SCOUT_DATA_DIR``), so a user added on one replica signs in on all of them.
A password comes from a terminal prompt (asked twice, never echoed), from the
first line of standard input (``--password-stdin``), from a file
(``--password-file``), or is generated (``--generate``: printed once, alone on
standard output, for scripts such as ``make up``). Passwords are never
printed otherwise, nor put in any message.

Exit status: 0 on success, 1 when the store cannot be used, 2 for a usage
error (a bad name, a short password, no such user, a user that exists).
The parser is in :mod:`ai_sidecar.subcommands`: this package starts the console.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ai_sidecar.cli import DATA_DIR_ENV, prepare_data_dir, store_settings_from
from ai_sidecar.clock import utc_now
from ai_sidecar.console.login.passwords import (
    PasswordError,
    check_strength,
    generate_password,
    hash_password,
)
from ai_sidecar.console.login.users import check_user_name
from ai_sidecar.errors import ConfigError
from ai_sidecar.settings import SidecarSettings
from ai_sidecar.store import ConsoleAccount, Store, StoreError

T = TypeVar("T")


class UsageError(Exception):
    """A mistake in the command line or its input; exit status 2."""


def read_password(args: argparse.Namespace) -> tuple[str, bool]:
    """The new password, and whether it was generated (then it must be shown)."""
    if args.generate:
        return generate_password(), True
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif args.password_file is not None:
        try:
            # utf-8-sig: a file saved "UTF-8 with BOM" (Windows editors) must not
            # put an invisible U+FEFF in front of the password nobody can type.
            text = args.password_file.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise UsageError(
                f"--password-file: cannot read {args.password_file}: {reason}"
            ) from None
        password = text.splitlines()[0] if text else ""
    else:
        if not sys.stdin.isatty():
            raise UsageError(
                "no terminal to ask for the password: use --password-stdin, "
                "--password-file or --generate"
            )
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != password:
            raise UsageError("the two passwords differ; nothing was changed")
    try:
        check_strength(password)
    except PasswordError as exc:
        raise UsageError(str(exc)) from None
    return password, False


def _name(value: str) -> str:
    try:
        return check_user_name(value)
    except ValueError as exc:
        raise UsageError(f"{value[:64]!r}: {exc}") from None


def _run(action: Callable[[Store], Awaitable[T]], *, create: bool) -> T:
    settings: SidecarSettings = store_settings_from(os.environ)
    if settings.store_location is None:
        if create:
            prepare_data_dir(settings.data_dir)
        elif not settings.database_path.is_file():
            raise ConfigError(
                f"{DATA_DIR_ENV}: no store at {settings.database_path} "
                "(set it to the data directory the sidecar uses)"
            )

    async def run() -> T:
        from ai_sidecar.components import open_store  # the whole pipeline: only when run

        store = await open_store(settings, worker=True)
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _command(body: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Map the errors of ``body`` to a one-line message and an exit status."""

    def run(args: argparse.Namespace) -> int:
        try:
            return body(args)
        except (UsageError, ConfigError) as exc:
            print(f"scout-sidecar: {exc}", file=sys.stderr)
            return 2
        except StoreError as exc:
            print(f"scout-sidecar: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("scout-sidecar: interrupted; nothing was changed", file=sys.stderr)
            return 130

    return run


@_command
def run_add(args: argparse.Namespace) -> int:
    name = _name(args.name)
    password, generated = read_password(args)
    account = ConsoleAccount(name, args.role, hash_password(password))

    async def add(store: Store) -> ConsoleAccount | None:
        # Names compare ignoring case: "Alice" beside "alice" would be one sign-in.
        existing = await store.get_console_user(name)
        if existing is None:
            await store.save_console_user(account, utc_now())
        return existing

    existing = _run(add, create=True)
    if existing is not None:
        spelt = "" if existing.name == name else f" as {existing.name!r} (names ignore case)"
        raise UsageError(f"user {name!r} exists{spelt}: use 'user passwd' or 'user remove'")
    if generated:
        print(password)
    print(f"added {args.role} {name!r}", file=sys.stderr)
    return 0


@_command
def run_list(args: argparse.Namespace) -> int:
    users = _run(lambda store: store.list_console_users(), create=False)
    for user in users:
        print(f"{user.name}\t{user.role}")
    return 0


@_command
def run_remove(args: argparse.Namespace) -> int:
    name = _name(args.name)

    async def remove(store: Store) -> str | None:
        existing = await store.get_console_user(name)
        if existing is None or not await store.remove_console_user(existing.name):
            return None
        return existing.name

    removed = _run(remove, create=False)
    if removed is None:
        raise UsageError(f"no stored user {name!r}")
    print(f"removed {removed!r} and ended their sessions", file=sys.stderr)
    return 0


@_command
def run_passwd(args: argparse.Namespace) -> int:
    name = _name(args.name)
    password, generated = read_password(args)
    password_hash = hash_password(password)

    async def change(store: Store) -> bool:
        existing = await store.get_console_user(name)
        if existing is None:
            return False
        # Sessions opened with the old hash no longer match it: they end.
        updated = ConsoleAccount(existing.name, existing.role, password_hash)
        await store.save_console_user(updated, utc_now())
        return True

    if not _run(change, create=False):
        raise UsageError(f"no stored user {name!r}")
    if generated:
        print(password)
    print(f"changed the password of {name!r}; their sessions have ended", file=sys.stderr)
    return 0


@_command
def run_role(args: argparse.Namespace) -> int:
    name = _name(args.name)

    async def change(store: Store) -> str | None:
        existing = await store.get_console_user(name)
        if existing is None:
            return None
        if existing.role != args.role:
            # The hash is kept, so the user's sessions stay open; every request
            # reads the role from the store, so the new one applies at once.
            updated = ConsoleAccount(existing.name, args.role, existing.password_hash)
            await store.save_console_user(updated, utc_now())
        return existing.role

    before = _run(change, create=False)
    if before is None:
        raise UsageError(f"no stored user {name!r}")
    if before == args.role:
        print(f"{name!r} is already {args.role}; nothing was changed", file=sys.stderr)
    else:
        print(f"{name!r} is now {args.role} (was {before})", file=sys.stderr)
    return 0

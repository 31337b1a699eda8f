"""Signing in and out, and finding the session a request carries.

:class:`ConsoleLogin` is the console's :class:`~ai_sidecar.console.session.SessionBackend`.
A session is a row in the store (shared by replicas), found by the SHA-256 of
the session cookie's 256 random bits (``__Host-scout_session`` when Secure,
else ``scout_session``); it ends ``session_lifetime``
after sign-in, after ``idle_timeout`` without a request, at sign-out, when its
user is removed, or when the user's password changes (the row keeps a digest
of the hash it was opened with). Every sign-in makes a new id, so an id planted
in a browser before sign-in (session fixation) is never the one after it.

Failed sign-ins are counted in the store per user name typed and per client
address. ``max_failures`` for a name, or ``max_failures_per_address`` from an
address, within ``window`` refuse every attempt under that key for
``lockout``, whether the name exists or not; an unknown name is checked
against a dummy hash, so neither the answer nor its time tells which names
exist. A name is kept as its SHA-256, and only when it could be a user's name
(:data:`~.users.USER_NAME`): anything else can never sign in, so counting it
protects nothing, and it is most often a password typed in the wrong box,
whose unsalted digest would be a gift to whoever reads the database. Every
sign-in forgets the failures that no longer count.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address, ip_address

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from ai_sidecar.clock import utc_now
from ai_sidecar.config import ConsoleConfig
from ai_sidecar.console.login.passwords import CONCURRENT_CHECKS, needs_rehash, rehash, verify
from ai_sidecar.console.login.users import USER_NAME, UserDirectory, folded
from ai_sidecar.console.session import ConsoleUser, Role
from ai_sidecar.console.words import N_
from ai_sidecar.store import Store, StoreError
from ai_sidecar.store.protocol import ConsoleAccount, ConsoleSession

log = logging.getLogger("ai_sidecar.console.login")

SESSION_COOKIE = "scout_session"
# The session cookie when it is Secure: browsers take a __Host- cookie only if it
# is Secure, for Path=/ and without Domain, so a sibling subdomain (or a plain
# HTTP response) cannot plant one. Only this name is read then: a planted
# scout_session would otherwise still be heard.
HOST_SESSION_COOKIE = "__Host-" + SESSION_COOKIE
COOKIE_PATH = "/console"
# 32 random bytes: 256 bits, 43 URL-safe characters.
TOKEN_BYTES = 32
MAX_COOKIE_CHARS = 64
# How stale a session's last-seen time may get before a request writes it:
# page views do not each cost a write.
MAX_TOUCH_INTERVAL = timedelta(minutes=1)


class Outcome(StrEnum):
    """How a sign-in attempt ended (the ``outcome`` label of the metric)."""

    SUCCESS = "success"
    FAILURE = "failure"
    LOCKED = "locked"
    # The login form's CSRF token was missing or wrong.
    REFUSED = "refused"


def create_login_metric(registry: CollectorRegistry) -> Counter:
    counter = Counter(
        "scout_console_logins",
        "Console sign-in attempts by outcome (success, failure, locked, refused: "
        "the form's CSRF token was missing or wrong).",
        ["outcome"],
        registry=registry,
    )
    for outcome in Outcome:
        counter.labels(outcome.value)
    return counter


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode(errors="surrogateescape")).hexdigest()


def credential_of(account: ConsoleAccount) -> str:
    """What a session remembers of the password hash it was opened with."""
    return digest(account.password_hash)


@dataclass(frozen=True, slots=True)
class SignIn:
    """The result of :meth:`ConsoleLogin.sign_in`: a new session, or why there is none."""

    outcome: Outcome
    # SUCCESS: the cookie's value and the user.
    session_id: str | None = None
    user: ConsoleUser | None = None
    # LOCKED: how long until another attempt is heard.
    retry_after: timedelta | None = None


def locked_until(
    failures: Sequence[datetime], limit: int, window: timedelta, lockout: timedelta
) -> datetime | None:
    """When a lock set by ``limit`` failures (oldest first) within ``window`` lifts, if any."""
    until: datetime | None = None
    for first, last in zip(failures, failures[limit - 1 :], strict=False):
        if last - first <= window:
            until = last + lockout
    return until


def _address(text: str | None) -> IPv4Address | IPv6Address | None:
    if text is None:
        return None
    try:
        address = ip_address(text)
    except ValueError:
        return None
    # An IPv4 client of a dual-stack socket shows as ::ffff:a.b.c.d.
    mapped = address.ipv4_mapped if isinstance(address, IPv6Address) else None
    return mapped or address


@contextlib.contextmanager
def store_available() -> Iterator[None]:
    """The store failing (PostgreSQL restarting, a full disk) is a 503 page, not a 500."""
    try:
        yield
    except StoreError as exc:
        log.warning("console sign-in unavailable: %s", exc)
        raise web.HTTPServiceUnavailable(
            text=N_(
                "Sign-in is unavailable for a moment (the store cannot be reached). "
                "Try again shortly."
            )
        ) from None


class ConsoleLogin:
    """Sessions in the store, users from the file and the store, lockout, the metric.

    ``clock`` is public so tests can move time.
    """

    def __init__(
        self,
        store: Store,
        config: ConsoleConfig,
        users: UserDirectory,
        logins: Counter,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self._config = config
        self.users = users
        self._logins = logins
        # Held from the lockout check to the failure's record: parallel attempts
        # cannot all pass the check before any failure counts.
        self._turns = asyncio.Semaphore(CONCURRENT_CHECKS)
        self.clock = clock
        self._touch_interval = min(MAX_TOUCH_INTERVAL, config.idle_timeout / 20)

    # --- the SessionBackend -----------------------------------------------------

    async def user_for(self, request: web.Request) -> ConsoleUser | None:
        with store_available():
            return await self._user_for(request)

    async def _user_for(self, request: web.Request) -> ConsoleUser | None:
        key = self.session_key(request)
        if key is None:
            return None
        session = await self._store.get_console_session(key)
        if session is None:
            return None
        now = self.clock()
        account = await self.users.find(session.user)
        if (
            self._expired(session, now)
            or account is None
            or credential_of(account) != session.credential
        ):
            await self._store.close_console_session(key)
            return None
        if now - session.seen_at >= self._touch_interval:
            await self._store.touch_console_session(key, now)
        return ConsoleUser(account.name, Role(account.role), session.csrf_token)

    def _expired(self, session: ConsoleSession, now: datetime) -> bool:
        return (
            now - session.created_at >= self._config.session_lifetime
            or now - session.seen_at >= self._config.idle_timeout
        )

    def session_key(self, request: web.Request) -> str | None:
        """The store's key of the session id the request's cookie carries, if any."""
        name, _ = self.session_cookie(request)
        value = request.cookies.get(name, "")
        if not value or len(value) > MAX_COOKIE_CHARS:
            return None
        return digest(value)

    # --- signing in and out -------------------------------------------------------

    async def sign_in(self, name: str, password: str, address: str | None) -> SignIn:
        with store_available():
            return await self._sign_in(name, password, address)

    async def _sign_in(self, name: str, password: str, address: str | None) -> SignIn:
        limit = self._config.login_limit
        could_be_user = USER_NAME.fullmatch(name) is not None
        # Counted as names compare: Alice's failures are alice's.
        name_key = "user:" + digest(folded(name))
        address_key = f"address:{address or 'unknown'}"
        keys = [name_key, address_key] if could_be_user else [address_key]
        remembered = limit.window + limit.lockout
        async with self._turns:
            now = self.clock()
            failures = await self._store.login_failures(keys, now - remembered)
            ends = [
                locked_until(
                    failures.get(name_key, []), limit.max_failures, limit.window, limit.lockout
                ),
                locked_until(
                    failures[address_key],
                    limit.max_failures_per_address,
                    limit.window,
                    limit.lockout,
                ),
            ]
            until = max((end for end in ends if end is not None and end > now), default=None)
            if until is not None:
                locked = SignIn(Outcome.LOCKED, retry_after=until - now)
                return self._count(locked, address, None)
            account = await self.users.find(name) if could_be_user else None
            matches = await verify(None if account is None else account.password_hash, password)
            if account is None or not matches:
                await self._store.record_login_failure(keys, now, forget_before=now - remembered)
                return self._count(SignIn(Outcome.FAILURE), address, account)
        await self._store.clear_login_failures(name_key)
        # Record nothing, forget what no longer counts: a name typed by mistake
        # (maybe a password) is not kept until someone next fails.
        await self._store.record_login_failure([], now, forget_before=now - remembered)
        account = await self._upgrade_hash(account, password, now)
        await self._store.prune_console_sessions(
            now - self._config.session_lifetime, now - self._config.idle_timeout
        )
        session_id = new_token()
        session = ConsoleSession(
            key=digest(session_id),
            user=account.name,
            csrf_token=new_token(),
            credential=credential_of(account),
            created_at=now,
            seen_at=now,
        )
        await self._store.open_console_session(session)
        user = ConsoleUser(account.name, Role(account.role), session.csrf_token)
        return self._count(SignIn(Outcome.SUCCESS, session_id, user), address, account)

    async def _upgrade_hash(
        self, account: ConsoleAccount, password: str, now: datetime
    ) -> ConsoleAccount:
        """A stored user's bcrypt (or weaker argon2) hash, made again as argon2id now that
        the password is known; the file's users are the file's business. Only over
        the hash that was checked: a user removed (or given a new password) while
        it was made stays so, and the session opened with the old one then ends."""
        if account.name in self.users.file_users or not needs_rehash(account.password_hash):
            return account
        upgraded = ConsoleAccount(
            account.name, account.role, await asyncio.to_thread(rehash, password)
        )
        replaced = await self._store.replace_console_password_hash(
            account.name, account.password_hash, upgraded.password_hash, now
        )
        return upgraded if replaced else account

    def _count(self, result: SignIn, address: str | None, account: ConsoleAccount | None) -> SignIn:
        self._logins.labels(result.outcome.value).inc()
        # Only a known user's name is logged: an unknown "name" may be a password
        # typed in the wrong box.
        log.info(
            "console sign-in: %s",
            result.outcome.value,
            extra={"user": None if account is None else account.name, "address": address},
        )
        return result

    def refused(self, address: str | None) -> None:
        """Count a sign-in refused for its form's CSRF token."""
        self._count(SignIn(Outcome.REFUSED), address, None)

    async def sign_out(self, request: web.Request) -> None:
        key = self.session_key(request)
        if key is not None:
            with store_available():
                await self._store.close_console_session(key)

    # --- the client's address -----------------------------------------------------

    def client_address(self, request: web.Request) -> str | None:
        """The address failures are counted under: the peer's, or, when the peer is
        one of ``trusted_proxies``, the nearest address in X-Forwarded-For that is
        not (hops a client wrote itself lie left of it, and are never read)."""
        peer = request.remote
        nearest = _address(peer)
        if nearest is None or not self._trusted(nearest):
            return peer
        hops = ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")
        for hop in reversed([h.strip() for h in hops if h.strip()]):
            address = _address(hop)
            if address is None:
                break  # no client's address: count it under the last proxy
            nearest = address
            if not self._trusted(address):
                break
        return str(nearest)

    def _trusted(self, address: IPv4Address | IPv6Address) -> bool:
        return any(address in network for network in self._config.trusted_proxies)

    # --- cookies ------------------------------------------------------------------

    def secure(self, request: web.Request) -> bool:
        return request.secure or self._config.secure_cookies

    def session_cookie(self, request: web.Request) -> tuple[str, str]:
        """The session cookie's name and path for ``request``: ``__Host-`` and ``/`` when
        it is Secure, else ``/console`` alone."""
        if self.secure(request):
            return HOST_SESSION_COOKIE, "/"
        return SESSION_COOKIE, COOKIE_PATH

    def set_session_cookie(
        self, request: web.Request, response: web.StreamResponse, value: str
    ) -> None:
        name, path = self.session_cookie(request)
        response.set_cookie(
            name,
            value,
            path=path,
            max_age=int(self._config.session_lifetime.total_seconds()),
            httponly=True,
            samesite="Strict",
            secure=self.secure(request),
        )
        if name != SESSION_COOKIE:
            # A session cookie of an older version (or planted), never read again.
            response.del_cookie(SESSION_COOKIE, path=COOKIE_PATH)

    def clear_session_cookie(self, request: web.Request, response: web.StreamResponse) -> None:
        name, path = self.session_cookie(request)
        # A browser takes the deletion of a __Host- cookie only with its attributes.
        response.del_cookie(name, path=path, secure=self.secure(request) or None)

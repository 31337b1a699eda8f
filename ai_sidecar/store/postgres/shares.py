"""Anomaly shares claimed through PostgreSQL: replicas split the series without an index each.

With ``anomaly.shard: {index: auto, count: n}`` every replica's anomaly loop
claims shares of the series (:mod:`ai_sidecar.anomaly.shards`) as session
advisory locks, as the worker lease is held (:mod:`.lease`), on a connection
of its own:

- each replica holds :data:`MEMBERS_LOCK` *shared*, so the number of its
  holders is the number of replicas claiming (read from ``pg_locks``);
- share ``i`` is the exclusive lock ``SHARE_LOCKS + i``; every
  :data:`CLAIM_INTERVAL` a replica gives back the shares it holds beyond an
  even split (``ceil(n / replicas)``) and tries the free ones up to it, so
  the replicas' shares are disjoint (a lock has one holder) and, once a round
  has passed on each, cover all ``n``;
- a share given back stops being scored at once but stays locked while the
  caller says its rows are still in use (its scorer exports them until its
  next cycle): only then is it unlocked, so no other replica scores it
  while they are still exported;
- a replica that dies loses its session, the server releases its locks (at
  once on a reset connection; after the TCP keepalives give up, 8 s; or after
  :data:`IDLE_SESSION_TIMEOUT` for a stopped one), and the others claim its
  shares at their next round: well within a minute.

A share is scored only :data:`PROOF_WINDOW` after it was locked: its lock is
free as soon as its holder's session ends (terminated, the database
restarting), but that holder scores it until its next round fails, within
its proof window.

A round that fails (the database unreachable, restarting) gives every share
up at once: a replica that cannot prove it holds a share must not score it,
or a series could be exported twice. A round that does not answer is
abandoned before :data:`PROOF_WINDOW` has passed since the last one that
did, so a replica cut off from the server has given its shares up before the
server can end its session and hand them on. It claims again when the
database answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Collection
from typing import Any

import psycopg
from psycopg import AsyncConnection

from ai_sidecar.store.postgres.engine import (
    LOCK_CLASS,
    SERVER_GIVE_UP,
    Location,
    failure_reason,
)
from ai_sidecar.store.protocol import StoreError

log = logging.getLogger("ai_sidecar.store.postgres.shares")

MEMBERS_LOCK = 4
# Share i is the lock SHARE_LOCKS + i; anomaly.shard.count is at most 1000.
SHARE_LOCKS = 1000
CLAIM_INTERVAL = 3.0
ROUND_TIMEOUT = 2.0
# The server ends the claims' session after this long without a round (a
# stopped replica whose kernel still answers keepalives): three rounds missed.
IDLE_SESSION_TIMEOUT = 3 * CLAIM_INTERVAL
# How long a round proves the shares held: the server cannot end the session,
# and hand its locks on, sooner than SERVER_GIVE_UP after a round reached it
# (or IDLE_SESSION_TIMEOUT after it ended). Shares not proven again within it
# are given up, with two seconds left for the scorer to drop their rows.
PROOF_WINDOW = min(SERVER_GIVE_UP, IDLE_SESSION_TIMEOUT) - 2.0

_REPLICAS = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND classid = %s AND objid = %s AND objsubid = 2"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


class ShareClaims:
    """This replica's claimed shares of ``count``, on a connection of its own."""

    def __init__(self, location: Location, count: int, *, settle: float = PROOF_WINDOW) -> None:
        self._location = location
        self._count = count
        self._settle = settle
        self._conn: AsyncConnection[Any] | None = None
        # Shares locked by this session; those leaving are given back, not scored,
        # and unlocked once no longer in use.
        self._held: set[int] = set()
        self._leaving: set[int] = set()
        # When (loop time) each share held was locked: scored once settled.
        self._locked_at: dict[int, float] = {}
        # When (loop time) the last round that answered began.
        self._proven_at = -math.inf
        self.replicas = 0

    @property
    def held(self) -> frozenset[int]:
        """The shares to score: locked by this replica ``settle`` seconds ago or more, and
        not being given back."""
        now = asyncio.get_running_loop().time()
        return frozenset(
            share
            for share in self._held - self._leaving
            if self._locked_at.get(share, now) + self._settle <= now
        )

    def remaining(self) -> float:
        """Seconds the shares held are still proven for (0 when none are held)."""
        if not self._held:
            return 0.0
        return max(0.0, self._proven_at + PROOF_WINDOW - asyncio.get_running_loop().time())

    async def claim(self, in_use: Collection[int] = frozenset()) -> frozenset[int]:
        """One round toward an even split; the shares to score after it (none on failure).

        Shares given back are unlocked only once not ``in_use`` (rows of them
        the caller still exports), at this round or a later one.

        A round that does not end within ROUND_TIMEOUT, or before the shares
        held stop being proven (PROOF_WINDOW after the last round began), is
        abandoned, not awaited:
        cancelling a query first asks the server to cancel it, which against a
        silent host takes longer than the server takes to hand the locks on.
        What it would have claimed is never used, and closing its connection
        gives it up.
        """
        began = asyncio.get_running_loop().time()
        budget = min(ROUND_TIMEOUT, self.remaining()) if self._held else ROUND_TIMEOUT
        attempt = asyncio.ensure_future(
            self._round(set(self._held), set(self._leaving), frozenset(in_use))
        )
        done, _ = await asyncio.wait({attempt}, timeout=budget)
        try:
            if not done:
                attempt.add_done_callback(_forget_outcome)
                attempt.cancel()
                raise TimeoutError(f"no answer within {budget:g}s")
            self._held, self._leaving = attempt.result()
            self._locked_at = {share: self._locked_at.get(share, began) for share in self._held}
            self._proven_at = began
        except (StoreError, psycopg.Error, OSError, TimeoutError) as exc:
            if self._conn is not None or self._held:
                reason = str(exc) if isinstance(exc, StoreError) else failure_reason(exc)
                log.warning(
                    "anomaly shares given up: the store does not answer",
                    extra={"store": self._location.name, "reason": reason},
                )
            await self.release()
        return self.held

    async def _round(
        self, held: set[int], leaving: set[int], in_use: frozenset[int]
    ) -> tuple[set[int], set[int]]:
        """``held`` and ``leaving`` after giving back what passes an even split (unlocking
        what is not ``in_use``) and taking free shares."""
        conn = self._conn
        if conn is None or conn.closed:
            held, leaving = set(), set()
            self._locked_at.clear()
            conn = await self._location.connect(application_name="scout-sidecar-shares")
            self._conn = conn
            await conn.execute(f"SET idle_session_timeout = {round(IDLE_SESSION_TIMEOUT * 1000)}")
            await conn.execute("SELECT pg_advisory_lock_shared(%s, %s)", (LOCK_CLASS, MEMBERS_LOCK))
        cur = await conn.execute(_REPLICAS, (LOCK_CLASS, MEMBERS_LOCK))
        row = await cur.fetchone()
        self.replicas = max(1, int(row[0]) if row else 1)
        fair = math.ceil(self._count / self.replicas)
        scored = held - leaving
        leaving.update(sorted(scored, reverse=True)[: max(0, len(scored) - fair)])
        # Short of an even split (a replica left): what is still locked comes back first.
        for share in sorted(leaving)[: max(0, fair - len(held - leaving))]:
            leaving.discard(share)
        for share in sorted(leaving - in_use):
            await conn.execute(
                "SELECT pg_advisory_unlock(%s, %s)", (LOCK_CLASS, SHARE_LOCKS + share)
            )
            held.discard(share)
            leaving.discard(share)
        for share in range(self._count):
            if len(held - leaving) >= fair:
                break
            if share in held:
                continue
            cur = await conn.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, SHARE_LOCKS + share)
            )
            taken = await cur.fetchone()
            if taken is not None and taken[0]:
                held.add(share)
        return held, leaving

    async def release(self) -> None:
        """Give every share up (closing the connection releases its locks)."""
        conn, self._conn = self._conn, None
        self._held.clear()
        self._leaving.clear()
        self._locked_at.clear()
        if conn is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await conn.close()


def _forget_outcome(task: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned round's outcome, so asyncio does not report it."""
    if not task.cancelled():
        task.exception()

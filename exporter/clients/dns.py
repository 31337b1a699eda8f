"""Name lookups that cannot starve the rest of the exporter.

``loop.getaddrinfo`` runs on asyncio's default thread pool, a handful of threads
shared with everything else. A few device names whose DNS server never answers
would hold every thread, and scrapes of other devices, even by IP address, would
then wait behind them. So:

* an IP address is parsed, never looked up;
* names are looked up on threads of their own, at most four at a time; they are
  daemon threads, so a lookup stuck on a dead DNS server never holds up exit;
* one lookup per name runs at a time, and concurrent callers share it;
* answers are kept for a minute (failures for ten seconds), which also bounds how
  long a device keeps an old address after its DNS record changes; at most
  ``MAX_ANSWERS`` of them, the oldest going first (callers choose the names).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from functools import cache
from typing import Any

AddrInfo = tuple[Any, ...]

LOOKUP_THREADS = 4
ANSWER_SECONDS = 60.0
FAILURE_SECONDS = 10.0
MAX_ANSWERS = 100_000


class Resolver:
    def __init__(self, threads: int = LOOKUP_THREADS) -> None:
        self._threads = threads
        self._slots: asyncio.Semaphore | None = None
        self._answers: dict[tuple[object, ...], tuple[float, list[AddrInfo] | OSError]] = {}
        self._pending: dict[tuple[object, ...], asyncio.Future[list[AddrInfo]]] = {}

    async def getaddrinfo(
        self, host: str, port: int | None, *, type: int = 0, proto: int = 0
    ) -> list[AddrInfo]:
        """``socket.getaddrinfo``'s answer; raises ``socket.gaierror`` like it."""
        numeric = _numeric(host, port, type, proto)
        if numeric is not None:
            return numeric
        key = (host, port, type, proto)
        kept = self._answers.get(key)
        if kept is not None and kept[0] > time.monotonic():
            if isinstance(kept[1], OSError):
                raise kept[1]
            return kept[1]
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = asyncio.ensure_future(self._lookup(key))
            pending.add_done_callback(lambda _: self._pending.pop(key, None))
        # shield: one caller giving up (its deadline) must not cancel the shared lookup.
        return await asyncio.shield(pending)

    async def _lookup(self, key: tuple[object, ...]) -> list[AddrInfo]:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._threads)
        async with self._slots:
            try:
                infos = await _in_daemon_thread(key)
            except OSError as exc:
                self._keep(key, (time.monotonic() + FAILURE_SECONDS, exc))
                raise
        self._keep(key, (time.monotonic() + ANSWER_SECONDS, infos))
        return infos

    def _keep(
        self, key: tuple[object, ...], answer: tuple[float, list[AddrInfo] | OSError]
    ) -> None:
        answers = self._answers
        answers.pop(key, None)  # put last: the dict's order is the order of lookups
        answers[key] = answer
        if len(answers) > MAX_ANSWERS:
            del answers[next(iter(answers))]


@cache
def shared_resolver() -> Resolver:
    """The process's resolver, shared by every SNMP session and probe.

    One per process, as asyncio's default executor is: the point is one bounded
    pool for all lookups. Its threads start on first use, not at import.
    """
    return Resolver()


async def _in_daemon_thread(key: tuple[Any, ...]) -> list[AddrInfo]:
    host, port, type_, proto = key
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[list[AddrInfo]] = loop.create_future()

    def deliver(result: list[AddrInfo] | None, error: BaseException | None) -> None:
        if answer.done():
            return
        if error is not None:
            answer.set_exception(error)
        else:
            answer.set_result(result or [])

    def work() -> None:
        try:
            result, error = socket.getaddrinfo(host, port, type=type_, proto=proto), None
        # Not only OSError: a name idna cannot encode ("a..b", a label past 63
        # characters) raises UnicodeError, a NUL ValueError. Whatever it is must reach
        # the caller: a thread dying with it would leave the caller waiting and the
        # lookup's slot taken for good, and four such names would stop every lookup.
        except Exception as exc:
            result, error = None, exc
        # The loop may be gone by the time a slow lookup ends.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(deliver, result, error)

    threading.Thread(target=work, name=f"dns {host}", daemon=True).start()
    return await answer


def _numeric(host: str, port: int | None, type_: int, proto: int) -> list[AddrInfo] | None:
    """The answer for an IP address, without a lookup; ``None`` for a name."""
    try:
        return socket.getaddrinfo(host, port, type=type_, proto=proto, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError, ValueError):
        return None

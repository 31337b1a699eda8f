"""What the app starts and closes: collectors and target scrapers that may own resources.

A collector or target scraper is built from the config, started when the app
starts (or when a reload brings in a new set), and closed before the app stops
or a reload replaces it, so a socket, thread or background task it owns never
outlives it, but for one a scrape in flight is still using: the SNMP scraper
closes such a session when that scrape is done (by its deadline), so a reload
does not fail it. Each object is started at most once and closed at most once: a
reload builds fresh ones rather than restarting closed ones. A fresh one that is a
``Successor`` takes over what its predecessor learned (the flow collector's
templates and counts) between the predecessor's ``close`` and its own ``start``.
When the process stops, one that is ``Interruptible`` is interrupted first: it
cuts its work in flight short (a WinRM scrape a minute from its deadline)
instead of holding the stop until that work ends.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

log = logging.getLogger(__name__)


class Lifecycle(Protocol):
    """Started once before use and closed once after; both may be no-ops."""

    async def start(self) -> None:
        """Acquire what the object owns (bind a socket, start a task or thread).

        A ``start`` that raises leaves nothing behind: it is not closed after.
        """
        ...

    async def close(self) -> None:
        """Release it; must not raise for a resource that is already gone."""
        ...


@runtime_checkable
class Successor(Protocol):
    """An object that a reload's replacement of it can go on from."""

    def take_over(self, previous: object) -> None:
        """Keep what ``previous`` (closed, never to be used again) learned that is still
        valid; anything that is not of its own kind is ignored."""
        ...


@runtime_checkable
class Interruptible(Protocol):
    """An object whose work in flight a stop of the process cuts short."""

    def interrupt(self) -> None:
        """The process stops: end the work in flight now, not at its deadline, and
        start no more (``close`` follows). Never blocks, never raises."""
        ...

    def busy(self) -> bool:
        """Whether work is still in flight (or queued): a stop must be able to
        reach the object until it is not."""
        ...


def interrupt_all(parts: Iterable[object]) -> None:
    """Interrupt each of ``parts`` that is ``Interruptible``."""
    for part in parts:
        if isinstance(part, Interruptible):
            part.interrupt()


class NoResources:
    """A ``Lifecycle`` with nothing to acquire or release."""

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


async def start_all(parts: Sequence[Lifecycle]) -> None:
    """Start ``parts`` in order; if one fails, close those already started and re-raise."""
    started: list[Lifecycle] = []
    try:
        for part in parts:
            await part.start()
            started.append(part)
    except BaseException:
        await close_all(reversed(started))
        raise


def hand_over(successors: Mapping[str, object], predecessors: Mapping[str, object]) -> None:
    """Let each of ``successors`` that is a ``Successor`` take over from the closed
    predecessor of the same name, if there is one."""
    for name, successor in successors.items():
        previous = predecessors.get(name)
        if previous is not None and isinstance(successor, Successor):
            successor.take_over(previous)


async def close_all(parts: Iterable[Lifecycle]) -> None:
    """Close every part, even when one fails: a failure is logged, never raised."""
    for part in parts:
        try:
            await part.close()
        except Exception:  # lifecycle boundary: one bad close must not leak the others
            log.exception("closing %r failed", part)

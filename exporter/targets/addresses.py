"""The addresses a target's host name resolves to, for ``scout_target_address_info``.

A multi-target scrape of a target given by name (``win-26``,
``https://app39.corp.example/health``) adds one series per address the name
resolves to::

    # HELP scout_target_address_info ...
    # TYPE scout_target_address_info gauge
    scout_target_address_info{address="10.4.0.172"} 1

so that the sidecar's topology can take a host polled by name and one checked
by address as the same machine. A target written as an address exports nothing:
its ``instance`` already says the address.

The scrape must not wait for DNS, so the answers are kept per process in an
``AddressCache`` shared by every kind (the app holds it):

* an answer is fresh for ``FRESH_SECONDS``; a stale one is still used while a
  lookup in the background replaces it;
* when lookups fail, the last good answer is kept for up to ``KEEP_SECONDS``
  after it was got: the sidecar needs the rows exactly when things fail, a DNS
  outage included;
* a name that does not resolve is not asked again for ``NEGATIVE_SECONDS``;
* at most ``MAX_ENTRIES`` names are kept, the least recently answered dropped first;
* at most ``MAX_LOOKUPS`` lookups are under way at once: while DNS hangs, a
  scrape of yet another name goes without its rows rather than leave one more
  task waiting;
* the first lookup of a name is waited for only until the scrape's deadline;
  if it has not answered by then, the scrape goes without the rows and the
  lookup finishes in the background.

Lookups go through the process's bounded resolver (``exporter.clients.dns``),
as the probers' do; where the allow-lists already resolved the name, their
addresses are stored instead (``put``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from exporter.clients.probe_net import ResolveError
from exporter.clients.probe_net import lookup as system_lookup

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Lookup = Callable[[str], Awaitable[Sequence[IPAddress]]]

ADDRESS_METRIC = "scout_target_address_info"
ADDRESS_HELP = (
    "An address the target's host name resolved to (one series each, value 1; none for a "
    "target given as an address). The sidecar's topology uses it to take a host polled by "
    "name and one checked by address as one device."
)
ADDRESS_LABEL = "address"

FRESH_SECONDS = 300.0
KEEP_SECONDS = 3600.0
NEGATIVE_SECONDS = 30.0
MAX_ENTRIES = 100_000
MAX_LOOKUPS = 1_000
MAX_ADDRESSES = 8
# A background lookup is given up after this; the resolver's own timeouts are shorter.
LOOKUP_TIMEOUT_SECONDS = 30.0


def is_name(host: str) -> bool:
    """Whether ``host`` is a name to look up rather than an address literal.

    Cheap, with no parse, since every scrape asks: an IPv6 address has a
    ``:``, which no name has, and every spelling of an IPv4 address ends in a
    number (``10.4.0.172``, and the C resolver's ``127.1``), which no DNS name's
    last label is (no top-level domain is numeric; the allow-lists refuse such
    names for the same reason).
    """
    if not host or ":" in host:
        return False
    last = host.rstrip(".").rpartition(".")[2]
    return not (last.isdigit() or last[:2].lower() == "0x")


def address_rows(addresses: Iterable[IPAddress]) -> tuple[str, ...]:
    """The label values exported: distinct, IPv4 first then IPv6, each in order, at most 8.

    ``str`` of an IPv6 address is its compressed form.
    """
    distinct = sorted(set(addresses), key=lambda address: (address.version, address))
    return tuple(str(address) for address in distinct[:MAX_ADDRESSES])


@dataclass(slots=True)
class _Entry:
    addresses: tuple[str, ...]  # empty: the name did not resolve (a negative entry)
    fresh_until: float  # until then, no lookup
    good_until: float  # until then, the addresses are exported (stale or not)


class AddressCache:
    """Name → addresses, answered from memory and refreshed in the background.

    ``lookup`` resolves a name (raising on failure) and ``clock`` tells the
    time; both are injected by tests. ``close`` stops the lookups under way.
    """

    def __init__(
        self,
        lookup: Lookup = system_lookup,
        *,
        clock: Callable[[], float] = time.monotonic,
        fresh_seconds: float = FRESH_SECONDS,
        keep_seconds: float = KEEP_SECONDS,
        negative_seconds: float = NEGATIVE_SECONDS,
        max_entries: int = MAX_ENTRIES,
        max_lookups: int = MAX_LOOKUPS,
        lookup_timeout: float = LOOKUP_TIMEOUT_SECONDS,
    ) -> None:
        self._lookup = lookup
        self._clock = clock
        self._fresh = fresh_seconds
        self._keep = keep_seconds
        self._negative = negative_seconds
        self._max_entries = max_entries
        self._max_lookups = max_lookups
        self._lookup_timeout = lookup_timeout
        # Insertion order is answer order: the first entry is the least recently answered.
        self._entries: dict[str, _Entry] = {}
        self._lookups: dict[str, asyncio.Task[None]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def cached(self, name: str) -> tuple[str, ...] | None:
        """What is known of ``name`` now, without waiting; ``None`` if nothing is.

        A stale answer is returned as it is, and a lookup started in the
        background to replace it; an empty tuple is a name that did not resolve.
        """
        entry = self._entries.get(name)
        if entry is None:
            return None
        now = self._clock()
        if now < entry.fresh_until:
            return entry.addresses
        if now < entry.good_until:
            self._start(name)
            return entry.addresses
        return None

    async def resolve(self, name: str, deadline: float) -> tuple[str, ...]:
        """``cached(name)``, or else what a lookup finds by ``deadline`` (``loop.time()``).

        A lookup that has not answered by then goes on in the background, and
        the answer is ``()`` for now.
        """
        known = self.cached(name)
        if known is not None:
            return known
        task = self._start(name)
        if task is None:
            return ()
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining > 0:
            # wait, not wait_for: the lookup is the cache's, and outlives this caller.
            await asyncio.wait((task,), timeout=remaining)
        return self.cached(name) or ()

    def put(self, name: str, addresses: Iterable[IPAddress]) -> tuple[str, ...]:
        """Store what ``name`` was found to resolve to elsewhere; returns the rows to export."""
        rows = address_rows(addresses)
        if rows:
            self._store(name, rows)
        return rows

    async def settled(self) -> None:
        """Wait until no lookup is under way (for tests and an orderly stop)."""
        while self._lookups:
            await asyncio.wait(tuple(self._lookups.values()))

    async def close(self) -> None:
        """Stop the lookups under way; what is stored stays."""
        tasks = tuple(self._lookups.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def _start(self, name: str) -> asyncio.Task[None] | None:
        """The lookup of ``name`` under way, or a new one: one per name at a time;
        ``None`` when ``max_lookups`` are under way already."""
        task = self._lookups.get(name)
        if task is not None and not task.done():
            return task
        if len(self._lookups) >= self._max_lookups:
            return None
        task = asyncio.get_running_loop().create_task(self._look_up(name), name=f"address {name}")
        self._lookups[name] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._lookups.get(name) is done:
                del self._lookups[name]

        task.add_done_callback(forget)
        return task

    async def _look_up(self, name: str) -> None:
        rows: tuple[str, ...] = ()
        try:
            async with asyncio.timeout(self._lookup_timeout):
                rows = address_rows(await self._lookup(name))
        except (ResolveError, TimeoutError) as exc:
            log.debug("looking up %r for %s: %s", name, ADDRESS_METRIC, exc)
        except Exception:  # a failed lookup costs the rows, never the scrapes
            log.exception("looking up %r for %s failed", name, ADDRESS_METRIC)
        self._store(name, rows)

    def _store(self, name: str, rows: tuple[str, ...]) -> None:
        now = self._clock()
        entry = self._entries.pop(name, None)
        if rows:
            entry = _Entry(rows, now + self._fresh, now + self._keep)
        elif entry is not None and entry.addresses and now < entry.good_until:
            # Failed, but the last good answer is kept until it is too old; ask again soon.
            entry.fresh_until = min(now + self._negative, entry.good_until)
        else:
            entry = _Entry((), now + self._negative, now + self._negative)
        self._entries[name] = entry
        while len(self._entries) > self._max_entries:
            del self._entries[next(iter(self._entries))]

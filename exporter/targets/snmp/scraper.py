"""One ``/snmp`` scrape: plan the walks of each module, reuse sessions and caches per device.

Per scrape and module:

1. one GET for the scalar metrics, the cache's uptime and its scalar validators;
2. one multi-column bulk walk of the columns read every time (counters, status),
   plus the cached columns (lookups, speeds) when the cache is not valid;
3. if a column validator (ifLastChange) moved while the cache looked valid, the
   cached columns are walked after all, so a flapped link's new speed shows now;
4. a fallback neighbour table (LLDP-V2-MIB) is walked only when the table it
   stands in for (LLDP-MIB) came back empty.

State kept per device (target, credentials, module): the max-repetitions that
worked last time, and the cache. Sessions are kept per device and credentials,
and closed after they sit idle. Nothing here is shared between devices, so a dead
device costs only its own deadline.

``SnmpScraper`` is the ``/snmp`` kind's ``TargetScraper``: started with the app
(it prunes idle sessions in the background) and closed with it or when a reload
replaces it. Self-metrics of a scrape, besides the handler's
``scout_snmp_scrape_duration_seconds``::

    scout_snmp_pdus_sent 31
    scout_snmp_retries 0
    scout_snmp_undecodable_datagrams 0   # from its address, answering no request
    scout_snmp_module_success{module="if_mib"} 1
    scout_snmp_module_duration_seconds{module="if_mib"} 0.2
    scout_snmp_max_repetitions{module="if_mib"} 25
    scout_snmp_cache_used{module="if_mib"} 1
    scout_snmp_device_reachable 1
    scout_snmp_neighbours_dropped{module="lldp"} 0   # modules with neighbour tables

A device that does not answer fails its modules (``scout_snmp_module_success``
0), not the request, so Prometheus keeps ``up`` for the exporter; it is
``scout_snmp_device_reachable`` 0 that says the device answered nothing at all
(the shipped ``SnmpDeviceUnreachable`` alert), while a device that answers with
an error (a wrong v3 password, a module it lacks), with an answer to a request
that does not decode past its request id, or too slowly to be walked by the
deadline stays reachable and only fails the module. A datagram that answers no
request (not SNMP, another community) is not an answer: anyone can forge the
device's address (``scout_snmp_undecodable_datagrams`` counts them). The
modules give up a little before the scrape's deadline (``module_deadline``),
with the PDUs they sent counted; if the handler still has to stop the scrape
(an event loop held past the deadline), the status families, and the samples
of modules read in full, are appended as it unwinds, so a 200 always carries
them. A scrape that waits behind another of the device for its whole budget
sends nothing; it is reachable if the device answered the other one meanwhile
(see ``ModuleProgress``). A v2c agent ignores a
wrong community, so that looks like an unreachable device: SNMP gives no way to
tell them apart.
"""

from __future__ import annotations

import asyncio
import heapq
import ipaddress
import logging
import random
import resource
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from exporter.clients.snmp import (
    Credentials,
    Oid,
    SnmpClient,
    SnmpError,
    SnmpSession,
    ValueKind,
    VarBind,
    undecodable_note,
)
from exporter.common.serving import ServerLimits
from exporter.config import SnmpAuth
from exporter.targets.kind import ScrapeJob
from exporter.targets.snmp.exposition import Family, merge_families
from exporter.targets.snmp.mapping import MetricMapper, RowLabels, oid_of
from exporter.targets.snmp.modules import SnmpModule
from exporter.targets.snmp.neighbours import (
    TABLES,
    fallback_columns,
    fallback_tables,
    neighbour_families,
)

log = logging.getLogger(__name__)

# Sessions and device state unused for this long are dropped (devices come and go).
IDLE_SECONDS = 3600.0
# A session to a device named in DNS is opened anew this often, to look it up again.
RESOLVE_SECONDS = 300.0
# Each session holds a socket: past this many, the least recently used is closed. One
# exporter polls 10,000 devices a minute (docs/benchmarks.md), so this leaves headroom
# above that. The open-files limit (raised to the hard limit at start) may allow fewer:
# see session_cap.
MAX_SESSIONS = 15_000
# Descriptors kept for what is not an SNMP socket or an HTTP connection: log and
# config files, the resolver, the event loop's own.
RESERVED_FILES = 256
# How often sessions and device state are checked for idleness.
PRUNE_SECONDS = 300.0


def session_cap() -> int:
    """``MAX_SESSIONS``, or as many sockets as the open-files limit leaves, if fewer.

    The HTTP server may hold up to ``ServerLimits.connection_cap()`` connections
    (at the default ``--web.max-connections``) and ``RESERVED_FILES`` go to the
    rest; past the cap the least recently used session no scrape is using is
    closed, rather than a new socket failing with EMFILE. Neither the cap nor a
    reload closes a session under its scrape (a retired one closes when its
    scrape is done): while every session is in use, the count goes past
    the cap (by at most the sessions of the scrapes in flight, each of which
    holds an HTTP connection too) and comes back as they end. At a soft limit
    of 515 or less the cap is 1.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_SESSIONS
    room = soft - ServerLimits().connection_cap() - RESERVED_FILES
    cap = max(1, min(MAX_SESSIONS, room))
    if cap < MAX_SESSIONS:
        log.warning(
            "the open-files limit (%d) leaves room for %d SNMP %s, not %d: devices"
            " past that many share sockets in turn (least recently used closed first);"
            " raise the limit (ulimit -n, systemd LimitNOFILE=) to poll more at once",
            soft,
            cap,
            "session" if cap == 1 else "sessions",
            MAX_SESSIONS,
        )
    return cap


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int = 161

    @property
    def is_address(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class ModulePlan:
    """What to GET and walk for a module, worked out once from its definition."""

    def __init__(self, module: SnmpModule, *, wrap_large_counters: bool = True) -> None:
        self.module = module
        self.mapper = MetricMapper(module, wrap_large_counters=wrap_large_counters)
        cached_names = module.cache is not None
        # A metric without indexes is one instance, read by GET: (instance OID, metric OID),
        # once however many metrics read it (an HA state as info series and as a 0/1).
        self.scalar_reads = list(
            dict.fromkeys(
                ((*oid_of(m.oid), *oid_of(m.instance)), oid_of(m.oid))
                for m in module.metrics
                if not m.indexes
            )
        )
        self.scalars = [instance for instance, _ in self.scalar_reads]
        # Lookups without index labels name one instance too (a model name, sysName).
        self.scalar_lookups = list(
            dict.fromkeys(
                oid_of(lk.oid) for m in module.metrics for lk in m.lookups if not lk.labels
            )
        )
        fresh: dict[Oid, None] = {}
        cached: dict[Oid, None] = {}
        for metric in module.metrics:
            if not metric.indexes:
                continue
            column = oid_of(metric.oid)
            (cached if cached_names and metric.cached else fresh)[column] = None
            for lookup in metric.lookups:
                if lookup.labels:
                    (cached if cached_names else fresh)[oid_of(lookup.oid)] = None
        # Neighbour tables change with the cabling: walked on every scrape, except a
        # fallback (LLDP-V2-MIB), walked second and only when its table came back empty.
        self.neighbour_tables = [TABLES[name] for name in module.neighbours]
        fallbacks = fallback_tables(self.neighbour_tables)
        for table in self.neighbour_tables:
            if table not in fallbacks:
                fresh.update(dict.fromkeys(table.columns))
        self.neighbour_scalars = [oid for t in self.neighbour_tables for oid in t.local_scalars]
        self.fresh_columns = list(fresh)
        self.cached_columns = [c for c in cached if c not in fresh]
        self.lookup_columns = {
            oid_of(lk.oid) for m in module.metrics for lk in m.lookups if lk.labels
        }
        validators = [oid_of(v) for v in module.cache.validators] if module.cache else []
        # OID.0 is a scalar, read with GET; anything else is a column, walked every time.
        self.scalar_validators = [v for v in validators if v[-1] == 0]
        self.column_validators = [v for v in validators if v[-1] != 0]
        for column in self.column_validators:
            if column not in fresh:
                self.fresh_columns.append(column)
        self.uptime = oid_of(module.cache.uptime) if module.cache else None
        # Row labels come from the lookup columns only: when all of them are cached
        # (and none is read again as a neighbour table), the labels worked out on a
        # cache's first scrape hold for every scrape that reuses it.
        # (Neighbour tables read the cached columns too, so modules with them keep those.)
        self.keeps_row_labels = (
            self.uptime is not None
            and not self.scalar_lookups
            and not self.neighbour_tables
            and self.lookup_columns <= set(self.cached_columns)
        )
        # Of those, the columns read only by gauges and counters: their samples are kept
        # as numbers against the kept row labels. Info and state-set metrics add a label
        # per row, which kept would take more memory than the varbinds (at 10,000
        # devices, measured): their columns stay in the cache as varbinds, mapped anew.
        labelling = {
            oid_of(m.oid)
            for m in module.metrics
            if m.type not in ("gauge", "counter") or m.aggregate or m.static_labels
        }
        self.kept_columns = (
            [c for c in self.cached_columns if c not in labelling] if self.keeps_row_labels else []
        )
        self.row_columns = [c for c in self.cached_columns if c not in self.kept_columns]

    def gets(self) -> list[Oid]:
        extra = [*self.scalar_validators, *([self.uptime] if self.uptime else [])]
        return list(
            dict.fromkeys([*self.scalars, *self.scalar_lookups, *self.neighbour_scalars, *extra])
        )


# A cached lookup value: the type as a plain int, so the tuple holds nothing the
# garbage collector tracks (it stops tracking such tuples, and dicts of them).
CompactValue = tuple[int, int | bytes | Oid | None]


@dataclass(slots=True)
class DeviceCache:
    """What a device's scrapes reuse until a validator moves or ``max_age_seconds`` pass.

    With ``ModulePlan.keeps_row_labels``, ``rows`` holds only ``row_columns``:
    ``row_labels`` keeps the labels built on the first scrape and the samples
    of ``kept_columns``, and ``octets``/``values`` the lookup columns in a
    compact form for rows that show up later. Varbinds held for a whole cache
    life were most of the objects every full collection of Python's garbage
    collector walked.
    """

    uptime: int
    fetched_at: float
    scalar_validators: dict[Oid, object]
    column_validators: dict[Oid, tuple[tuple[Oid, ...], tuple[object, ...]]]
    rows: dict[Oid, list[VarBind]]
    # Lookup values: OCTET STRINGs (names, aliases: nearly all) as bare bytes, the rest typed.
    octets: dict[Oid, bytes] = field(default_factory=dict)
    values: dict[Oid, CompactValue] = field(default_factory=dict)
    row_labels: RowLabels | None = None


class CachedValues(Mapping[Oid, VarBind]):
    """A cache's compact lookup values as varbinds, built only if a scrape asks for one.

    With the row labels kept, that is only for an index the cache has no labels for.
    """

    __slots__ = ("_cache", "_varbinds")

    def __init__(self, cache: DeviceCache) -> None:
        self._cache = cache
        self._varbinds: dict[Oid, VarBind] | None = None

    def _all(self) -> dict[Oid, VarBind]:
        if self._varbinds is None:
            octets = ValueKind.OCTET_STRING
            self._varbinds = {
                oid: VarBind(oid, octets, value) for oid, value in self._cache.octets.items()
            }
            self._varbinds.update(
                (oid, VarBind(oid, ValueKind(tag), value))
                for oid, (tag, value) in self._cache.values.items()
            )
        return self._varbinds

    def __getitem__(self, oid: Oid) -> VarBind:
        return self._all()[oid]

    def __iter__(self) -> Iterator[Oid]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


# Clean scrapes at a lowered max-repetitions before trying twice as many again: an
# agent that once refused a big reply (or a lossy link) may have been a passing state.
RAISE_AFTER_CLEAN_SCRAPES = 10


@dataclass(slots=True)
class DeviceState:
    max_repetitions: int
    cache: DeviceCache | None = None
    last_used: float = 0.0
    clean_scrapes: int = 0

    def learn(self, used: int, configured: int) -> None:
        """Remember what the session ended up using; creep back up when it stays clean."""
        if used < self.max_repetitions:
            self.max_repetitions, self.clean_scrapes = used, 0
        elif self.max_repetitions < configured:
            self.clean_scrapes += 1
            if self.clean_scrapes >= RAISE_AFTER_CLEAN_SCRAPES:
                self.max_repetitions = min(configured, 2 * self.max_repetitions)
                self.clean_scrapes = 0


@dataclass(slots=True)
class ModuleResult:
    module: str
    success: bool
    duration_seconds: float
    families: list[Family]
    max_repetitions: int
    cache_used: bool
    error: str | None = None
    pdus_sent: int = 0
    retries: int = 0
    replies: int = 0
    # Datagrams from the device's address that answered no request: never replies.
    undecodable: int = 0
    # Neighbour rows past the module's max_neighbours; None: no neighbour tables read.
    neighbours_dropped: int | None = None


@dataclass(frozen=True, slots=True)
class ModuleRead:
    """One module's families, whether the cache served, and neighbour rows dropped."""

    families: list[Family]
    cache_used: bool
    neighbours_dropped: int | None = None


def _fingerprint(rows: Sequence[VarBind]) -> tuple[tuple[Oid, ...], tuple[object, ...]]:
    """The OIDs and values of a validator column, as two flat tuples.

    Kept per device for as long as its cache: the OIDs are shared by every device
    (see ``walk``), so flat tuples hold 16 bytes a row where pairs held 72.
    """
    return tuple(vb.oid for vb in rows), tuple(vb.value for vb in rows)


class SessionFactory(Protocol):
    """Opens a client to one agent; ``SnmpSession`` is the real one, tests replay agents."""

    def __call__(
        self, host: str, port: int, credentials: Credentials, *, timeout: float, retries: int
    ) -> SnmpClient: ...


class SessionEntry:
    """A session with what the scraper tracks about it."""

    __slots__ = ("born", "lock", "retired", "session", "used", "users")

    def __init__(self, session: SnmpClient, now: float) -> None:
        self.session = session
        self.born = now
        self.used = now
        # One scrape at a time per session: HA Prometheus pairs scrape the same device
        # at once, and the PDU counts of a scrape must be its own.
        self.lock = asyncio.Lock()
        # Scrapes holding it (waiting for the lock included): closing it then would
        # fail their requests, so it is closed when the last one lets go instead.
        self.users = 0
        # Dropped from the scraper while in use (renewed to look a name up again).
        self.retired = False


class SnmpScraper:
    """Owns the sessions and per-device state of every ``/snmp`` target."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        session_factory: SessionFactory = SnmpSession,
        *,
        wrap_large_counters: bool = True,
        first_life: Callable[[], float] = lambda: random.uniform(0.5, 1.0),
    ) -> None:
        self._clock = clock
        # The share of max_age_seconds a device's first cache lives (see _new_cache).
        self._first_life = first_life
        # --snmp.wrap-large-counters: Counter64 values modulo 2**53, as snmp_exporter.
        self._wrap_large_counters = wrap_large_counters
        self._open_session = session_factory
        self._entries: dict[tuple[object, ...], SessionEntry] = {}
        self._devices: dict[tuple[object, ...], DeviceState] = {}
        self._plans: dict[int, ModulePlan] = {}
        # Bounded by the open-files limit at start(), once serving has raised it.
        self._max_sessions = MAX_SESSIONS
        self._closing: set[asyncio.Task[None]] = set()
        self._pruner: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        """Start pruning idle sessions and devices in the background."""
        self._max_sessions = session_cap()
        self._pruner = asyncio.create_task(self._prune())

    async def _prune(self) -> None:
        while True:
            await asyncio.sleep(PRUNE_SECONDS)
            self.drop_idle()

    def plan(self, module: SnmpModule) -> ModulePlan:
        # Modules are frozen and replaced whole on reload, so identity is a safe key.
        plan = self._plans.get(id(module))
        if plan is None or plan.module is not module:
            plan = self._plans[id(module)] = ModulePlan(
                module, wrap_large_counters=self._wrap_large_counters
            )
        return plan

    def session(
        self, target: Target, auth_name: str, credentials: Credentials, module: SnmpModule
    ) -> SessionEntry:
        key = (target, auth_name, credentials, module.timeout_seconds, module.retries)
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None and not target.is_address and now - entry.born > RESOLVE_SECONDS:
            # A device named in DNS is looked up again now and then: it may have moved.
            self._retire(self._entries.pop(key))
            entry = None
        if entry is None:
            if len(self._entries) >= self._max_sessions:
                # Past the cap until a scrape lets go, if every session is in use.
                self._evict(len(self._entries) - self._max_sessions + 1)
            session = self._open_session(
                target.host,
                target.port,
                credentials,
                timeout=module.timeout_seconds,
                retries=module.retries,
            )
            entry = self._entries[key] = SessionEntry(session, now)
            if self._closed:
                # A scrape that began as a reload closed this scraper: its session
                # must not outlive it (the module fails, the next scrape goes to the new one).
                self._close_later([self._entries.pop(key)])
        entry.used = now
        return entry

    def _evict(self, count: int) -> None:
        """Close up to ``count`` sessions no scrape is using, least recently used first."""
        idle = [(entry.used, key) for key, entry in self._entries.items() if not entry.users]
        for _, key in heapq.nsmallest(count, idle, key=lambda pair: pair[0]):
            self._close_later([self._entries.pop(key)])

    def _retire(self, entry: SessionEntry) -> None:
        """Close a session the scraper no longer hands out: now, or when its last scrape ends."""
        if entry.users:
            entry.retired = True
        else:
            self._close_later([entry])

    def _acquire(self, entry: SessionEntry) -> SessionEntry:
        entry.users += 1
        return entry

    def _release(self, entry: SessionEntry) -> None:
        entry.users -= 1
        if entry.users:
            return
        if entry.retired:
            self._close_later([entry])
        elif len(self._entries) > self._max_sessions:
            self._evict(len(self._entries) - self._max_sessions)

    def _close_later(self, entries: Iterable[SessionEntry]) -> None:
        for entry in entries:
            task = asyncio.ensure_future(entry.session.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def reset(self) -> None:
        """Forget every session, cache and plan: the config they came from changed.

        A reload may change a module (its cache, max-repetitions) or an auth's
        secret; each device starts afresh at its next scrape. A session a scrape
        is reading through is closed when that scrape is done, not under it.
        """
        for entry in self._entries.values():
            self._retire(entry)
        self._entries.clear()
        self._devices.clear()
        self._plans.clear()

    async def close(self) -> None:
        """Stop pruning and close every session (one in use when its scrape is done).

        A reload closes the old scraper while scrapes may still be reading
        through it: they finish on their sessions, which close after them.
        """
        self._closed = True
        if self._pruner is not None:
            self._pruner.cancel()
            await asyncio.gather(self._pruner, return_exceptions=True)
            self._pruner = None
        self.reset()
        await asyncio.gather(*self._closing, return_exceptions=True)

    async def scrape(
        self, job: ScrapeJob[Target, SnmpModule, SnmpAuth], families: list[Family]
    ) -> tuple[bool, str | None]:
        """Read every module of the job at once, each bounded by the deadline.

        Success is per module (``scout_snmp_module_success``), so the scrape as
        a whole reports no error of its own; a failed module is logged here.
        """
        if job.auth is None or job.auth_name is None:
            raise ValueError("an SNMP scrape needs an auth")
        credentials = Credentials.from_auth(job.auth)
        target, auth_name = job.target, job.auth_name
        # Each held from here until every module is done, so that opening the next
        # (another module's, another scrape's) evicts none of them (see _evict).
        entries: list[SessionEntry] = []
        progress: list[ModuleProgress] = []
        deadline = module_deadline(job.deadline)
        try:
            for _, module in job.modules:
                entries.append(self._acquire(self.session(target, auth_name, credentials, module)))
            progress = [
                ModuleProgress(name, entry.session)
                for entry, (name, _) in zip(entries, job.modules, strict=True)
            ]
            results = await asyncio.gather(
                *(
                    self.scrape_module(
                        entry,
                        (target, auth_name, name),
                        name,
                        module,
                        deadline,
                        progress=step,
                        session_deadline=job.deadline,
                    )
                    for entry, (name, module), step in zip(
                        entries, job.modules, progress, strict=True
                    )
                )
            )
        except asyncio.CancelledError:
            # The handler gave up on the scrape (its own deadline, a little later than
            # the modules'): a CPU-bound walk, or a long garbage collection, kept the
            # modules' deadlines from firing in time. The status families still go out,
            # from what each module had done, or Prometheus would get a 200 that no
            # alert can read.
            # A module that had finished keeps its families with its success.
            cut = [step.outcome(CUT_SHORT) for step in progress]
            families += _self_families(cut)
            families += merge_families(f for result in cut for f in result.families)
            _log_failures(cut, target, auth_name)
            raise
        finally:
            for entry in entries:
                self._release(entry)
        _log_failures(results, target, auth_name)
        families += _self_families(results)
        families += merge_families(f for result in results for f in result.families)
        return all(result.success for result in results), None

    def drop_idle(self) -> None:
        """Close sessions and forget devices unused for ``IDLE_SECONDS``."""
        cutoff = self._clock() - IDLE_SECONDS
        stale = [k for k, entry in self._entries.items() if entry.used < cutoff and not entry.users]
        self._close_later(self._entries.pop(k) for k in stale)
        for key in [k for k, d in self._devices.items() if d.last_used < cutoff]:
            del self._devices[key]

    async def scrape_module(
        self,
        entry: SessionEntry,
        device_key: tuple[object, ...],
        name: str,
        module: SnmpModule,
        deadline: float,
        *,
        progress: ModuleProgress | None = None,
        session_deadline: float | None = None,
    ) -> ModuleResult:
        """The module's result, or a failure at ``deadline`` with what it cost so far.

        A device that answers but cannot be walked in time (a big table, a slow
        agent) is reachable: the PDUs sent and the replies received are counted
        either way, so only the module fails. The session's requests stop at
        ``session_deadline`` (by default ``deadline``): given the scrape's, a little
        later, the module's own deadline is the one that ends a walk, and its
        error says whether the device answered.
        """
        if progress is None:
            progress = ModuleProgress(name, entry.session)
        try:
            async with asyncio.timeout_at(deadline), entry.lock:
                state = self._devices.get(device_key)
                if state is None:
                    state = self._devices[device_key] = DeviceState(module.max_repetitions)
                progress.begin(state)
                result = await self._scrape_module(
                    entry.session,
                    device_key,
                    name,
                    module,
                    deadline if session_deadline is None else session_deadline,
                )
        except TimeoutError:
            return progress.outcome(None)
        return progress.finish(result)

    async def _scrape_module(
        self,
        session: SnmpClient,
        device_key: tuple[object, ...],
        name: str,
        module: SnmpModule,
        deadline: float,
    ) -> ModuleResult:
        started = time.perf_counter()
        state = self._devices.get(device_key)
        if state is None:
            state = self._devices[device_key] = DeviceState(module.max_repetitions)
        state.last_used = self._clock()
        plan = self.plan(module)
        try:
            read = await self._read(session, plan, state, deadline)
        except SnmpError as exc:
            error = str(exc)
        except Exception as exc:  # module boundary: one bad module never fails the others
            log.exception("snmp module crashed", extra={"snmp_module": name})
            error = f"internal error: {exc!r}"
        else:
            return ModuleResult(
                name,
                True,
                time.perf_counter() - started,
                read.families,
                state.max_repetitions,
                read.cache_used,
                neighbours_dropped=read.neighbours_dropped,
            )
        duration = time.perf_counter() - started
        return ModuleResult(name, False, duration, [], state.max_repetitions, False, error)

    async def _walk(
        self,
        session: SnmpClient,
        roots: Sequence[Oid],
        state: DeviceState,
        configured: int,
        deadline: float,
    ) -> dict[Oid, list[VarBind]]:
        if not roots:
            return {}
        try:
            return await session.bulk_walk(
                roots, max_repetitions=state.max_repetitions, deadline=deadline
            )
        finally:
            # The session halves max-repetitions on tooBig or timeouts, even in a walk
            # that fails in the end: remember it either way.
            state.learn(session.max_repetitions_used or state.max_repetitions, configured)

    async def _read(
        self, session: SnmpClient, plan: ModulePlan, state: DeviceState, deadline: float
    ) -> ModuleRead:
        gets = plan.gets()
        got = {vb.oid: vb for vb in await session.get(gets, deadline=deadline)} if gets else {}
        cache = state.cache if self._still_valid(plan, state.cache, got) else None
        roots = plan.fresh_columns if cache else [*plan.fresh_columns, *plan.cached_columns]
        configured = plan.module.max_repetitions
        walked = await self._walk(session, roots, state, configured, deadline)
        if cache is not None and any(
            _fingerprint(walked.get(v, ())) != cache.column_validators.get(v)
            for v in plan.column_validators
        ):
            walked.update(
                await self._walk(session, plan.cached_columns, state, configured, deadline)
            )
            cache = None
        fallback = fallback_columns(plan.neighbour_tables, walked)
        if fallback:
            walked.update(await self._walk(session, fallback, state, configured, deadline))
        if cache is None and plan.uptime is not None:
            state.cache = self._new_cache(plan, got, walked, first=state.cache is None)
        rows: dict[Oid, Sequence[VarBind]] = dict(cache.rows) if cache else {}
        rows.update(walked)
        for oid in plan.neighbour_scalars:
            if oid in got:
                rows[oid[:-1]] = [got[oid]]
        scalar_rows: dict[Oid, list[VarBind]] = {}
        for instance, base in plan.scalar_reads:
            if instance in got:
                scalar_rows.setdefault(base, []).append(got[instance])
        rows.update(scalar_rows)
        kept = None
        values: Mapping[Oid, VarBind]
        if plan.keeps_row_labels and state.cache is not None:
            # The cache reused, or the one just filled from ``walked``: either way
            # its values are this scrape's, and what it kept was built from them.
            kept = state.cache.row_labels
            if kept is None:
                kept = state.cache.row_labels = RowLabels(plan.mapper, plan.kept_columns)
            values = CachedValues(state.cache)
        else:
            values = {vb.oid: vb for column in plan.lookup_columns for vb in rows.get(column, ())}
            values.update((oid, got[oid]) for oid in plan.scalar_lookups if oid in got)
        families = plan.mapper.families(rows, values, kept)
        if not plan.neighbour_tables:
            return ModuleRead(families, cache is not None)
        neighbours = neighbour_families(plan.neighbour_tables, rows, plan.module.max_neighbours)
        return ModuleRead([*families, *neighbours.families], cache is not None, neighbours.dropped)

    def _still_valid(
        self, plan: ModulePlan, cache: DeviceCache | None, got: Mapping[Oid, VarBind]
    ) -> bool:
        if cache is None or plan.uptime is None or plan.module.cache is None:
            return False
        if plan.keeps_row_labels and (cache.row_labels is None or not cache.row_labels.complete):
            return False  # its first scrape failed before mapping: the columns are not kept
        if self._clock() - cache.fetched_at > plan.module.cache.max_age_seconds:
            return False
        uptime = got.get(plan.uptime)
        if uptime is None or not isinstance(uptime.value, int) or uptime.value < cache.uptime:
            return False  # rebooted, or the agent cannot say
        return all(
            (got[v].value if v in got else None) == cache.scalar_validators.get(v)
            for v in plan.scalar_validators
        )

    def _new_cache(
        self,
        plan: ModulePlan,
        got: Mapping[Oid, VarBind],
        walked: Mapping[Oid, list[VarBind]],
        *,
        first: bool = False,
    ) -> DeviceCache | None:
        uptime = got.get(plan.uptime) if plan.uptime else None
        if uptime is None or not isinstance(uptime.value, int):
            return None
        fetched_at = self._clock()
        if first and plan.module.cache is not None:
            # Devices first seen together (every one after a start or a reload) would
            # all refill together max_age_seconds later, scrapes that walk everything
            # bunched into one interval, every time. A first cache that lives a random
            # share of max_age_seconds (dated back by the rest) spreads the refills
            # for good: later ones follow each device's own last refill.
            fetched_at -= (1.0 - self._first_life()) * plan.module.cache.max_age_seconds
        lookups = (
            [vb for column in plan.lookup_columns for vb in walked.get(column, ())]
            if plan.keeps_row_labels
            else []
        )
        return DeviceCache(
            uptime=uptime.value,
            fetched_at=fetched_at,
            scalar_validators={
                v: got[v].value if v in got else None for v in plan.scalar_validators
            },
            column_validators={v: _fingerprint(walked.get(v, ())) for v in plan.column_validators},
            rows={c: walked.get(c, []) for c in plan.row_columns},
            octets={
                vb.oid: vb.value
                for vb in lookups
                if vb.kind is ValueKind.OCTET_STRING and isinstance(vb.value, bytes)
            },
            values={
                vb.oid: (int(vb.kind), vb.value)
                for vb in lookups
                if vb.kind is not ValueKind.OCTET_STRING or not isinstance(vb.value, bytes)
            },
        )


# The modules' deadline comes this much before the handler's (the scrape's): the
# failure they report at their own deadline is built and rendered before the handler
# would give up on the scrape. A share of a short budget, at most this long.
MODULE_DEADLINE_MARGIN_SECONDS = 0.25
MODULE_DEADLINE_MARGIN_SHARE = 0.1

# The error of a module the handler cut short (see SnmpScraper.scrape).
CUT_SHORT = "the scrape was stopped at its deadline before the module was read in full"


def module_deadline(deadline: float) -> float:
    """When the modules of a scrape due at ``deadline`` (``loop.time()``) give up."""
    budget = deadline - asyncio.get_running_loop().time()
    return deadline - min(
        MODULE_DEADLINE_MARGIN_SECONDS, max(budget, 0) * MODULE_DEADLINE_MARGIN_SHARE
    )


class ModuleProgress:
    """What one module's scrape has cost so far: its result if the deadline cuts it short.

    The session's counters are read when the module takes the session's lock
    (another scrape of the device may hold it first), so the counts are this
    module's own.
    """

    __slots__ = ("_baseline", "_replies_waiting", "_started", "name", "result", "session", "state")

    def __init__(self, name: str, session: SnmpClient) -> None:
        self.name = name
        self.session = session
        self.state: DeviceState | None = None
        self.result: ModuleResult | None = None
        self._started = time.perf_counter()
        self._baseline: tuple[int, int, int, int] | None = None
        # Replies on the session before this module waits for its lock: what another
        # scrape of the device (an HA Prometheus pair's) holding it gets meanwhile
        # is the same device answering within this scrape's time.
        self._replies_waiting = session.stats.replies

    def begin(self, state: DeviceState) -> None:
        self._baseline = self._read()
        self.state = state

    def _read(self) -> tuple[int, int, int, int]:
        stats = self.session.stats
        return stats.pdus_sent, stats.retries, stats.replies, stats.undecodable

    def _counts(self) -> tuple[int, int, int, int]:
        """PDUs sent, retries, replies and undecodable datagrams since ``begin``."""
        if self._baseline is None:
            return 0, 0, 0, 0
        now = self._read()
        return (
            now[0] - self._baseline[0],
            now[1] - self._baseline[1],
            now[2] - self._baseline[2],
            now[3] - self._baseline[3],
        )

    def finish(self, result: ModuleResult) -> ModuleResult:
        pdus, retries, replies, undecodable = self._counts()
        result.pdus_sent, result.retries, result.replies = pdus, retries, replies
        result.undecodable = undecodable
        self.result = result
        return result

    def outcome(self, error: str | None) -> ModuleResult:
        """The finished result, or a failure with the counts so far and ``error``
        (by default, what the counts say about why the deadline passed)."""
        if self.result is not None:
            return self.result
        pdus, retries, replies, undecodable = self._counts()
        # Reachability: the device answered while this module waited or worked.
        answered = self.session.stats.replies - self._replies_waiting
        if self._baseline is None:
            # It sent nothing: another scrape held the session all along (or another
            # module of this one: modules with the same timeout and retries share it).
            error = error or (
                "no request sent: the device's session was busy with another scrape"
                " or module of it until the deadline"
            )
        elif error is None:
            # No counts in the text (they are in the self-metrics): a message that
            # stays the same is one the log's repeat filter can hold back.
            if replies:
                error = (
                    "deadline passed before the module was read in full: the device"
                    " answers, but needs more time than the scrape timeout gives (raise"
                    " it, or read fewer columns)"
                )
            else:
                error = "deadline passed with no answer from the device"
            if undecodable:
                error += undecodable_note(self.session.stats)
        return ModuleResult(
            self.name,
            False,
            time.perf_counter() - self._started,
            [],
            # What the walk lowered it to, if it did before the deadline.
            self.state.max_repetitions if self.state is not None else 0,
            False,
            error,
            pdus_sent=pdus,
            retries=retries,
            replies=answered,
            undecodable=undecodable,
        )


def _log_failures(results: Iterable[ModuleResult], target: Target, auth_name: str) -> None:
    for result in results:
        if result.error:
            log.warning(
                "snmp module failed: %s",
                result.error,
                extra={"target": str(target), "snmp_module": result.module, "auth": auth_name},
            )


def unresolved_scrape(
    job: ScrapeJob[Target, SnmpModule, SnmpAuth], error: str, families: list[Family]
) -> tuple[bool, str | None]:
    """Every module failed, as when the session cannot resolve the device's name."""
    failed = [ModuleResult(name, False, 0.0, [], 0, False, error) for name, _ in job.modules]
    families += _self_families(failed)
    return False, error


def _self_families(results: list[ModuleResult]) -> list[Family]:
    pdus = sum(result.pdus_sent for result in results)
    retries = sum(result.retries for result in results)
    sent = Family("scout_snmp_pdus_sent", "SNMP PDUs sent during this scrape.", "gauge")
    sent.add((), pdus)
    retried = Family("scout_snmp_retries", "SNMP requests resent during this scrape.", "gauge")
    retried.add((), retries)
    junk = Family(
        "scout_snmp_undecodable_datagrams",
        "Datagrams from the device's address during this scrape that were no SNMP reply"
        " to it (never counted as answers).",
        "gauge",
    )
    junk.add((), sum(result.undecodable for result in results))
    success = Family("scout_snmp_module_success", "1 if the module was read in full.", "gauge")
    took = Family("scout_snmp_module_duration_seconds", "Seconds spent on the module.", "gauge")
    reps = Family(
        "scout_snmp_max_repetitions", "GETBULK max-repetitions now used for the device.", "gauge"
    )
    cached = Family(
        "scout_snmp_cache_used", "1 if cached lookup labels were reused on this scrape.", "gauge"
    )
    dropped = Family(
        "scout_snmp_neighbours_dropped",
        "Neighbour rows left out of this scrape by the module's max_neighbours.",
        "gauge",
    )
    for result in results:
        labels = (("module", result.module),)
        success.add(labels, int(result.success))
        if result.neighbours_dropped is not None:
            dropped.add(labels, result.neighbours_dropped)
        took.add(labels, result.duration_seconds)
        if result.max_repetitions:
            reps.add(labels, result.max_repetitions)
        cached.add(labels, int(result.cache_used))
    reachable = Family(
        "scout_snmp_device_reachable",
        "1 if the device answered at least one SNMP request during this scrape.",
        "gauge",
    )
    # A module that succeeded was answered even when a cache left nothing to send.
    answered = any(result.replies or result.success for result in results)
    reachable.add((), int(answered))
    return [
        sent,
        retried,
        junk,
        success,
        took,
        reps,
        cached,
        reachable,
        *([dropped] if dropped.samples else []),
    ]

"""The ``/winrm`` kind's scraper: a shell kept per host, one scrape per host at a time.

The WinRM client blocks, so each scrape runs on a worker thread of a pool the
scraper owns: the pool's size is the global bound on hosts scraped at once
(``MAX_CONCURRENT_SCRAPES``); a scrape queued behind it past its deadline is
dropped unstarted. Per host (address, port and auth) a ``HostSession`` keeps
the open shell between scrapes. One scrape of a host runs at a time, even
one whose caller gave up at the deadline: the next waits for its turn on the
event loop, never in a worker thread, and fails at its own deadline if the
turn has not come. The thread of a scrape ends by that scrape's deadline (and
the clean-up's few seconds after it), whatever the host does: every request
it sends is cut at the deadline (``Cutoff`` in the client). A shell that failed is
dropped (closed best effort) and the next scrape opens a new one; one the host
no longer knows, or refuses for the user's operation quota, is reopened at
once and the command tried again. Shells idle longer than
``SHELL_IDLE_SECONDS`` (a host taken out of the targets) are closed, and a
shell is replaced after ``MAX_COMMANDS_PER_SHELL`` commands, before the host's
quotas refuse it. Closing the scraper (a reload replaced it, or the exporter
stops) waits a few seconds at most for scrapes in flight: each closes its own
shell when it ends. A reload lets them run to their deadlines; a stop
interrupts them first (``interrupt``): each is cut at once and answered, and
deletes its shell on its way out, so the exporter exits in seconds.

Sample exposition of a failed scrape (``reason`` is one of ``auth``,
``unreachable``, ``timeout``, ``quota``, ``protocol``, ``output``)::

    scout_winrm_success 0
    scout_winrm_scrape_duration_seconds 0.012
    scout_winrm_scrape_error{reason="auth"} 1
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.clients.probe_net import HostPort, IPAddress, TargetError, split_host_port
from exporter.clients.winrm import (
    CLEANUP_SECONDS,
    CommandResult,
    Endpoint,
    PypsrpOpener,
    RemoteShell,
    ShellGoneError,
    ShellOpener,
    WinrmError,
    WinrmQuotaError,
    WinrmTimeoutError,
)
from exporter.config import WinrmAuth
from exporter.errors import BadRequestError
from exporter.targets.kind import ScrapeJob, SelfMetric, StatusMetrics, preferred_address
from exporter.targets.winrm.metrics import ProcessSample, collector_families
from exporter.targets.winrm.modules import WinrmModule
from exporter.targets.winrm.script import (
    ScriptOutputError,
    bootstrap_arguments,
    build_script,
    parse_output,
)

log = logging.getLogger(__name__)

# Threads, so hosts scraped at once: 200 hosts every 60 s at ~1 s each need ~4.
MAX_CONCURRENT_SCRAPES = 32
SHELL_IDLE_SECONDS = 600.0
# The longest closing the scraper waits for scrapes in flight: enough for the
# clean-up of one whose deadline passed (Signal, Delete), not for one that runs
# on to a deadline minutes away.
CLOSE_WAIT_SECONDS = 2 * CLEANUP_SECONDS + 1
# Commands run on one shell before it is replaced by a new one: Windows limits
# the operations per user (MaxConcurrentOperationsPerUser, 1500) and the
# commands per shell (1000 for PowerShell's plugin), and operations leak on a
# long-lived shell, so a shell kept forever fails a scrape with a quota fault
# about once a day (one command a minute). Replacing it first costs one Create.
MAX_COMMANDS_PER_SHELL = 500
# A scrape still waiting for a thread when a reload or a stop closed the pool.
RELOADED_BEFORE_START = (
    "timeout: the config was reloaded or the exporter stopped before the scrape started"
)
HTTP_PORT, HTTPS_PORT = 5985, 5986
POWERSHELL = "powershell.exe"

WINRM_STATUS = StatusMetrics(
    success=SelfMetric("scout_winrm_success", "1 if the WinRM scrape succeeded."),
    duration=SelfMetric("scout_winrm_scrape_duration_seconds", "Seconds the WinRM scrape took."),
)

HostKey = tuple[str, int, str]


@dataclass(frozen=True, slots=True)
class WinrmTarget:
    """A target as written (``host``, the name TLS and Kerberos check), and where to connect.

    ``address`` is set once the allow-lists admitted the target: the client
    then connects there and never looks the name up again (see ``pin_target``).
    """

    host: str
    port: int | None
    address: str | None = None


def parse_target(target: str) -> WinrmTarget:
    """``host``, ``host:port`` or ``[v6]:port``; the port defaults by the auth's scheme."""
    try:
        parsed: HostPort = split_host_port(target)
    except TargetError as exc:
        raise BadRequestError(str(exc)) from None
    return WinrmTarget(parsed.host, parsed.port)


def target_host(target: WinrmTarget, _module: WinrmModule) -> str:
    return target.host


def pin_target(target: WinrmTarget, addresses: Sequence[IPAddress]) -> WinrmTarget:
    """The target bound to an address the allow-lists checked, IPv4 first.

    The WS-Man client would look the name up again when it connects (and on
    every new connection after); bound to the checked address, a DNS answer
    that changed in between cannot send the credentials elsewhere. The name
    stays for TLS (SNI and the certificate check) and the Kerberos SPN.
    """
    return WinrmTarget(target.host, target.port, str(preferred_address(addresses)))


@dataclass(slots=True)
class HostSession:
    """What the scraper keeps for one host between scrapes."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    shell: RemoteShell | None = None
    commands: int = 0  # run on ``shell``
    last_used: float = 0.0
    processes: ProcessSample = field(default_factory=ProcessSample)


@dataclass(slots=True)
class HostTurn:
    """Whose turn it is to scrape one host, on the event loop; ``users`` hold or wait for it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


@dataclass(frozen=True, slots=True)
class HostOutcome:
    families: list[Metric]
    error: str | None
    failed_reason: str | None = None


class WinrmScraper:
    """State between scrapes (shells, thread pool) and one scrape of one Windows host."""

    def __init__(
        self,
        opener: ShellOpener | None = None,
        *,
        max_concurrent: int = MAX_CONCURRENT_SCRAPES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._opener: ShellOpener = opener if opener is not None else PypsrpOpener()
        self._max_concurrent = max_concurrent
        self._clock = clock
        self._sessions: dict[HostKey, HostSession] = {}
        self._sessions_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False  # read and set under _sessions_lock
        self._turns: dict[HostKey, HostTurn] = {}
        self._in_flight: set[Future[HostOutcome]] = set()
        self._scripts: dict[str, str] = {}

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(self._max_concurrent, thread_name_prefix="winrm")

    def interrupt(self) -> None:
        """The exporter stops: cut the scrapes in flight now, not at their deadlines.

        Queued scrapes never start; each one in flight fails at once (a
        timeout), is answered, and deletes its shell (``CLEANUP_SECONDS`` at
        most) as it ends, which ``close``, next, waits for.
        """
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._opener.stop()

    def busy(self) -> bool:
        return bool(self._in_flight)

    async def close(self) -> None:
        """Close the idle shells, and wait ``CLOSE_WAIT_SECONDS`` at most for scrapes in flight.

        A reload or a stop must not hang on a host that keeps a scrape busy:
        queued scrapes never start, and one in flight ends by its deadline
        and then closes its own shell (``_scrape_host``); one whose deadline
        passed is only cleaning up, which the wait leaves time for. Each
        Delete sent here ends within ``CLEANUP_SECONDS``, many at once.
        """
        executor, self._executor = self._executor, None
        if executor is None:
            return
        executor.shutdown(wait=False, cancel_futures=True)
        if self._in_flight:
            await asyncio.wait(
                [asyncio.wrap_future(f) for f in self._in_flight], timeout=CLOSE_WAIT_SECONDS
            )
        shells: list[RemoteShell] = []
        with self._sessions_lock:
            self._closed = True
            for session in self._sessions.values():
                if session.lock.acquire(blocking=False):  # busy ones close their own
                    if session.shell is not None:
                        shells.append(session.shell)
                    session.shell = None
                    session.lock.release()
            self._sessions.clear()
        if not shells:
            return
        closer = ThreadPoolExecutor(
            min(len(shells), self._max_concurrent), thread_name_prefix="winrm-close"
        )
        for shell in shells:
            closer.submit(shell.close)
        await asyncio.to_thread(closer.shutdown, wait=True)

    async def scrape(
        self, job: ScrapeJob[WinrmTarget, WinrmModule, WinrmAuth], families: list[Metric]
    ) -> tuple[bool, str | None]:
        if self._executor is None:
            raise RuntimeError("the WinRM scraper was not started")
        [(_, module)] = job.modules
        auth = job.auth
        if auth is None:
            raise RuntimeError("/winrm always takes an auth")
        endpoint = Endpoint(
            host=job.target.host,
            port=job.target.port or (HTTPS_PORT if auth.https else HTTP_PORT),
            https=auth.https,
            transport=auth.transport,
            username=auth.username,
            password=auth.password.get_secret_value(),
            ca_file=None if auth.ca_file is None else Path(auth.ca_file),
            verify=not auth.insecure_skip_verify,
            address=job.target.address,
        )
        # The deadline in this thread's clock: the handler's is in loop.time().
        loop = asyncio.get_running_loop()
        deadline = self._clock() + (job.deadline - loop.time())
        key: HostKey = (endpoint.host, endpoint.port, job.auth_name or "")
        turn = self._turns.setdefault(key, HostTurn())
        turn.users += 1
        try:
            async with asyncio.timeout_at(job.deadline):
                await turn.lock.acquire()
        except BaseException as exc:
            self._leave(key, turn)
            if not isinstance(exc, TimeoutError):
                raise
            outcome = HostOutcome(
                [],
                "timeout: the previous scrape of this host was still running at the deadline",
                "timeout",
            )
        else:
            outcome = await self._in_thread(key, turn, endpoint, module, deadline)
        families.extend(outcome.families)
        if outcome.failed_reason is not None:
            families.append(_error_family(outcome.failed_reason))
            return False, outcome.error
        return True, outcome.error

    async def _in_thread(
        self,
        key: HostKey,
        turn: HostTurn,
        endpoint: Endpoint,
        module: WinrmModule,
        deadline: float,
    ) -> HostOutcome:
        """Run the scrape on a worker thread; the host's turn passes on when the thread ends."""
        loop = asyncio.get_running_loop()

        def passed_on(future: Future[HostOutcome] | None = None) -> None:
            if future is not None:
                self._in_flight.discard(future)
            turn.lock.release()
            self._leave(key, turn)

        def thread_done(future: Future[HostOutcome]) -> None:
            # Also when the caller gave up long before: the thread's end is what counts.
            with contextlib.suppress(RuntimeError):  # the loop is gone: so is everyone waiting
                loop.call_soon_threadsafe(passed_on, future)

        reported: asyncio.Future[HostOutcome] = loop.create_future()

        def report(outcome: HostOutcome) -> None:
            def put() -> None:
                if not reported.done():
                    reported.set_result(outcome)

            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(put)

        try:
            if self._executor is None:
                raise RuntimeError("closed")
            future = self._executor.submit(
                self._scrape_host, key, endpoint, module, deadline, report
            )
        except RuntimeError:  # closed by a reload while this scrape waited for its turn
            passed_on()
            return HostOutcome([], RELOADED_BEFORE_START, "timeout")
        self._in_flight.add(future)
        future.add_done_callback(thread_done)
        done = asyncio.wrap_future(future)
        try:
            await asyncio.wait((done, reported), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            done.cancel()  # one still queued never starts
            raise
        if reported.done():
            done.add_done_callback(_log_failure)  # the outcome is the one reported
            return reported.result()
        if done.cancelled():  # still queued when a reload or a stop closed the pool
            return HostOutcome([], RELOADED_BEFORE_START, "timeout")
        return done.result()

    def _leave(self, key: HostKey, turn: HostTurn) -> None:
        turn.users -= 1
        if turn.users == 0 and self._turns.get(key) is turn:
            del self._turns[key]

    def _session(self, key: HostKey) -> HostSession:
        now = self._clock()
        idle: list[RemoteShell] = []
        with self._sessions_lock:
            for other_key, other in list(self._sessions.items()):
                stale = other_key != key and now - other.last_used > SHELL_IDLE_SECONDS
                # A session busy right now is in use, whatever its last_used says.
                if stale and other.lock.acquire(blocking=False):
                    del self._sessions[other_key]
                    if other.shell is not None:
                        idle.append(other.shell)
                    other.lock.release()
            session = self._sessions.setdefault(key, HostSession())
            # Marked used while the registry is locked: a scrape that has its
            # session but not yet its lock must not see it evicted as idle (and
            # its shell closed) by another host's lookup in between.
            session.last_used = now
        for shell in idle:
            shell.close()
        return session

    def _script(self, module: WinrmModule) -> bytes:
        # Keyed by the module's content, not its id(): a config reload frees the
        # old modules, and a new one allocated in the same place would get the
        # old one's script. Distinct modules are few, so the cache stays small.
        key = module.model_dump_json()
        script = self._scripts.get(key)
        if script is None:
            script = self._scripts[key] = build_script(module)
        return script.encode("ascii")

    def _scrape_host(
        self,
        key: HostKey,
        endpoint: Endpoint,
        module: WinrmModule,
        deadline: float,
        report: Callable[[HostOutcome], None] = lambda _: None,
    ) -> HostOutcome:
        """The blocking part, on a worker thread: never raises a ``WinrmError``.

        A failure is ``report``ed before the shell is deleted: the scrape
        answers at its deadline, and the clean-up goes on in the thread.
        """
        wait = deadline - self._clock()
        if wait <= 0:  # queued behind the global bound for too long
            return HostOutcome(
                [], "timeout: the deadline passed before the scrape started", "timeout"
            )
        session = self._session(key)
        if not session.lock.acquire(timeout=wait):
            return HostOutcome(
                [],
                "timeout: the previous scrape of this host was still running at the deadline",
                "timeout",
            )
        try:
            session.last_used = self._clock()
            result = self._run(session, endpoint, module, deadline)
            collectors = parse_output(result.stdout, result.stderr)
            families, failures = collector_families(collectors, module, session.processes)
            note = f"collectors failed: {'; '.join(failures)}" if failures else None
            return HostOutcome(families, note)
        except WinrmError as exc:
            outcome = HostOutcome([], f"{exc.reason}: {exc}", exc.reason)
            report(outcome)
            self._drop(session)
            return outcome
        except ScriptOutputError as exc:
            return HostOutcome([], f"output: {exc}", "output")
        finally:
            session.last_used = self._clock()
            with self._sessions_lock:
                closed = self._closed
                if not closed:
                    session.lock.release()
            if closed:
                # The scraper closed while this scrape ran and left the shell to it.
                self._drop(session)
                session.lock.release()

    def _run(
        self, session: HostSession, endpoint: Endpoint, module: WinrmModule, deadline: float
    ) -> CommandResult:
        script = self._script(module)
        if session.commands >= MAX_COMMANDS_PER_SHELL:
            self._drop(session)
        for attempt in (1, 2):
            reused = session.shell is not None
            if session.shell is None:
                session.shell = self._opener.open(endpoint, deadline)
            session.commands += 1
            try:
                result = session.shell.run(POWERSHELL, bootstrap_arguments(), script, deadline)
            except (ShellGoneError, WinrmQuotaError):
                self._drop(session)
                if reused and attempt == 1:
                    # The host forgot an old shell, or counts the operations
                    # leaked on it against the quota until it is deleted (just
                    # now): a new one is no failure.
                    continue
                raise
            if self._clock() > deadline:
                raise WinrmTimeoutError("the host answered after the deadline")
            return result
        raise AssertionError("unreachable")

    @staticmethod
    def _drop(session: HostSession) -> None:
        shell, session.shell = session.shell, None
        session.commands = 0
        if shell is not None:
            shell.close()


def _log_failure(done: asyncio.Future[HostOutcome]) -> None:
    if not done.cancelled() and (error := done.exception()) is not None:
        log.error("a WinRM scrape's clean-up failed", exc_info=error)


def _error_family(reason: str) -> Metric:
    family = GaugeMetricFamily(
        "scout_winrm_scrape_error",
        "1 with the reason the WinRM scrape failed (auth, unreachable, timeout, quota,"
        " protocol, output)",
        labels=["reason"],
    )
    family.add_metric([reason], 1)
    return family

"""The ``/winrm`` kind's scraper: a shell kept per host, one scrape per host at a time.

The WinRM client blocks, so each scrape runs on a worker thread of a pool the
scraper owns: the pool's size is the global bound on hosts scraped at once
(``MAX_CONCURRENT_SCRAPES``); a scrape queued behind it past its deadline is
dropped unstarted. Per host (address, port and auth) a ``HostSession`` keeps
the open shell between scrapes, and its lock keeps a second scrape from
running on the shell while one is still in flight, even one whose caller gave
up at the deadline: the thread ends by itself soon after, since every request
it sends carries a timeout taken from that deadline. A shell that failed is
dropped (closed best effort) and the next scrape opens a new one; one the host
no longer knows, or refuses for the user's operation quota, is reopened at
once and the command tried again. Shells idle longer than
``SHELL_IDLE_SECONDS`` (a host taken out of the targets) are closed, and a
shell is replaced after ``MAX_COMMANDS_PER_SHELL`` commands, before the host's
quotas refuse it.

Sample exposition of a failed scrape (``reason`` is one of ``auth``,
``unreachable``, ``timeout``, ``quota``, ``protocol``, ``output``)::

    scout_winrm_success 0
    scout_winrm_scrape_duration_seconds 0.012
    scout_winrm_scrape_error{reason="auth"} 1
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.clients.probe_net import HostPort, IPAddress, TargetError, split_host_port
from exporter.clients.winrm import (
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
# Commands run on one shell before it is replaced by a new one: Windows limits
# the operations per user (MaxConcurrentOperationsPerUser, 1500) and the
# commands per shell (1000 for PowerShell's plugin), and operations leak on a
# long-lived shell, so a shell kept forever fails a scrape with a quota fault
# about once a day (one command a minute). Replacing it first costs one Create.
MAX_COMMANDS_PER_SHELL = 500
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
        self._scripts: dict[str, str] = {}

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(self._max_concurrent, thread_name_prefix="winrm")

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        # Scrapes still in flight end by their deadlines: wait for them, so no
        # thread or socket outlives the scraper, and no shell is closed under
        # one; queued ones never start.
        await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
        with self._sessions_lock:
            shells = [s.shell for s in self._sessions.values() if s.shell is not None]
            self._sessions.clear()
        await asyncio.gather(*(asyncio.to_thread(shell.close) for shell in shells))

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
        outcome = await loop.run_in_executor(
            self._executor, self._scrape_host, key, endpoint, module, deadline
        )
        families.extend(outcome.families)
        if outcome.failed_reason is not None:
            families.append(_error_family(outcome.failed_reason))
            return False, outcome.error
        return True, outcome.error

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
        self, key: HostKey, endpoint: Endpoint, module: WinrmModule, deadline: float
    ) -> HostOutcome:
        """The blocking part, on a worker thread: never raises a ``WinrmError``."""
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
            self._drop(session)
            return HostOutcome([], f"{exc.reason}: {exc}", exc.reason)
        except ScriptOutputError as exc:
            return HostOutcome([], f"output: {exc}", "output")
        finally:
            session.last_used = self._clock()
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


def _error_family(reason: str) -> Metric:
    family = GaugeMetricFamily(
        "scout_winrm_scrape_error",
        "1 with the reason the WinRM scrape failed (auth, unreachable, timeout, quota,"
        " protocol, output)",
        labels=["reason"],
    )
    family.add_metric([reason], 1)
    return family

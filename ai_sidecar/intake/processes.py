"""More HTTP processes on the webhook's port: ``scout-sidecar serve --web.processes N``.

Why: one acknowledged webhook request costs an HTTP process 0.2-0.35 ms of
CPU on the project's 2-core machine (aiohttp, the socket calls, parsing, the
store's insert), so one event loop tops out at 3,000-5,000 single-alert
deliveries a second, below the 5,000 a second Alertmanager can send
(docs/benchmarks.md). The webhook needs nothing in memory but the store, so
more processes can answer it.

How it runs, with N above 1:

- The main process opens the listening sockets as always, and a Unix socket
  in a private directory of its own; then it starts N-1 intake processes,
  each given the same listening sockets. Every process accepts from the one
  queue, so a connection goes to whichever is free.
- An intake process answers ``POST /api/v1/alertmanager`` itself, with the
  same code as the main process (:func:`ai_sidecar.webhook.receive`): the
  same validation, and each alert durable in the store before the answer. It
  has a connection of its own to the store (SQLite's WAL lets writers take
  turns; PostgreSQL has no such limit).
- Any other request it passes to the main process over the Unix socket
  (:mod:`ai_sidecar.intake.forward`), with the client's address, so the
  console, the API, /metrics and reloads behave as with one process.
- Every second it sends the increments of its webhook counters
  (:class:`~ai_sidecar.metrics.WebhookMetrics`, every one) to the main
  process, which adds them to its own: /metrics counts every process's
  requests. (Up to a second of increments is lost if an intake process dies.)
- The main process watches each one as it watches the worker process
  (:class:`ai_sidecar.worker_process.WorkerProcess`): restarted if it dies,
  stopped (finishing its requests in flight) on shutdown, killed with the
  main process. The worker, the return trip and the anomaly scorer stay
  single, in their own processes, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import multiprocessing.connection
import os
import re
import shutil
import socket
import stat
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

from aiohttp import web

from ai_sidecar.components import open_store
from ai_sidecar.intake.forward import (
    UPSTREAM_READ_TIMEOUT,
    believe_intake_peer,
    forward,
    upstream_session,
)
from ai_sidecar.keys import METRICS, SETTINGS, STORE, WAKEUP
from ai_sidecar.metrics import WEBHOOK_COUNTERS, SidecarMetrics, create_metrics
from ai_sidecar.request_errors import request_errors
from ai_sidecar.settings import SidecarSettings
from ai_sidecar.webhook import WEBHOOK_PATH, receive
from ai_sidecar.worker_process import (
    METRICS_INTERVAL,
    SWITCH_INTERVAL,
    WorkerProcess,
    become_child,
    stop_on_signals,
    stop_restarting_children,
    watch_child,
)
from exporter.common.serving import (
    SHUTDOWN_TIMEOUT,
    ServerLimits,
    raise_open_files_limit,
    run,
    serving,
)
from exporter.common.web import open_listening_sockets

log = logging.getLogger("ai_sidecar.intake")

SOCKET_NAME = "main.sock"
DIRECTORY_PREFIX = "scout-sidecar-"
# An intake process lets its requests in flight finish for up to
# SHUTDOWN_TIMEOUT when stopped; it gets that and a little more before a kill.
STOP_GRACE = SHUTDOWN_TIMEOUT + 5.0
# A socket directory left by a main process that was killed is removed at the
# next start once it is this old and nothing answers on its socket.
STALE_AFTER_SECONDS = 60.0
# The directories tempfile.mkdtemp makes with DIRECTORY_PREFIX.
_MKDTEMP_NAME = re.compile(re.escape(DIRECTORY_PREFIX) + r"[a-z0-9_]{8}")
# (counter field, labels, amount)
Increment = tuple[str, dict[str, str], float]


class CounterIncrements:
    """The webhook counters' growth since what the main process last received, in an
    intake process: :meth:`take` what to send, then :meth:`sent` once it has gone."""

    def __init__(self, metrics: SidecarMetrics) -> None:
        self._metrics = metrics
        self._sent: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        # The totals the last take() counted up to, until sent() says they arrived.
        self._taken: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def take(self) -> list[Increment]:
        increments: list[Increment] = []
        self._taken = {}
        for field in WEBHOOK_COUNTERS:
            for family in getattr(self._metrics.webhook, field).collect():
                for sample in family.samples:
                    if not sample.name.endswith("_total"):
                        continue  # _created
                    key = (field, tuple(sorted(sample.labels.items())))
                    amount = sample.value - self._sent.get(key, 0.0)
                    if amount > 0:
                        self._taken[key] = sample.value
                        increments.append((field, dict(sample.labels), amount))
        return increments

    def sent(self) -> None:
        """What the last :meth:`take` returned reached the main process. Until then it
        is counted again by the next take: a send that failed loses nothing."""
        self._sent.update(self._taken)
        self._taken = {}


class AddIncrements:
    """In the main process: adds what intake processes counted to its own counters."""

    def __init__(self, metrics: SidecarMetrics) -> None:
        self._metrics = metrics

    def update(self, received: Any, /) -> None:
        if not isinstance(received, list):
            return
        for increment in received:
            try:
                field, labels, amount = increment
                if field not in WEBHOOK_COUNTERS or not (math.isfinite(amount) and amount > 0):
                    continue
                counter = getattr(self._metrics.webhook, field)
                (counter.labels(**labels) if labels else counter).inc(amount)
            except (TypeError, ValueError):
                log.warning("ignored a malformed counter increment from an intake process")


def intake_app(
    settings: SidecarSettings,
    socket_path: Path,
    idle_timeout: float,
    read_timeout: float = UPSTREAM_READ_TIMEOUT,
) -> web.Application:
    """An intake process's app: the webhook here, the rest forwarded to ``socket_path``
    (where idle connections close after ``idle_timeout``, and an answer may not
    pause for longer than ``read_timeout``)."""
    app = web.Application(middlewares=[request_errors], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[METRICS] = create_metrics()
    # Nobody waits on it here: the worker process polls the store.
    app[WAKEUP] = asyncio.Event()

    async def store(app: web.Application) -> AsyncIterator[None]:
        app[STORE] = await open_store(settings)
        yield
        await app[STORE].close()

    app.cleanup_ctx.extend([store, upstream_session(socket_path, idle_timeout, read_timeout)])
    app.router.add_post(WEBHOOK_PATH, receive)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


# The settings an intake process uses: the webhook's token and body limit, the
# store, logging. The others (the Prometheus token among them) stay in the main
# process; a test holds every field of SidecarSettings to one list or the other.
INTAKE_SETTINGS = (
    "webhook_token",
    "data_dir",
    "store_url",
    "store_password",
    "max_body_bytes",
    "log_level",
    "log_format",
)


def intake_settings(settings: SidecarSettings) -> SidecarSettings:
    """What an intake process is given of ``settings``: :data:`INTAKE_SETTINGS`, named
    one by one rather than copied whole, so a secret added to the settings stays out
    of the intake processes unless named there. It keeps secrets out of their
    arguments, not out of their environment, which they inherit."""
    return SidecarSettings(**{name: getattr(settings, name) for name in INTAKE_SETTINGS})


def intake_main(
    settings: SidecarSettings,
    counters_pipe: multiprocessing.connection.Connection,
    *,
    sockets: list[socket.socket],
    socket_path: Path,
    limits: ServerLimits,
) -> None:
    """Entry point of an intake process."""
    become_child(settings.log_level, settings.log_format, background=False)
    sys.setswitchinterval(SWITCH_INTERVAL)
    raise_open_files_limit()
    try:
        asyncio.run(_serve(settings, sockets, socket_path, limits, counters_pipe))
    finally:
        for sock in sockets:
            sock.close()


async def _serve(
    settings: SidecarSettings,
    sockets: list[socket.socket],
    socket_path: Path,
    limits: ServerLimits,
    counters_pipe: multiprocessing.connection.Connection,
) -> None:
    stop = stop_on_signals()
    app = intake_app(settings, socket_path, limits.header_timeout)
    increments = CounterIncrements(app[METRICS])

    def send() -> None:
        with contextlib.suppress(OSError, ValueError):
            taken = increments.take()
            if taken:
                counters_pipe.send(taken)
                increments.sent()

    async def send_every_interval() -> None:
        while True:
            await asyncio.sleep(METRICS_INTERVAL)
            send()

    sender: asyncio.Task[None] | None = None
    async with serving(app, sockets, limits=limits):
        log.info("intake process started", extra={"pid": os.getpid()})
        sender = asyncio.create_task(send_every_interval())
        await stop.wait()
    # Leaving the block let the requests in flight finish; what they counted
    # goes too.
    if sender is not None:
        sender.cancel()
    send()
    log.info("intake process stopped")


def remove_stale_directories(now: float | None = None) -> list[Path]:
    """Remove the socket directories of main processes that were killed (a clean stop
    removes its own): this user's, older than :data:`STALE_AFTER_SECONDS`, with a
    socket nobody answers on. Returns what was removed."""
    now = time.time() if now is None else now
    removed = []
    for directory in Path(tempfile.gettempdir()).glob(f"{DIRECTORY_PREFIX}*"):
        sock = directory / SOCKET_NAME
        try:
            status = directory.lstat()
            if (
                not _MKDTEMP_NAME.fullmatch(directory.name)
                or not stat.S_ISDIR(status.st_mode)
                or status.st_uid != os.getuid()
                or now - status.st_mtime < STALE_AFTER_SECONDS
                # What a main process leaves, and nothing else: its socket alone.
                or [entry.name for entry in directory.iterdir()] != [SOCKET_NAME]
                or not stat.S_ISSOCK(sock.lstat().st_mode)
                or _answers(sock)
            ):
                continue
            sock.unlink()
            directory.rmdir()
        except OSError:
            continue
        removed.append(directory)
    return removed


def _answers(path: Path) -> bool:
    """Whether a process listens on the Unix socket at ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError:
            return True  # cannot tell: leave it
        return True


class IntakeProcesses:
    """The main process's intake processes: a watched child each, and the Unix socket
    they forward to."""

    def __init__(
        self,
        settings: SidecarSettings,
        metrics: SidecarMetrics,
        sockets: list[socket.socket],
        limits: ServerLimits,
        count: int,
    ) -> None:
        remove_stale_directories()
        self._directory = Path(tempfile.mkdtemp(prefix=DIRECTORY_PREFIX))
        self.socket_path = self._directory / SOCKET_NAME
        self.unix_socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.unix_socket.bind(str(self.socket_path))
            self.unix_socket.listen(limits.backlog)
            self.unix_socket.setblocking(False)
        except BaseException:
            self.close()
            raise
        increments = AddIncrements(metrics)
        self.children = [
            WorkerProcess(
                intake_settings(settings),
                increments,
                target=intake_main,
                name=f"scout-sidecar-intake-{number}",
                target_kwargs={
                    "sockets": sockets,
                    "socket_path": self.socket_path,
                    "limits": limits,
                },
                stop_grace=STOP_GRACE,
            )
            for number in range(1, count + 1)
        ]

    async def stop(self) -> None:
        """Stop every child, each finishing the requests it has (idempotent)."""
        await asyncio.gather(*(asyncio.to_thread(child.stop) for child in self.children))

    def close(self) -> None:
        self.unix_socket.close()
        shutil.rmtree(self._directory, ignore_errors=True)


def serve_with_intake_processes(
    app: web.Application,
    settings: SidecarSettings,
    processes: int,
    prog: str,
    limits: ServerLimits,
) -> int:
    """:func:`exporter.common.web.serve` for the sidecar with ``processes`` HTTP processes
    (this one and ``processes - 1`` intake processes)."""
    sockets = open_listening_sockets(settings.listen_host, settings.listen_port, prog, limits)
    if sockets is None:
        return 1
    try:
        intake = IntakeProcesses(settings, app[METRICS], sockets, limits, processes - 1)
    except OSError as exc:
        # A TMPDIR too long for a socket's path (108 bytes), or not writable.
        for sock in sockets:
            sock.close()
        where = tempfile.gettempdir()
        print(
            f"{prog}: cannot make the intake processes' socket in {where}: {exc}", file=sys.stderr
        )
        return 1
    try:
        app.middlewares.insert(0, believe_intake_peer)
        # Watched like the worker and the scorer: restarted if they die, and
        # reached by a stop signal with them.
        for child in intake.children:
            watch_child(app, child)
        # On a stop signal the intake processes stop first, while this process
        # still answers what they forward; then this one stops.
        run(
            app,
            [*sockets, intake.unix_socket],
            limits=limits,
            on_stop_signal=partial(stop_restarting_children, app),
            before_closing=intake.stop,
        )
    finally:
        intake.close()  # run() has closed the sockets; the directory goes too
    return 0

"""The worker and the return trip in a process of their own.

Why a process: correlation, analysis and the return trip are Python work that
holds the GIL. In the HTTP process they stretch the webhook's acknowledgements
from about 10 ms to a few hundred at the 99th percentile during a storm. Apart,
the webhook only parses and commits, and the two share nothing but the SQLite
file (WAL lets them take turns writing; each waits up to 5 s for the other).

The HTTP process (:class:`WorkerProcess`) starts the child, restarts it if it
dies, and stops it on shutdown. The child:

- dies with its parent (``PR_SET_PDEATHSIG``), and holds an exclusive lock on
  ``worker.lock`` in the data directory, so a kill -9 of the parent can never
  leave two workers folding the same alerts;
- with a PostgreSQL store shared by several replicas, runs the worker and the
  return trip only while it holds the worker lease
  (:mod:`ai_sidecar.store.postgres.lease`), and stops them the moment it
  loses it; ``scout_sidecar_leader`` says which replica leads;
- polls the store for new alerts (the webhook's wake-up event lives in the
  other process), every ``POLL_INTERVAL``;
- builds its components with the factory the parent names (by default
  :func:`ai_sidecar.components.build_components`), so tests can give it fakes;
- is given the settings without the webhook's token (:func:`background_settings`):
  it answers no request;
- sends every metric family of its pipeline registry to the parent every
  ``METRICS_INTERVAL`` through a pipe, and the parent serves them on its
  /metrics (:class:`~ai_sidecar.metrics.ForwardedMetrics`);
- receives a reloaded ``llm`` section through a second pipe, the control pipe
  (:meth:`WorkerProcess.reconfigure`), and puts it in force for the LLM guard
  and policy through its :class:`~ai_sidecar.enrichment.llm.reload.LlmSettingsHub`;
  a child started later (a restart) is given the config as reloaded.

The anomaly scorer's child (:mod:`ai_sidecar.anomaly.service`) runs under the
same watch, with its own entry point, and starts the way this one does
(:func:`become_child`, :func:`stop_on_signals`, :func:`until_stopped`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from ai_sidecar.components import WORKER_SYNCHRONOUS, ComponentsFactory, open_store
from ai_sidecar.config import LlmConfig, SidecarConfig
from ai_sidecar.enrichment.llm.reload import LlmSettingsHub
from ai_sidecar.metrics import create_metrics
from ai_sidecar.pipeline import cancel_tasks, run_pipeline
from ai_sidecar.settings import SidecarSettings
from ai_sidecar.store.postgres import Lease, lead
from exporter.common.logs import LogFormat, configure_logging

log = logging.getLogger("ai_sidecar.worker_process")

LOCK_FILE = "worker.lock"
POLL_INTERVAL = 0.1
METRICS_INTERVAL = 1.0
# Seconds the parent waits for the child to stop on SIGTERM before killing it.
STOP_GRACE = 10.0
RESTART_DELAY = 1.0
# A child that dies sooner than this after its start is restarted after twice the
# last delay, up to the maximum; one that ran longer, after RESTART_DELAY again.
HEALTHY_RUN_SECONDS = 60.0
MAX_RESTART_DELAY = 30.0
SWITCH_INTERVAL = 0.0005
# The worker runs this much nicer than the HTTP process: on a busy machine the
# webhook's acknowledgements, which Alertmanager waits for, get the CPU first,
# and the worker catches up from the durable backlog (in bigger, cheaper
# batches) once the burst is over.
NICENESS = 10
_PR_SET_PDEATHSIG = 1
# Exit status of a child whose parent died before it could ask to die with it.
ORPHANED_EXIT = 3


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op elsewhere).

    A spawned child gets here a second or more after it started (it imports
    first): a parent killed in between is already gone and the request would
    never fire, so a child that finds itself orphaned ends at once.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        os._exit(ORPHANED_EXIT)


def lock_file(path: Path) -> int:
    """Hold an exclusive lock on ``path`` for the life of this process; waits for a holder."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def become_child(log_level: str, log_format: LogFormat, *, background: bool = True) -> None:
    """What every child process of the sidecar does first: die with the parent, ignore
    SIGHUP, yield the CPU to the HTTP process (``background``; not an intake process,
    which is an HTTP process itself), log like it."""
    die_with_parent()
    # A reload is the parent's to do (it hands the worker the new llm section);
    # a SIGHUP to the whole process group must not end a child.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if background:
        with contextlib.suppress(OSError):
            os.nice(NICENESS)
    configure_logging(log_level, log_format)


def stop_on_signals() -> asyncio.Event:
    """An event SIGTERM or SIGINT sets: how a child process is asked to stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    return stop


async def until_stopped(main: asyncio.Task[Any], stop: asyncio.Event) -> None:
    """Wait until ``main`` ends or ``stop`` is set."""
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({main, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()


def background_settings(settings: SidecarSettings) -> SidecarSettings:
    """``settings`` for a child that answers no request (the worker, the anomaly scorer):
    without the webhook's token, which only the HTTP processes check."""
    return replace(settings, webhook_token=None)


def child_main(
    settings: SidecarSettings,
    metrics_pipe: multiprocessing.connection.Connection,
    *,
    config: SidecarConfig,
    components: ComponentsFactory,
    control: multiprocessing.connection.Connection | None = None,
) -> None:
    """Entry point of the worker process; ``control`` brings reloaded ``llm`` sections."""
    become_child(settings.log_level, settings.log_format)
    # The store's writer thread gives up the GIL around every statement; with
    # the default 5 ms switch interval, taking it back from a busy worker
    # stretches each write transaction (and the webhook's wait for the write
    # lock) by as much per statement.
    sys.setswitchinterval(SWITCH_INTERVAL)
    lock = lock_file(settings.data_dir / LOCK_FILE)
    try:
        asyncio.run(_serve(settings, config, components, metrics_pipe, control))
    finally:
        os.close(lock)


async def _serve(
    settings: SidecarSettings,
    config: SidecarConfig,
    components: ComponentsFactory,
    metrics_pipe: multiprocessing.connection.Connection,
    control: multiprocessing.connection.Connection | None = None,
) -> None:
    stop = stop_on_signals()
    llm_settings = LlmSettingsHub(config.llm, config.language)
    if control is not None:
        follow_reloads(control, llm_settings)
    pipeline_registry = CollectorRegistry()
    metrics = create_metrics(pipeline_registry=pipeline_registry)
    wakeup = asyncio.Event()
    location = settings.store_location
    lease = None if location is None else Lease(location)
    # SQLite: opened here, so a store that cannot open ends the process (and
    # the parent says so and restarts it). PostgreSQL: opened per term as leader.
    only_store = (
        await open_store(settings, worker=True, synchronous=WORKER_SYNCHRONOUS)
        if lease is None
        else None
    )

    async def work() -> None:
        db = only_store or await open_store(settings, worker=True, fence=lease)
        try:
            async with (
                aiohttp.ClientSession() as session,
                run_pipeline(
                    db,
                    settings,
                    config,
                    metrics,
                    session,
                    wakeup,
                    components,
                    permit=lease,
                    llm_settings=llm_settings,
                ),
            ):
                metrics.leader.set(1)
                await asyncio.Future()  # until cancelled
        finally:
            metrics.leader.set(0)
            await db.close()

    if lease is None:
        main = asyncio.create_task(work())
    else:
        main = asyncio.create_task(lead(lease, work, _log_leadership))
    tasks = [
        main,
        asyncio.create_task(_poll(wakeup)),
        asyncio.create_task(_send_metrics(pipeline_registry, metrics_pipe)),
    ]
    log.info("worker process started", extra={"pid": os.getpid()})
    await until_stopped(main, stop)
    await cancel_tasks(tasks)
    log.info("worker process stopped")


def follow_reloads(
    control: multiprocessing.connection.Connection, llm_settings: LlmSettingsHub
) -> None:
    """Publish every ``llm`` section and language the parent sends on ``control``, until
    it closes."""
    loop = asyncio.get_running_loop()

    def receive() -> None:
        try:
            while control.poll():
                received = control.recv()
                # (section, language) from the parent; a section alone keeps the language.
                section, language = received if isinstance(received, tuple) else (received, None)
                if isinstance(section, LlmConfig):
                    llm_settings.publish(section, language)
                    log.info(
                        "reloaded llm section and language in force",
                        extra={"active": section.active, "language": language},
                    )
        except (EOFError, OSError):  # the parent is gone: SIGKILL follows
            loop.remove_reader(control.fileno())

    loop.add_reader(control.fileno(), receive)


def _log_leadership(leader: bool) -> None:
    """Each change of leadership, logged once (the lease loop calls this only on a change)."""
    if leader:
        log.info("took the worker lease: running the worker and the return trip")
    else:
        log.warning("released the worker lease: the worker and the return trip stopped")


async def _poll(wakeup: asyncio.Event) -> None:
    # The worker checks the store itself after each wake-up; a spare one is cheap.
    while True:
        await asyncio.sleep(POLL_INTERVAL)
        wakeup.set()


async def _send_metrics(
    registry: CollectorRegistry, pipe: multiprocessing.connection.Connection
) -> None:
    while True:
        with contextlib.suppress(OSError, ValueError):
            pipe.send(list(registry.collect()))
        await asyncio.sleep(METRICS_INTERVAL)


# The children an app's WorkerProcess handles watch (worker, anomaly scorer).
WATCHED = web.AppKey("watched_children", list)


def watched_children(app: web.Application) -> list[WorkerProcess]:
    """The children a stop signal reaches first (:func:`stop_restarting_children`)."""
    children: list[WorkerProcess] = app.setdefault(WATCHED, [])
    return children


def watch_child(app: web.Application, child: WorkerProcess) -> None:
    """Run ``child`` for the life of ``app``, listed in :func:`watched_children`."""
    watched_children(app).append(child)
    app.cleanup_ctx.append(child.cleanup_ctx)


def stop_restarting_children(app: web.Application) -> None:
    """On SIGTERM or SIGINT: the children may have had it too (a signal to the process
    group); none that ends now is started again."""
    for child in watched_children(app):
        child.stop_restarting()


class Receiver(Protocol):
    """What takes each message a child sends on its pipe (its metrics)."""

    def update(self, received: Any, /) -> None: ...


class WorkerProcess:
    """The HTTP process's handle on the worker process: start, watch, restart, stop.

    The child runs ``target(settings, pipe, **target_kwargs)``: the settings (which
    say how to log), the pipe it sends its metrics on, and what else that target
    takes (the worker: its config and components; an intake process: the listening
    sockets), so nothing a child does not use crosses into it.
    """

    def __init__(
        self,
        settings: SidecarSettings,
        forwarded: Receiver,
        *,
        target: Callable[..., None] = child_main,
        name: str = "scout-sidecar-worker",
        reloadable: bool = False,
        target_kwargs: Mapping[str, Any] | None = None,
        stop_grace: float = STOP_GRACE,
    ) -> None:
        # How long stop() waits for the child to end after SIGTERM, then kills it.
        self._stop_grace = stop_grace
        self._settings = settings
        # Given at every start; a reload replaces the worker's "config".
        self._target_kwargs = dict(target_kwargs or {})
        # The worker's target takes a control pipe for reloads; the others do not.
        self._reloadable = reloadable
        self._control: multiprocessing.connection.Connection | None = None
        # Another child (the anomaly scorer) runs under the same watch with its own entry point.
        self._target = target
        self._name = name
        self._forwarded = forwarded
        # spawn, not fork: the parent has threads (the store's) and an event loop.
        self._context = multiprocessing.get_context("spawn")
        self._process: multiprocessing.process.BaseProcess | None = None
        self._stopping = threading.Event()
        # Starting a child and stopping take turns, so stop() never misses one.
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    @property
    def stop_grace(self) -> float:
        """How long :meth:`stop` waits for the child after SIGTERM before killing it."""
        return self._stop_grace

    async def cleanup_ctx(self, _: web.Application) -> AsyncIterator[None]:
        """Run the child for the life of an app."""
        self.start()
        yield
        # Off the loop: stopping waits for the child to finish its work.
        await asyncio.to_thread(self.stop)

    def start(self) -> None:
        self._watcher = threading.Thread(target=self._watch, name="scout-worker-watch", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        """Run the child; when it dies unasked, or cannot even be started, say so and
        start another: this thread must outlive any one failure, or no worker runs
        again while the webhook goes on acknowledging alerts."""
        delay = RESTART_DELAY
        while True:
            began = time.monotonic()
            try:
                if not self._run_child():
                    return
            except Exception:  # watch boundary: a fork refused (EAGAIN, ENOMEM), a bad pipe
                log.exception(
                    "cannot run the child process; trying again", extra={"child": self._name}
                )
            if time.monotonic() - began > HEALTHY_RUN_SECONDS:
                delay = RESTART_DELAY
            if self._stopping.wait(delay):
                return
            # A child that keeps failing at once is started less and less often.
            delay = min(2 * delay, MAX_RESTART_DELAY)

    def _run_child(self) -> bool:
        """Start the child and forward its metrics until it exits; False when stopping
        (nothing was started)."""
        receiver, sender = self._context.Pipe(duplex=False)
        control_receiver, control_sender = self._context.Pipe(duplex=False)
        try:
            with self._lock:
                if self._stopping.is_set():
                    return False
                extra = dict(self._target_kwargs)
                if self._reloadable:
                    extra["control"] = control_receiver
                process = self._context.Process(
                    target=self._target,
                    args=(self._settings, sender),
                    kwargs=extra,
                    name=self._name,
                )
                process.start()
                self._process = process
                self._control = control_sender if self._reloadable else None
            sender.close()
            control_receiver.close()
            with contextlib.suppress(EOFError, OSError):
                while True:
                    self._forwarded.update(receiver.recv())
            process.join()
        finally:
            with self._lock:
                self._control = None
            for end in (receiver, sender, control_receiver, control_sender):
                end.close()
        if not self._stopping.is_set():
            # "child", not "process": a LogRecord attribute, which extra may
            # not overwrite (the KeyError ended this thread, and no child
            # was ever started again).
            log.error(
                "child process exited; restarting it",
                extra={"child": self._name, "exitcode": process.exitcode},
            )
        return True

    def stop_restarting(self) -> None:
        """Start no child again once the running one ends (stop() also stops it)."""
        self._stopping.set()

    def reconfigure(self, config: SidecarConfig) -> None:
        """A reloaded config for a ``reloadable`` child: its ``llm`` section to the running
        one, all of it to the next."""
        if not self._reloadable:
            # Its entry point takes no config: the next start would fail, over and over.
            raise ValueError(f"{self._name} takes no reloaded config")
        with self._lock:
            self._target_kwargs["config"] = config
            if self._control is not None:
                # The child may be dying (it is restarted with the new config then).
                with contextlib.suppress(OSError, ValueError):
                    self._control.send((config.llm, config.language))

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            process = self._process
        if process is not None and process.is_alive():
            process.terminate()
            process.join(self._stop_grace)
            if process.is_alive():
                process.kill()
                process.join()
        if self._watcher is not None:
            self._watcher.join(self._stop_grace)

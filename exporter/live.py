"""The settings a daemon starts with, and the config in force, which reloads can replace.

``LiveConfig`` holds the config and what is built from it: the enabled
collectors and one scraper per multi-target kind. They are started when the
app starts (``start``) and closed when it stops (``close``); a reload builds a
new set from the new config, closes the old set, and starts the new one, so a
collector or scraper that owns a socket, a thread or a task never leaks; a new
collector takes over what the old one of its name learned (``lifecycle.Successor``).
The old scrapers are closed in the background: a reload returns without waiting
for them (a WinRM scraper's idle shells are deleted on their hosts), and
``close`` waits for what is still closing. When the app stops, ``interrupt``
first cuts short what the scrapers, old and new, have in flight.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from exporter.collectors import COLLECTORS, Collector, CollectorSpec, HostView
from exporter.config import ExporterConfig, load_config
from exporter.errors import ConfigError
from exporter.lifecycle import (
    Interruptible,
    Lifecycle,
    close_all,
    hand_over,
    interrupt_all,
    start_all,
)
from exporter.targets.kind import A, F, M, T, TargetKind, TargetScraper

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Settings:
    config_file: Path | None = None
    expand_env: bool = False
    enabled_collectors: frozenset[str] = frozenset(
        spec.name for spec in COLLECTORS if spec.enabled_by_default
    )
    timeout_offset_seconds: float = 0.5
    host_view: HostView = field(default_factory=HostView)
    # TLS, basic auth and headers (exporter-toolkit's format); None serves plain HTTP.
    web_config_file: Path | None = None
    # POST /-/reload answers only with --web.enable-lifecycle, as in Prometheus.
    enable_lifecycle: bool = False
    # --snmp.wrap-large-counters: Counter64 values modulo 2**53, as snmp_exporter by default.
    snmp_wrap_large_counters: bool = True


AnyScraper = TargetScraper[Any, Any, Any, Any]


@dataclass(frozen=True, slots=True)
class Running:
    """What one config builds: the collectors and the scrapers of the multi-target kinds."""

    collectors: dict[str, Collector]
    target_scrapers: dict[str, AnyScraper]

    def parts(self) -> list[Lifecycle]:
        return [*self.collectors.values(), *self.target_scrapers.values()]


class LiveConfig:
    """The config in force, what was built from it, and how the last reload went."""

    def __init__(
        self,
        settings: Settings,
        config: ExporterConfig,
        specs: Sequence[CollectorSpec],
        kinds: Sequence[TargetKind[Any, Any, Any, Any]] = (),
    ) -> None:
        self._settings = settings
        self._specs = [s for s in specs if s.name in settings.enabled_collectors]
        self._kinds = kinds
        self._lock = asyncio.Lock()
        # The tasks closing old scrapers a reload replaced.
        self._closing: set[asyncio.Task[None]] = set()
        # Old scrapers with work a stop must cut, kept until that work ends: a
        # close stops waiting for a WinRM scrape long before its deadline.
        self._retired: list[Interruptible] = []
        # Set by ``interrupt``: what a reload in progress retires or builds after
        # it is cut at once too.
        self._interrupted = False
        self.config = config
        self._running = self._build(config)
        self.last_reload_successful = True
        self.last_reload_success_time = time.time()

    @property
    def collectors(self) -> dict[str, Collector]:
        return self._running.collectors

    def target_scraper(self, kind: TargetKind[T, M, A, F]) -> TargetScraper[T, M, A, F]:
        """The scraper of ``kind`` built from the config in force."""
        return cast(TargetScraper[T, M, A, F], self._running.target_scrapers[kind.name])

    def _build(self, config: ExporterConfig) -> Running:
        view = self._settings.host_view
        return Running(
            {spec.name: spec.build(config, view) for spec in self._specs},
            {
                kind.name: kind.build_with_settings(self._settings)
                if kind.build_with_settings is not None
                else kind.build()
                for kind in self._kinds
            },
        )

    async def start(self) -> None:
        await start_all(self._running.parts())

    def interrupt(self) -> None:
        """The app stops: cut short the scrapes in flight, on the scrapers a
        reload replaced too (their scrapes may still run to their deadlines)."""
        self._interrupted = True
        interrupt_all([*self._running.target_scrapers.values(), *self._retired])

    def _serve(self, config: ExporterConfig, running: Running) -> None:
        """Send scrapes to ``running`` from now on; those built after a stop began
        (by a reload in progress) are cut at once, so no scrape waits on them."""
        self.config, self._running = config, running
        if self._interrupted:
            interrupt_all(running.target_scrapers.values())

    def _retire(self, scrapers: dict[str, AnyScraper]) -> None:
        """Keep ``scrapers``, which no new scrape will reach, within a stop's reach
        for as long as they have work in flight; after a stop, cut it at once."""
        kept = [scraper for scraper in self._retired if scraper.busy()]
        kept += [
            s
            for s in scrapers.values()
            if isinstance(s, Interruptible) and not any(s is k for k in kept)
        ]
        self._retired = kept
        if self._interrupted:
            interrupt_all(scrapers.values())

    async def close(self) -> None:
        await close_all(self._running.parts())
        if self._closing:
            await asyncio.wait(list(self._closing))

    def _close_later(self, scrapers: dict[str, AnyScraper]) -> None:
        """Close ``scrapers`` in the background, held until done (the loop keeps
        only a weak reference to a task)."""
        if not scrapers:
            return
        self._retire(scrapers)
        task = asyncio.create_task(close_all(scrapers.values()))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def reload(self) -> None:
        """Load the config file again; on error keep the old config and raise.

        The new collectors and scrapers are built before anything changes, so a
        config that fails to build changes nothing. Then the new scrapers are
        started and scrapes sent to them, the old collectors are closed (freeing
        a port a new one may bind), the new collectors take over what the old ones
        learned (the flow templates and counts) and start, and only then are
        scrapes sent to them; the old scrapers are closed last, in the background
        (scrapes in flight may still read through them). If the new set fails
        to start, it is closed and the previous config comes back, built afresh
        (unless only a scraper failed, before anything changed).
        """
        async with self._lock:  # two SIGHUPs in a row must not interleave
            try:
                config = load_config(
                    self._settings.config_file, expand_env=self._settings.expand_env
                )
                running = self._build(config)
            except ConfigError:
                self.last_reload_successful = False
                raise
            except Exception as exc:  # reload boundary: never let a surprise pass as success
                self.last_reload_successful = False
                raise ConfigError(f"unexpected error loading the config: {exc!r}") from None
            previous, old = self.config, self._running
            # Within a stop's reach from now: between the swap below and their
            # close, the old scrapers are in neither the config in force nor closing.
            self._retire(old.target_scrapers)
            # The new scrapers start before scrapes are sent to them (they bind
            # nothing), so none reaches one not started.
            try:
                await start_all(list(running.target_scrapers.values()))
            except Exception as exc:  # reload boundary: nothing has changed yet
                self.last_reload_successful = False
                raise ConfigError(f"cannot start what the new config needs: {exc!r}") from None
            # Scrapes read the old collectors until the new ones have taken over and
            # started: one that read a new collector before would see its counts at 0
            # (a counter reset), or take-over change what it is reading.
            self._serve(config, Running(old.collectors, running.target_scrapers))
            # The old collectors close before the new ones start: a listener frees
            # the port its successor binds (a closed collector still reads its counts).
            # The old scrapers close last, and in the background: scrapes in flight
            # may still read through them (a WinRM scrape ends only at its
            # deadline), and the reload must not wait on a host's clean-up.
            try:
                await close_all(old.collectors.values())
                hand_over(running.collectors, old.collectors)
                await start_all(list(running.collectors.values()))
                self._running = running
            except Exception as exc:  # reload boundary: fall back to the config that worked
                self.last_reload_successful = False
                await self._restore(previous, old.collectors, running.collectors)
                self._close_later(running.target_scrapers)
                raise ConfigError(f"cannot start what the new config needs: {exc!r}") from None
            finally:
                self._close_later(old.target_scrapers)
            self.last_reload_successful = True
            self.last_reload_success_time = time.time()

    async def _restore(
        self, config: ExporterConfig, old: dict[str, Collector], failed: dict[str, Collector]
    ) -> None:
        """Run ``config`` again, with collectors and scrapers built afresh.

        The collectors take over from the ``old`` ones, built from ``config``, whose
        counts still fit it, then from the ``failed`` ones, which had taken over from
        ``old`` and may have learned since (newer templates, more bad packets).
        """
        restored = self._build(config)
        hand_over(restored.collectors, old)
        hand_over(restored.collectors, failed)
        try:
            # Scrapes go to each part once it started, as in ``reload``.
            await start_all(list(restored.target_scrapers.values()))
            self._serve(config, Running(old, restored.target_scrapers))
            await start_all(list(restored.collectors.values()))
        except Exception:  # reload boundary: serve what did start rather than nothing
            log.exception("the previous config's collectors and scrapers failed to start again")
        self.config, self._running = config, restored

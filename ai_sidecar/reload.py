"""Config reload for the sidecar: SIGHUP or ``POST /-/reload`` re-read ``--config.file``.

Only the ``llm`` section (the kill switch, the allow-list, the budget caps,
prices, retries, time box, circuit and policy settings) and ``language`` (the
language the next analyses, root-cause reasons and priorities are written in)
are applied live; every
other section is read at start, and a reload that changes one says in its log
line which ones wait for a restart. The LLM's provider, base URL and key are
in the ``llm`` section but are also built once: changing them takes a restart
too (setting ``enabled: false`` or ``provider: none`` stops all calls at once).

An invalid file is refused with the loader's error (logged; ``POST /-/reload``
answers 400 with it), and the config in force stays.
``scout_sidecar_config_reloads_total{outcome}`` counts reloads,
``scout_sidecar_config_last_reload_successful`` says how the last one went and
``scout_sidecar_config_last_reload_success_timestamp_seconds`` when the config
in force was read, as Prometheus's own metrics do.

The new section goes wherever the pipeline runs: to the process's
:class:`~ai_sidecar.enrichment.llm.reload.LlmSettingsHub` when it runs in the
HTTP process, through the worker process's control pipe otherwise
(:meth:`ai_sidecar.worker_process.WorkerProcess.reconfigure`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from ai_sidecar.auth import require_token
from ai_sidecar.config import SidecarConfig, load_config
from ai_sidecar.errors import BadRequestError, ConfigError
from ai_sidecar.metrics import SidecarMetrics
from ai_sidecar.settings import SidecarSettings

log = logging.getLogger("ai_sidecar.reload")

# What a reload puts in force; everything else waits for a restart.
LIVE_SECTIONS = ("llm", "language")


class ConfigReloader:
    """The config in force in this sidecar, and how to read a new one.

    ``apply`` receives the config after a successful reload: the old one with
    the new ``llm`` section and ``language``. It must not block (it hands them on).
    """

    def __init__(
        self,
        settings: SidecarSettings,
        config: SidecarConfig,
        metrics: SidecarMetrics,
        apply: Callable[[SidecarConfig], None],
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._apply = apply
        self._lock = asyncio.Lock()
        self.config = config
        metrics.config_last_reload_successful.set(1)
        metrics.config_last_reload_success_time.set(time.time())

    async def reload(self) -> str | None:
        """Read the file again; the loader's error when it is refused, None when it took."""
        async with self._lock:  # two SIGHUPs in a row must not interleave
            try:
                loaded = await asyncio.to_thread(load_config, self._settings.config_file)
            except ConfigError as exc:
                self._metrics.config_reloads.labels("failure").inc()
                self._metrics.config_last_reload_successful.set(0)
                log.error("config reload failed, keeping the config in force: %s", exc)
                return str(exc)
            waiting = [
                name
                for name in SidecarConfig.model_fields
                if name not in LIVE_SECTIONS and getattr(loaded, name) != getattr(self.config, name)
            ]
            self.config = self.config.model_copy(
                update={name: getattr(loaded, name) for name in LIVE_SECTIONS}
            )
            self._apply(self.config)
            self._metrics.config_reloads.labels("success").inc()
            self._metrics.config_last_reload_successful.set(1)
            self._metrics.config_last_reload_success_time.set(time.time())
            extra = {"llm_active": loaded.llm.active, "language": loaded.language}
            if waiting:
                log.warning(
                    "config reloaded: the llm section and language are in force; "
                    "changes to %s take a restart",
                    ", ".join(waiting),
                    extra=extra,
                )
            else:
                log.info("config reloaded: the llm section and language are in force", extra=extra)
            return None

    def endpoint(self) -> Callable[[web.Request], Awaitable[web.Response]]:
        """``POST /-/reload``: behind the API's bearer token; 400 with the error when refused."""

        async def reload(request: web.Request) -> web.Response:
            require_token(request, self._settings.webhook_token)
            problem = await self.reload()
            if problem is not None:
                raise BadRequestError(problem)
            return web.json_response({"status": "reloaded"})

        return reload

    def on_sighup(self, app: web.Application) -> None:
        """Reload on SIGHUP while ``app`` runs (what ``scout-sidecar serve`` asks for)."""
        reloads: set[asyncio.Task[str | None]] = set()

        def reload() -> None:
            # Held until done: the loop keeps only a weak reference to a task.
            task = asyncio.ensure_future(self.reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        async def handler(_: web.Application) -> AsyncIterator[None]:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, reload)
            yield
            loop.remove_signal_handler(signal.SIGHUP)

        app.cleanup_ctx.append(handler)

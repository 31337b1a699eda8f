"""The exporter's HTTP app: exposition, health, config view and reload."""

from __future__ import annotations

import asyncio
import gc
import logging
import platform
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web
from prometheus_client import PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.collectors import COLLECTORS, CollectorSpec
from exporter.common.gctime import GC_TIMER
from exporter.common.version import __version__
from exporter.common.web import healthy, landing_page, ready, render_families
from exporter.common.webconfig import (
    WEB_SECURITY,
    WebConfigError,
    WebSecurity,
    cross_site_refusal,
)
from exporter.config import ExporterConfig, load_config
from exporter.errors import BadRequestError, ConfigError
from exporter.keys import LIVE_CONFIG, RUNNER, SETTINGS, TARGET_REFUSALS
from exporter.live import LiveConfig, Settings
from exporter.scrape import ScrapeRunner, collector_status_families, scrape_deadline
from exporter.targets.handler import AnyKind, setup_targets
from exporter.targets.registry import TARGET_KINDS

log = logging.getLogger(__name__)

DEFAULT_PORT = 8781


def _exporter_families(live: LiveConfig) -> list[Metric]:
    build = GaugeMetricFamily(
        "scout_exporter_build_info",
        "The exporter's version; the value is always 1.",
        labels=["version", "pythonversion"],
    )
    build.add_metric([__version__, platform.python_version()], 1)
    reload_ok = GaugeMetricFamily(
        "scout_config_last_reload_successful", "1 if the last config reload succeeded."
    )
    reload_ok.add_metric([], 1 if live.last_reload_successful else 0)
    reload_time = GaugeMetricFamily(
        "scout_config_last_reload_success_timestamp_seconds",
        "Unix time of the last successful config load.",
    )
    reload_time.add_metric([], live.last_reload_success_time)
    return [build, reload_ok, reload_time]


async def metrics(request: web.Request) -> web.Response:
    app = request.app
    live = app[LIVE_CONFIG]
    deadline = scrape_deadline(
        request.headers.get("X-Prometheus-Scrape-Timeout-Seconds"),
        app[SETTINGS].timeout_offset_seconds,
    )
    results = await app[RUNNER].scrape(live.collectors, deadline)
    families: list[Metric] = _exporter_families(live)
    families += collector_status_families(results)
    families += app[TARGET_REFUSALS].families()
    for result in results:
        families += result.families
    families += ProcessCollector(registry=None).collect()
    families += PlatformCollector(registry=None).collect()
    families += GC_TIMER.families()
    return render_families(request, families)


def _landing(kinds: Sequence[AnyKind]) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def landing(request: web.Request) -> web.Response:
        collectors = ", ".join(sorted(request.app[LIVE_CONFIG].collectors)) or "none"
        reload_how = (
            "POST /-/reload or send SIGHUP"
            if request.app[SETTINGS].enable_lifecycle
            else "Send SIGHUP (POST /-/reload needs --web.enable-lifecycle)"
        )
        return landing_page(
            f"Scout exporter {__version__}",
            f"Collectors enabled: {collectors}. {reload_how} to reload the config.",
            (
                ("/metrics", "metrics of this host and of the exporter"),
                ("/config", "the config in force, secrets masked"),
                *((f"/{kind.name}?{kind.example}", kind.description) for kind in kinds),
                ("/-/healthy", "liveness"),
                ("/-/ready", "readiness"),
            ),
        )

    return landing


async def show_config(request: web.Request) -> web.Response:
    text = request.app[LIVE_CONFIG].config.masked_yaml()
    return web.Response(text=text, content_type="text/yaml")


async def reload_config(app: web.Application) -> str | None:
    """Reload; returns the error message, or ``None`` when the new config took.

    Collectors and target scrapers (sessions, caches) are built anew from the
    new config, the old ones closed and the new ones started.
    """
    live = app[LIVE_CONFIG]
    security = app[WEB_SECURITY]
    try:
        # Both or neither: the web config is built (off the loop: files, bcrypt)
        # but put in force only once the main config has taken.
        web_config = await asyncio.to_thread(security.prepare)
        await live.reload()
    except (ConfigError, WebConfigError) as exc:
        live.last_reload_successful = False
        log.error("config reload failed, keeping the previous config: %s", exc)
        return str(exc)
    security.commit(web_config)
    # What cli.tune_garbage_collector froze at start includes the config just replaced;
    # frozen, its reference cycles would never be collected. Thawed, it goes back to
    # the oldest generation (nothing is frozen again: each reload would freeze the
    # objects of the scrapes then in flight, cycles and all).
    gc.unfreeze()
    log.info("config reloaded")
    return None


@web.middleware
async def request_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The one place where request errors become HTTP answers."""
    try:
        return await handler(request)
    except BadRequestError as exc:
        return web.Response(status=exc.http_status, text=f"{exc}\n")


async def reload(request: web.Request) -> web.Response:
    if not request.app[SETTINGS].enable_lifecycle:
        return web.Response(
            status=403,
            text="reloading over HTTP is off; start scout-exporter with --web.enable-lifecycle"
            " to allow it (SIGHUP reloads either way)\n",
        )
    refusal = cross_site_refusal(request)
    if refusal is not None:
        return web.Response(status=403, text=f"{refusal}\n")
    error = await reload_config(request.app)
    if error is not None:
        return web.Response(status=500, text=f"failed to reload config: {error}\n")
    return web.Response(text="config reloaded\n")


def setup_routes(app: web.Application, kinds: Sequence[AnyKind]) -> None:
    app.router.add_get("/", _landing(kinds))
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/config", show_config)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post("/-/reload", reload)
    setup_targets(app, kinds)


async def _running(app: web.Application) -> AsyncIterator[None]:
    """Collectors and target scrapers: started with the app, closed when it stops."""
    live = app[LIVE_CONFIG]
    await live.start()
    yield
    await live.close()


async def _interrupt(app: web.Application) -> None:
    # On shutdown, before the server waits for the requests in flight: a scrape
    # cut short here is answered at once, and the stop does not wait for it.
    app[LIVE_CONFIG].interrupt()


async def _collector_threads(app: web.Application) -> AsyncIterator[None]:
    workers = max(4, 2 * len(app[LIVE_CONFIG].collectors))
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="collector")
    app[RUNNER] = ScrapeRunner(executor)
    yield
    # A collector stuck in a system call must not keep the process alive.
    executor.shutdown(wait=False, cancel_futures=True)


def create_app(
    settings: Settings,
    config: ExporterConfig | None = None,
    *,
    collector_specs: Sequence[CollectorSpec] = COLLECTORS,
    security: WebSecurity | None = None,
    target_kinds: Sequence[AnyKind] = TARGET_KINDS,
) -> web.Application:
    """Build the app. ``config`` defaults to loading ``settings.config_file``,
    ``security`` to loading ``settings.web_config_file``.

    ``collector_specs`` and ``target_kinds`` are the two tables; tests pass their own.
    """
    if config is None:
        config = load_config(settings.config_file, expand_env=settings.expand_env)
    if security is None:
        security = WebSecurity(settings.web_config_file)
    # Authentication first: nothing else runs for a request that fails it.
    app = web.Application(middlewares=[security.middleware, request_errors])
    app.on_response_prepare.append(security.add_headers)
    app[WEB_SECURITY] = security
    app[SETTINGS] = settings
    app[LIVE_CONFIG] = LiveConfig(settings, config, collector_specs, target_kinds)
    app.cleanup_ctx.append(_collector_threads)
    app.cleanup_ctx.append(_running)
    app.on_shutdown.append(_interrupt)
    setup_routes(app, target_kinds)
    return app

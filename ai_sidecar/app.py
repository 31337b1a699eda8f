"""The sidecar's HTTP app: webhook, incidents API, metrics and health.

Background work lives in cleanup contexts, started in this order and stopped
in the reverse one: the store, then the pipeline (worker and return trip,
:mod:`ai_sidecar.pipeline`), in this process or in a child process. So on
shutdown the worker stops first, the return trip next, and the store closes
only when nothing can write to it.

Its metrics live in a registry owned by the app, not prometheus_client's global
one, so two apps in one process (tests, HA replicas) never share counters.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from ai_sidecar import __version__
from ai_sidecar.anomaly.service import add_anomaly_scoring
from ai_sidecar.api import setup_api
from ai_sidecar.components import ComponentsFactory, build_components, open_store
from ai_sidecar.config import SidecarConfig
from ai_sidecar.console import setup_console
from ai_sidecar.enrichment.llm.reload import LlmSettingsHub
from ai_sidecar.graph_route import add_graph_route
from ai_sidecar.keys import CONFIG, METRICS, RELOADER, SETTINGS, STORE, WAKEUP
from ai_sidecar.metrics import ForwardedMetrics, create_metrics
from ai_sidecar.pipeline import run_pipeline
from ai_sidecar.reload import ConfigReloader
from ai_sidecar.request_errors import request_errors
from ai_sidecar.settings import SidecarSettings
from ai_sidecar.webhook import WEBHOOK_PATH, receive
from ai_sidecar.worker_process import WorkerProcess, background_settings, watch_child
from exporter.common.web import healthy, landing_page, ready, render_registry

log = logging.getLogger("ai_sidecar")


async def metrics(request: web.Request) -> web.Response:
    return render_registry(request, request.app[METRICS].registry)


async def landing(_: web.Request) -> web.Response:
    return landing_page(
        f"Scout AI sidecar {__version__}",
        "Correlates alerts into incidents and explains them.",
        (
            ("/console/", "the console: incidents, anomalies and reports (sign in)"),
            ("/metrics", "the sidecar's own metrics"),
            ("/-/healthy", "liveness"),
            ("/-/ready", "readiness"),
        ),
        unlinked=(
            ("/api/v1/incidents", "incidents, JSON with the bearer token"),
            (
                "/-/reload",
                "POST with the bearer token (or SIGHUP): apply the config's llm section and "
                "language",
            ),
            ("/graphs/<incident>.png", "an incident's graph, at the signed URL its alerts carry"),
        ),
    )


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/", landing)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post(WEBHOOK_PATH, receive)
    app.router.add_post("/-/reload", app[RELOADER].endpoint())
    setup_api(app)
    setup_console(app)


def create_app(
    settings: SidecarSettings,
    config: SidecarConfig | None = None,
    *,
    components: ComponentsFactory = build_components,
    worker_process: bool = False,
    reload_on_sighup: bool = False,
) -> web.Application:
    """The sidecar.

    ``worker_process``: run the worker and the return trip in a child process
    (what ``scout-sidecar serve`` does; see :mod:`ai_sidecar.worker_process`).
    Otherwise they run in this process. Either way ``components`` builds what
    the worker works with (tests give fakes; for the child process the factory
    must be importable by name). A PostgreSQL store needs the worker process:
    only it takes the worker lease that keeps replicas from working at once.
    ``POST /-/reload`` (and SIGHUP with ``reload_on_sighup``) re-reads the
    config file and applies its ``llm`` section (:mod:`ai_sidecar.reload`).
    """
    if settings.store_url is not None and not worker_process:
        raise ValueError(
            "a PostgreSQL store (store_url) needs worker_process=True: the pipeline "
            "runs only under the worker lease, which the worker process holds"
        )
    config = config or SidecarConfig()
    app = web.Application(middlewares=[request_errors], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[CONFIG] = config
    app[WAKEUP] = asyncio.Event()
    llm_settings = LlmSettingsHub(config.llm, config.language)

    async def store(app: web.Application) -> AsyncIterator[None]:
        app[STORE] = await open_store(settings)
        yield
        await app[STORE].close()

    async def inline_pipeline(app: web.Application) -> AsyncIterator[None]:
        async with (
            aiohttp.ClientSession() as session,
            run_pipeline(
                app[STORE],
                settings,
                config,
                app[METRICS],
                session,
                app[WAKEUP],
                components,
                llm_settings=llm_settings,
            ),
        ):
            app[METRICS].leader.set(1)
            yield

    if worker_process:
        # The pipeline's metrics live in the child; until its first report, an
        # idle registry's families stand in for them.
        idle = CollectorRegistry()
        app[METRICS] = create_metrics(pipeline_registry=idle)
        forwarded = ForwardedMetrics(list(idle.collect()))
        app[METRICS].registry.register(forwarded)
        child = WorkerProcess(
            background_settings(settings),
            forwarded,
            reloadable=True,
            target_kwargs={"config": config, "components": components},
        )
        app.cleanup_ctx.append(store)
        watch_child(app, child)
        app[RELOADER] = ConfigReloader(settings, config, app[METRICS], child.reconfigure)
    else:
        app[METRICS] = create_metrics()
        app.cleanup_ctx.extend([store, inline_pipeline])
        app[RELOADER] = ConfigReloader(
            settings, config, app[METRICS], lambda new: llm_settings.publish(new.llm, new.language)
        )
    if reload_on_sighup:
        app[RELOADER].on_sighup(app)
    add_anomaly_scoring(
        app, settings, config, app[METRICS].registry, separate_process=worker_process
    )
    setup_routes(app)
    add_graph_route(app, settings, config)
    return app

"""The sidecar's HTTP app: webhook, incidents API, metrics and health.

Background work lives in cleanup contexts, started in this order and stopped
in the reverse one: the store, the HTTP client session, the return trip, then
the worker. So on shutdown the worker stops first, the return trip next, and
the store closes only when nothing can write to it.

Its metrics live in a registry owned by the app, not prometheus_client's global
one, so two apps in one process (tests, HA replicas) never share counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import aiohttp
from aiohttp import web

from ai_sidecar import __version__
from ai_sidecar.api import setup_api
from ai_sidecar.config import SidecarConfig
from ai_sidecar.context import MetricsContextSource, PrometheusContext
from ai_sidecar.enrichment.base import Analyst
from ai_sidecar.enrichment.local import LocalAnalyst
from ai_sidecar.errors import ApiError
from ai_sidecar.keys import CONFIG, METRICS, SETTINGS, STORE, WAKEUP
from ai_sidecar.metrics import create_metrics
from ai_sidecar.models import Alert
from ai_sidecar.returntrip import OUTBOX_SCHEMA, ReturnTrip, ReturnTripPolicy
from ai_sidecar.settings import SidecarSettings
from ai_sidecar.store.sqlite import Database
from ai_sidecar.webhook import receive
from ai_sidecar.worker import Worker, utc_now
from exporter.web import healthy, landing_page, ready, render_registry

log = logging.getLogger("ai_sidecar")

DATABASE_FILE = "scout.db"
WORKER = web.AppKey("worker", Worker)
RETURN_TRIP = web.AppKey("return_trip", ReturnTrip)
SESSION = web.AppKey("session", aiohttp.ClientSession)


@web.middleware
async def request_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The one place where refused requests become JSON answers."""
    try:
        response = await handler(request)
    except ApiError as exc:
        response = web.json_response({"error": str(exc)}, status=exc.http_status)
        if exc.http_status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="scout"'
    except web.HTTPException as exc:  # aiohttp's own 404/405 for unknown routes
        response = web.json_response({"error": exc.reason}, status=exc.status)
    if request.path == "/api/v1/alertmanager":
        request.app[METRICS].webhook_requests.labels(str(response.status)).inc()
    return response


async def metrics(request: web.Request) -> web.Response:
    return render_registry(request, request.app[METRICS].registry)


async def landing(_: web.Request) -> web.Response:
    return landing_page(
        f"Scout AI sidecar {__version__}",
        "Correlates alerts into incidents and explains them.",
        (
            ("/api/v1/incidents", "incidents (bearer token)"),
            ("/metrics", "the sidecar's own metrics"),
            ("/-/healthy", "liveness"),
            ("/-/ready", "readiness"),
        ),
    )


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/", landing)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post("/api/v1/alertmanager", receive)
    setup_api(app)


def return_trip_policy(config: SidecarConfig, settings: SidecarSettings) -> ReturnTripPolicy:
    trip = config.return_trip
    return ReturnTripPolicy(
        keepalive=trip.keepalive,
        repost_interval=trip.repost_interval,
        resolved_repeat_for=trip.resolved_repeat_for,
        resolved_repeat_interval=trip.resolved_repeat_interval,
        retry_backoff_max=trip.retry_backoff_max,
        prometheus_url=settings.prometheus_url,
        grafana_url=trip.grafana_url,
        external_url=trip.external_url,
    )


async def _run_forever(name: str, work: Callable[[], Awaitable[None]]) -> None:
    """Keep a background loop alive: a crash is logged and the loop restarts."""
    while True:
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception:  # pipeline boundary: log, pause, and carry on
            log.exception("background loop failed; restarting it", extra={"loop": name})
            await asyncio.sleep(1.0)


async def _cancel(tasks: Sequence[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def create_app(
    settings: SidecarSettings,
    config: SidecarConfig | None = None,
    *,
    analyst: Analyst | None = None,
    context: MetricsContextSource | None = None,
) -> web.Application:
    """The sidecar. ``analyst`` and ``context`` replace the local ones (tests, Gemini)."""
    config = config or SidecarConfig()
    app = web.Application(middlewares=[request_errors], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[CONFIG] = config
    app[METRICS] = create_metrics()
    app[WAKEUP] = asyncio.Event()

    async def store(app: web.Application) -> AsyncIterator[None]:
        path = settings.data_dir / DATABASE_FILE
        app[STORE] = await Database.open(path, schemas=[OUTBOX_SCHEMA])
        yield
        await app[STORE].close()

    async def session(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as client:
            app[SESSION] = client
            yield

    async def return_trip(app: web.Application) -> AsyncIterator[None]:
        async def take_in(alerts: Sequence[Alert]) -> None:
            await app[STORE].ingest(alerts, utc_now())
            app[WAKEUP].set()

        trip = ReturnTrip(
            app[STORE],
            settings.alertmanager_urls,
            return_trip_policy(config, settings),
            app[METRICS],
            app[SESSION],
            take_in=take_in,
        )
        app[RETURN_TRIP] = trip
        task = asyncio.create_task(_run_forever("return_trip", trip.run))
        yield
        await _cancel([task])

    async def worker(app: web.Application) -> AsyncIterator[None]:
        worker = Worker(
            app[STORE],
            config,
            analyst or LocalAnalyst(config.runbooks),
            context
            or PrometheusContext.from_config(
                settings.prometheus_url, app[SESSION], config.analysis
            ),
            app[RETURN_TRIP],
            app[METRICS],
            app[WAKEUP],
        )
        await worker.start()
        app[WORKER] = worker
        tasks = [
            asyncio.create_task(_run_forever("correlate", worker.correlate_forever)),
            asyncio.create_task(_run_forever("analyse", worker.analyse_forever)),
        ]
        yield
        await _cancel(tasks)

    app.cleanup_ctx.extend([store, session, return_trip, worker])
    setup_routes(app)
    return app

"""The sidecar's HTTP app. For now: its own metrics and health endpoints.

Its metrics live in a registry owned by the app, not prometheus_client's global
one, so two apps in one process (tests, HA replicas) never share counters.
"""

from __future__ import annotations

import platform

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, PlatformCollector, ProcessCollector

from ai_sidecar import __version__
from ai_sidecar.keys import REGISTRY, SETTINGS
from ai_sidecar.settings import SidecarSettings
from exporter.web import healthy, landing_page, ready, render_registry


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    build = Gauge(
        "scout_sidecar_build_info",
        "The sidecar's version; the value is always 1.",
        ["version", "pythonversion"],
        registry=registry,
    )
    build.labels(__version__, platform.python_version()).set(1)
    return registry


async def metrics(request: web.Request) -> web.Response:
    return render_registry(request, request.app[REGISTRY])


async def landing(_: web.Request) -> web.Response:
    return landing_page(
        f"Scout AI sidecar {__version__}",
        "Correlates alerts into incidents and explains them.",
        (
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


def create_app(settings: SidecarSettings) -> web.Application:
    app = web.Application()
    app[SETTINGS] = settings
    app[REGISTRY] = _registry()
    setup_routes(app)
    return app

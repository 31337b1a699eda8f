"""``GET /graphs/{incident}.png``: the graph of an incident, behind a signed URL, not the token.

Slack's image proxy and mail readers fetch the image anonymously, so the URL
itself is the credential (:mod:`ai_sidecar.notify.signing`). The order of the
checks matters: the signature first, so a request without a valid one learns
nothing, not even whether the incident exists (403, no detail); only then
whether the incident is known (404). A valid URL always gets a PNG, one that
says "Prometheus did not answer" when that is so, never an error page.

A link pasted into a busy channel is fetched by many clients at once: a
rendered graph is kept for :data:`CACHE_SECONDS` per incident, and concurrent
fetches of one incident wait for one render. Fetches of many incidents at once
(every link of a week's notifications) draw at most :data:`MAX_RENDERS` at a
time, so they cannot take every thread, Prometheus query and megabyte at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from ai_sidecar.clock import utc_now
from ai_sidecar.components import promql_client
from ai_sidecar.config import SidecarConfig
from ai_sidecar.keys import STORE
from ai_sidecar.notify.graphs import GraphSource, failed_graph, render_graph
from ai_sidecar.notify.signing import GRAPH_PATH, GraphSigner, load_graph_key
from ai_sidecar.settings import SidecarSettings

log = logging.getLogger("ai_sidecar.notify.graphs")

CACHE_SECONDS = 60.0
CACHE_SIZE = 256
MAX_RENDERS = 4
MAX_ID = 200


class RenderedGraphs:
    """PNGs by incident for ``ttl`` seconds; one render at a time per incident, and
    at most ``renders`` at a time in all."""

    def __init__(
        self,
        ttl: float = CACHE_SECONDS,
        size: int = CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
        renders: int = MAX_RENDERS,
    ) -> None:
        self._ttl = ttl
        self._size = size
        self._clock = clock
        self._rendering = asyncio.Semaphore(renders)
        self._kept: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        # Each incident's lock, with how many requests hold or wait for it.
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    async def get(self, key: str, render: Callable[[], Awaitable[bytes]]) -> bytes:
        """The PNG kept for ``key``, or the one ``render`` makes (then kept)."""
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                kept = self._kept.get(key)
                if kept is not None and self._clock() - kept[0] < self._ttl:
                    return kept[1]
                async with self._rendering:
                    png = await render()
                self._kept[key] = (self._clock(), png)
                self._kept.move_to_end(key)
                while len(self._kept) > self._size:
                    self._kept.popitem(last=False)
                return png
        finally:
            users = self._locks[key][1] - 1
            if users:
                self._locks[key] = (lock, users)
            else:
                del self._locks[key]

    @property
    def busy(self) -> int:
        """Incidents with a fetch in progress."""
        return len(self._locks)


@dataclass(frozen=True, slots=True)
class GraphService:
    """What the route needs: the signer, the source of data, the renders kept."""

    signer: GraphSigner
    source: GraphSource
    renders: RenderedGraphs


GRAPHS = web.AppKey("graphs", GraphService)
_FORBIDDEN = {"Cache-Control": "no-store"}


def _forbidden() -> web.Response:
    return web.Response(status=403, text="forbidden\n", headers=_FORBIDDEN)


async def serve_graph(request: web.Request) -> web.Response:
    service = request.app[GRAPHS]
    incident_id = request.match_info["id"]
    query = request.query
    if len(incident_id) > MAX_ID or not service.signer.valid(
        incident_id, query.get("expires"), query.get("sig"), utc_now()
    ):
        return _forbidden()
    incident = await request.app[STORE].get_incident(incident_id)
    if incident is None:
        return web.Response(status=404, text="no such incident\n", headers=_FORBIDDEN)

    async def render() -> bytes:
        data = await service.source.graph(incident)
        try:
            return await render_graph(data)
        except Exception:  # a boundary: the image link must never break
            log.exception("drawing a graph failed", extra={"incident": incident_id})
            return await render_graph(failed_graph(data))

    png = await service.renders.get(incident_id, render)
    # Private: the URL is the credential, so shared caches should not keep it
    # past its expiry; a minute spares clients re-fetching the same render.
    return web.Response(
        body=png,
        content_type="image/png",
        headers={"Cache-Control": f"private, max-age={int(CACHE_SECONDS)}"},
    )


def add_graph_route(app: web.Application, settings: SidecarSettings, config: SidecarConfig) -> None:
    """Serve graphs when ``graphs.enabled``: the route, and a PromQL client for it.

    The route exists without an external URL too (no link names it then), so
    a URL made before the setting was removed still works until it expires.
    """
    if not config.graphs.enabled:
        return

    async def graphs(app: web.Application) -> AsyncIterator[None]:
        # At start-up, not when the app is built: the key may have to be written.
        key = load_graph_key(config.graphs, settings.data_dir)
        signer = GraphSigner(key, config.graphs.url_ttl)
        async with aiohttp.ClientSession() as session:
            source = GraphSource(
                promql_client(settings, session),
                range=config.graphs.range,
                language=config.language,
            )
            app[GRAPHS] = GraphService(signer, source, RenderedGraphs())
            yield

    app.cleanup_ctx.append(graphs)
    app.router.add_get(GRAPH_PATH, serve_graph)

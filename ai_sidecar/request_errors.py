"""The middleware that turns refused requests into answers, for every HTTP process.

Apart from :mod:`ai_sidecar.app` so an intake process
(:mod:`ai_sidecar.intake.processes`) can use it without importing the app, and
with it the console's pages and the anomaly models (sklearn, pandas): about
120 MB it never needs. The console's error page is imported where it is used.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from ai_sidecar.errors import ApiError
from ai_sidecar.keys import METRICS
from ai_sidecar.store import StoreError
from ai_sidecar.webhook import WEBHOOK_PATH

log = logging.getLogger("ai_sidecar")

# Where the console is served (ai_sidecar.console); here so that checking a path
# does not import it.
CONSOLE_PREFIX = "/console"

STORE_RETRY_AFTER_SECONDS = "5"
UNREADABLE_BODY = "request body could not be read: it does not decode as its Content-Encoding says"


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
    except web.HTTPRedirection:
        raise  # the console's redirects (to the login form, after a POST)
    except web.HTTPException as exc:  # aiohttp's own 404/405 for unknown routes
        if request.path.startswith(CONSOLE_PREFIX):
            from ai_sidecar.console.templating import render_refusal

            response = await render_refusal(request, exc)
        else:
            response = web.json_response({"error": exc.reason}, status=exc.status)
    except StoreError as exc:
        # The store cannot serve now (PostgreSQL restarting, the disk full): the
        # client may retry, so a 503, as the webhook answers. The reason is for
        # the log only: a database error may name hosts and users.
        log.warning("store unavailable; answering 503", extra={"reason": str(exc)[:300]})
        from ai_sidecar.console.session import STORE_UNAVAILABLE

        if request.path.startswith(CONSOLE_PREFIX):
            response = await _console_error(request, 503, STORE_UNAVAILABLE)
        else:
            response = web.json_response({"error": STORE_UNAVAILABLE}, status=503)
        response.headers["Retry-After"] = STORE_RETRY_AFTER_SECONDS
    except web.RequestPayloadError:
        # The body does not decode as its headers say (a Content-Encoding it does
        # not have): the client's error, so a 400, not a 500 that Alertmanager
        # would retry for ever. aiohttp's message is not for the client.
        if request.path.startswith(CONSOLE_PREFIX):
            from ai_sidecar.console.session import UNREADABLE_FORM

            response = await _console_error(request, 400, UNREADABLE_FORM)
        else:
            response = web.json_response({"error": UNREADABLE_BODY}, status=400)
        # The rest of the body cannot be read, so the connection ends: say so,
        # or the client sends its next request on it.
        response.force_close()
    if request.path == WEBHOOK_PATH:
        request.app[METRICS].webhook.requests.labels(str(response.status)).inc()
    return response


async def _console_error(request: web.Request, status: int, message: str) -> web.Response:
    from ai_sidecar.console.templating import render_error

    return await render_error(request, status, message)

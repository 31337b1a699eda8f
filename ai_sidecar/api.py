"""The incidents API: list, fetch, and record whether an analysis helped.

``GET /api/v1/incidents`` filters by ``status`` (open, resolved), ``since``
(RFC 3339 time or Unix seconds; incidents whose ``updatedAt`` is at or after
it) and ``limit`` (1 to 1000, default 100), ordered by ``updatedAt`` then
``id``, both descending. ``updatedAt`` is the time of the latest alert event
(a member's start or end as Alertmanager sent it), not when the sidecar stored
the change; the store keeps no such time. A full page answers a ``Link: <...>;
rel="next"`` header and ``Scout-Next-Cursor``: the same query with
``cursor``, an opaque key of the page's last incident, lists the ones after
it (keyset paging: ties of ``updatedAt`` are neither repeated nor skipped).
``GET /api/v1/incidents/{id}`` adds the incident's feedback and its LLM
exchanges (``llmExchanges``: the redacted prompt and answer, provider, model,
tokens, cost, latency, outcome); the list stays light and has neither.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any, cast

from aiohttp import web

from ai_sidecar.auth import require_token
from ai_sidecar.errors import BadRequestError, NotFoundError, UnsupportedMediaError
from ai_sidecar.keys import SETTINGS, STORE
from ai_sidecar.models import (
    INCIDENT_ID_SEGMENT,
    Incident,
    IncidentStatus,
    format_time,
    incident_to_json,
)
from ai_sidecar.store.exchanges import exchange_to_json
from ai_sidecar.webhook import read_body

MAX_LIMIT = 1000
MAX_COMMENT = 2000
MAX_FEEDBACK_BODY = 16 * 1024
# The newest exchanges one incident shows; the policy allows one call per
# incident version, so a real incident stays far below this.
MAX_EXCHANGES = 100


def _parse_since(value: str) -> datetime:
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (ValueError, OverflowError, OSError):
        pass
    problem = f"since: expected an RFC 3339 time or Unix seconds, got {value[:64]!r}"
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequestError(problem) from None
    if parsed.tzinfo is None:
        raise BadRequestError("since: the time needs a zone, e.g. 2026-01-31T12:00:00Z")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise BadRequestError(problem) from None


def page_cursor(incident: Incident) -> str:
    """The opaque ``cursor`` of the page that follows ``incident``."""
    key = json.dumps([incident.updated_at.isoformat(), incident.id], separators=(",", ":"))
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


# A cursor this API answers is about 80 characters; a longer one was not answered.
MAX_CURSOR_LENGTH = 512


def _parse_cursor(value: str) -> tuple[datetime, str]:
    try:
        if len(value) > MAX_CURSOR_LENGTH:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        stamp, incident_id = json.loads(raw)
        at = datetime.fromisoformat(stamp)
        if at.tzinfo is None or not isinstance(incident_id, str):
            raise ValueError(value)
        # Before year 1 in UTC (0001-01-01T00:00:00+01:00) overflows here, not later.
        at = at.astimezone(UTC)
    except (ValueError, TypeError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise BadRequestError(
            "cursor: not one this API answered (take it from Scout-Next-Cursor)"
        ) from None
    return at, incident_id


def _parse_limit(value: str) -> int:
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_LIMIT:
        raise BadRequestError(f"limit: expected a whole number from 1 to {MAX_LIMIT}")
    return int(value)


async def list_incidents(request: web.Request) -> web.Response:
    require_token(request, request.app[SETTINGS].webhook_token)
    query = request.query
    unknown = sorted(set(query) - {"status", "since", "limit", "cursor"})
    if unknown:
        raise BadRequestError(
            f"unknown parameter {unknown[0]!r}; use status, since, limit or cursor"
        )
    # Each parameter takes one value: ?status=open&status=resolved silently
    # meaning one of them would answer a question the client did not ask.
    repeated = sorted(name for name in set(query) if len(query.getall(name)) > 1)
    if repeated:
        raise BadRequestError(
            f"{repeated[0]}: give it once, not {len(query.getall(repeated[0]))} times"
        )
    status = query.get("status")
    if status is not None and status not in ("open", "resolved"):
        raise BadRequestError(f"status: expected open or resolved, got {status[:32]!r}")
    since = _parse_since(query["since"]) if "since" in query else None
    limit = _parse_limit(query["limit"]) if "limit" in query else 100
    before = _parse_cursor(query["cursor"]) if "cursor" in query else None
    incidents = await request.app[STORE].list_incidents(
        status=cast(IncidentStatus | None, status), since=since, limit=limit, before=before
    )
    response = web.json_response([incident_to_json(i) for i in incidents])
    if len(incidents) == limit:  # a full page: there may be more
        cursor = page_cursor(incidents[-1])
        response.headers["Scout-Next-Cursor"] = cursor
        response.headers["Link"] = f'<{request.rel_url.update_query(cursor=cursor)}>; rel="next"'
    return response


async def get_incident(request: web.Request) -> web.Response:
    require_token(request, request.app[SETTINGS].webhook_token)
    incident_id = request.match_info["id"]
    store = request.app[STORE]
    incident = await store.get_incident(incident_id)
    if incident is None:
        raise NotFoundError(f"no incident {incident_id[:64]!r}")
    body = incident_to_json(incident)
    body["feedback"] = [
        {"useful": f.useful, "comment": f.comment, "at": format_time(f.at)}
        for f in await store.feedback(incident_id)
    ]
    exchanges = await store.llm_exchanges(incident_id=incident_id, limit=MAX_EXCHANGES)
    body["llmExchanges"] = [
        {k: v for k, v in exchange_to_json(e).items() if k != "incidentId"} for e in exchanges
    ]
    return web.json_response(body)


def _parse_feedback(raw: bytes) -> tuple[bool, str]:
    try:
        data: Any = json.loads(raw)
    # RecursionError: arrays or objects nested deeper than the parser recurses,
    # which a body far below the size limit can be.
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadRequestError("request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequestError('expected a JSON object: {"useful": true, "comment": "..."}')
    unknown = sorted(set(data) - {"useful", "comment"})
    if unknown:
        raise BadRequestError(f"unknown field {unknown[0][:64]!r}; use useful and comment")
    useful = data.get("useful")
    if not isinstance(useful, bool):
        raise BadRequestError("useful: required, true or false")
    comment = data.get("comment", "")
    if not isinstance(comment, str):
        raise BadRequestError("comment: expected a string")
    if len(comment) > MAX_COMMENT:
        raise BadRequestError(f"comment: at most {MAX_COMMENT} characters")
    try:
        # JSON may escape half a surrogate pair alone; no store can keep it as text.
        comment.encode()
    except UnicodeEncodeError:
        raise BadRequestError(
            "comment: not valid Unicode text (it holds half a surrogate pair)"
        ) from None
    return useful, comment


async def post_feedback(request: web.Request) -> web.Response:
    require_token(request, request.app[SETTINGS].webhook_token)
    # JSON only: a browser's cross-site form can post text/plain or a form without
    # asking first, and with --web.insecure-no-auth nothing else would stop it.
    if request.content_type != "application/json":
        raise UnsupportedMediaError(
            f"Content-Type must be application/json, got {request.content_type[:64]!r}"
        )
    incident_id = request.match_info["id"]
    # One read() returns what has arrived so far, maybe half a body.
    useful, comment = _parse_feedback(await read_body(request, MAX_FEEDBACK_BODY))
    recorded = await request.app[STORE].add_feedback(
        incident_id, useful, comment, datetime.now(UTC)
    )
    if not recorded:
        raise NotFoundError(f"no incident {incident_id[:64]!r}")
    return web.json_response({"status": "recorded"}, status=201)


def setup_api(app: web.Application) -> None:
    app.router.add_get("/api/v1/incidents", list_incidents)
    app.router.add_get(f"/api/v1/incidents/{INCIDENT_ID_SEGMENT}", get_incident)
    app.router.add_post(f"/api/v1/incidents/{INCIDENT_ID_SEGMENT}/feedback", post_feedback)

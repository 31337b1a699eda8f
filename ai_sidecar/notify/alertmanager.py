"""The Alertmanager HTTP client of the return trip: post alerts, list raw alerts.

``POST /api/v2/alerts`` takes enriched copies; its answer is classified for
the poster: ``ok`` (2xx), ``refused`` (400 for an invalid alert, 422 for a
schema violation, 413 for a batch a proxy finds too large: these alerts
cannot be taken as they are, so retrying them cannot help) or ``failed``
(anything else: a connection error, a timeout, a 5xx, 408 or 429, and the
other 4xx, which say the peer is wrong rather than the alerts, such as an
auth proxy's 401 or 403 or a wrong path prefix's 404, and which the
operator's fix cures: the alerts wait for it).
``GET /api/v2/alerts`` lists the raw alerts a peer holds, for reconciliation
(:mod:`ai_sidecar.intake.reconcile`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import aiohttp

from ai_sidecar.models import ENRICHED_LABEL

log = logging.getLogger("ai_sidecar.notify")

ALERTS_PATH = "/api/v2/alerts"
# Query string for reconciliation: every raw alert a peer holds, including
# those muted by the copies' inhibition. Alertmanager 0.25 defaults these to
# true already; saying so keeps a changed default from hiding alerts.
RAW_ALERTS_QUERY: tuple[tuple[str, str], ...] = (
    ("active", "true"),
    ("silenced", "true"),
    ("inhibited", "true"),
    ("unprocessed", "true"),
    ("filter", f'{ENRICHED_LABEL}!="true"'),
)

Outcome = Literal["ok", "refused", "failed"]

# What Alertmanager (or a proxy in front of it) answers about the alerts
# themselves. Alertmanager never answers 401, 403, 404 or 405 to a post of
# its own: those come from a proxy or a wrong URL, and dropping the copies on
# them would lose every notification of the misconfigured spell.
_REFUSALS = frozenset({400, 413, 422})
# Bytes of a failed post's answer read for the log (Alertmanager's own fit easily).
REPLY_BYTES_READ = 2048
REPLY_READ_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Reply:
    """How a peer answered a post, and what it said when it did not take it."""

    outcome: Outcome
    detail: str


async def answer_head(response: aiohttp.ClientResponse) -> str:
    """The start of an Alertmanager answer, for a log or a message: at most REPLY_BYTES_READ bytes,
    and what has come within REPLY_READ_SECONDS. A peer (or something at its
    address) may answer with gigabytes, or stall."""
    head = b""
    with contextlib.suppress(TimeoutError, aiohttp.ClientError):
        async with asyncio.timeout(REPLY_READ_SECONDS):
            while len(head) < REPLY_BYTES_READ:
                chunk = await response.content.read(REPLY_BYTES_READ - len(head))
                if not chunk:
                    break
                head += chunk
    return head.decode("utf-8", errors="replace")[:500]


class AlertmanagerClient:
    """Requests to Alertmanager peers, each time-boxed to ``timeout`` (connecting included)."""

    def __init__(self, session: aiohttp.ClientSession, timeout: timedelta) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout.total_seconds())

    async def post_alerts(
        self, peer: str, alerts: list[dict[str, Any]], *, within: float | None = None
    ) -> Reply:
        """Post ``alerts`` to ``peer`` in one request, within ``within`` seconds
        if given (shorter than the client's own), else the client's."""
        limit = self._timeout if within is None else aiohttp.ClientTimeout(total=within)
        try:
            async with self._session.post(
                peer + ALERTS_PATH, json=alerts, timeout=limit
            ) as response:
                status = response.status
                if 200 <= status < 300:
                    return Reply("ok", "")  # accepted: the body says nothing more
                text = await answer_head(response)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Reply("failed", f"{type(exc).__name__}: {exc}")
        if status in _REFUSALS:
            return Reply("refused", f"HTTP {status}: {text}")
        return Reply("failed", f"HTTP {status}: {text}")

    async def raw_alerts(self, peer: str) -> list[dict[str, Any]] | None:
        """The raw alerts ``peer`` holds, or None if it did not answer."""
        error = ""
        try:
            async with self._session.get(
                peer + ALERTS_PATH, params=RAW_ALERTS_QUERY, timeout=self._timeout
            ) as response:
                if response.status == 200:
                    alerts = await response.json()
                else:
                    error = f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        if error:
            log.warning(
                "cannot list raw alerts for reconciliation", extra={"peer": peer, "error": error}
            )
            return None
        if not isinstance(alerts, list):
            log.warning("unexpected alert list for reconciliation", extra={"peer": peer})
            return None
        return [a for a in alerts if isinstance(a, dict) and isinstance(a.get("fingerprint"), str)]

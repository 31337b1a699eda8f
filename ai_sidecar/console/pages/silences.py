"""Silencing an incident's alerts from the console, through Alertmanager's API v2.

What a silence must match, and why. People are notified of two kinds of
alert for an incident: the raw alerts Prometheus raised, and the enriched
copies the sidecar posts back (:mod:`ai_sidecar.notify`), which carry the raw
labels plus ``scout_enriched``, ``scout_incident`` and ``scout_priority``. A
raw alert is muted by an inhibition rule only while its copy fires; if the
sidecar stops, the copies expire and the raw alerts reach people again
(fail-open). So the console creates, on every peer:

- one silence per firing member, whose matchers are that member's exact
  label set (every non-empty label, as equality): it matches the raw alert
  and, since a silence matches any alert carrying at least its labels, the
  member's enriched copy as well, whatever happens to the sidecar;
- one silence on ``scout_incident="<id>"``: the copies of members that join
  the incident later (their raw alerts are muted by inhibition once their
  copy fires).

At most :data:`MAX_MEMBER_SILENCES` members get a silence of their own (a
storm incident has thousands); the page says when some were left to the
incident silence alone. The peers are asked side by side, and a peer that
fails does not stop the others: each peer's outcome is returned and counted.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import aiohttp

from ai_sidecar.models import INCIDENT_LABEL, Incident, format_time
from ai_sidecar.notify.alertmanager import answer_head

SILENCES_PATH = "/api/v2/silences"
MAX_MEMBER_SILENCES = 50
TIMEOUT = timedelta(seconds=5)


@dataclass(frozen=True, slots=True)
class SilencePlan:
    """The silences one "silence for …" creates on each peer."""

    matchers: tuple[tuple[Mapping[str, object], ...], ...]
    # Firing members left to the incident silence alone (over the cap).
    left_out: int


@dataclass(frozen=True, slots=True)
class PeerSilences:
    """What one peer made of the plan: the ids it gave, or why it failed."""

    peer: str
    ids: tuple[str, ...]
    error: str = ""


def _equal(name: str, value: str) -> dict[str, object]:
    return {"name": name, "value": value, "isRegex": False, "isEqual": True}


def silence_plan(incident: Incident) -> SilencePlan:
    """The matcher sets that silence ``incident``'s raw alerts and enriched copies."""
    firing = incident.firing
    kept = firing[:MAX_MEMBER_SILENCES]
    sets = [
        # Empty values are left out: Alertmanager drops such labels from alerts.
        tuple(_equal(name, value) for name, value in sorted(m.labels.items()) if value)
        for m in kept
    ]
    sets.append((_equal(INCIDENT_LABEL, incident.id),))
    return SilencePlan(tuple(s for s in sets if s), len(firing) - len(kept))


async def create_silences(
    session: aiohttp.ClientSession,
    peers: Sequence[str],
    plan: SilencePlan,
    *,
    starts: datetime,
    ends: datetime,
    created_by: str,
    comment: str,
) -> list[PeerSilences]:
    """Create ``plan``'s silences on every peer; one peer's failure stops only that peer.

    The peers are asked side by side: a peer that hangs costs the operator one
    :data:`TIMEOUT`, not one per peer asked before the others."""

    async def on(peer: str) -> PeerSilences:
        ids: list[str] = []
        for matchers in plan.matchers:
            body: dict[str, object] = {
                "matchers": list(matchers),
                "startsAt": format_time(starts),
                "endsAt": format_time(ends),
                "createdBy": created_by,
                "comment": comment,
            }
            try:
                ids.append(await _post(session, peer, body))
            except SilenceError as exc:
                return PeerSilences(peer, tuple(ids), str(exc))
        return PeerSilences(peer, tuple(ids))

    return list(await asyncio.gather(*(on(peer) for peer in peers)))


class SilenceError(Exception):
    """A peer did not create a silence; the message says why, for the page."""


async def _post(session: aiohttp.ClientSession, peer: str, body: dict[str, object]) -> str:
    url = peer.rstrip("/") + SILENCES_PATH
    try:
        async with session.post(
            url, json=body, timeout=aiohttp.ClientTimeout(total=TIMEOUT.total_seconds())
        ) as response:
            # The start only: something at a peer's address may answer with gigabytes.
            text = await answer_head(response)
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise SilenceError(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None
    if status != 200:
        raise SilenceError(f"HTTP {status}: {' '.join(text.split())}")
    try:
        silence_id = json.loads(text)["silenceID"]
    except (ValueError, KeyError, TypeError):
        raise SilenceError(f"unexpected answer: {text[:100]!r}") from None
    if not isinstance(silence_id, str):
        raise SilenceError(f"unexpected answer: {text[:100]!r}")
    return silence_id

"""A fake firewall API on 127.0.0.1: replays a vendor's answers, checks its credentials.

Each ``FakeApi`` serves one vendor's table from ``payloads``, checks the
credentials the way that API takes them, records every request (path, query,
headers) and can be told to misbehave per path: another status, a delay, a
raw body, or an endless stream.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.exporter.targets.firewall import payloads

FORTIGATE_TOKEN = "canary-fortigate-token-7f3a"
OPNSENSE_KEY = "canary-opnsense-key-91c2"
OPNSENSE_SECRET = "canary-opnsense-secret-5d0e"
PFSENSE_KEY = "canary-pfsense-key-c4b8"
CANARIES = (FORTIGATE_TOKEN, OPNSENSE_SECRET, PFSENSE_KEY, "canary-wrong-secret-00aa")


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# How each vendor's API wants its credentials, and what it answers without them.
CREDENTIALS: Mapping[str, tuple[str, str]] = {
    "fortigate": ("Authorization", f"Bearer {FORTIGATE_TOKEN}"),
    "opnsense": ("Authorization", _basic(OPNSENSE_KEY, OPNSENSE_SECRET)),
    "pfsense": ("X-API-Key", PFSENSE_KEY),
}
TABLES: Mapping[str, Mapping[str, Any]] = {
    "fortigate": payloads.FORTIGATE,
    "opnsense": payloads.OPNSENSE,
    "pfsense": payloads.PFSENSE,
}
UNAUTHORIZED: Mapping[str, Any] = {
    "fortigate": {"http_method": "GET", "status": "error", "http_status": 401},
    "opnsense": {"status": 401, "message": "Authentication Failed"},
    "pfsense": {
        "code": 401,
        "status": "unauthorized",
        "response_id": "AUTH_AUTHENTICATION_FAILED",
        "message": "Authentication failed.",
        "data": [],
    },
}


@dataclass
class Misbehaviour:
    """What one path does instead of answering its table entry."""

    status: int = 200
    delay: float = 0.0
    body: bytes | None = None
    # Stream this many bytes of JSON-ish filler, chunked, with no Content-Length.
    stream_bytes: int = 0
    # Announce this Content-Length (and send that much).
    announced_bytes: int = 0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Seen:
    path: str
    query: dict[str, str]
    headers: dict[str, str]


class FakeApi:
    """One vendor's API; ``app`` is the aiohttp application to serve."""

    def __init__(self, vendor: str) -> None:
        self.vendor = vendor
        self.table: dict[str, Any] = dict(TABLES[vendor])
        self.misbehaviours: dict[str, Misbehaviour] = {}
        self.requests: list[Seen] = []
        self.refuse_everything = False
        self.port = 0
        self.app = web.Application()
        self.app.router.add_get("/{path:.*}", self._answer)

    @property
    def paths(self) -> list[str]:
        return [seen.path for seen in self.requests]

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(Seen(request.path, dict(request.query), dict(request.headers)))
        header, expected = CREDENTIALS[self.vendor]
        if self.refuse_everything or request.headers.get(header) != expected:
            return web.json_response(UNAUTHORIZED[self.vendor], status=401)
        odd = self.misbehaviours.get(request.path)
        if odd is not None:
            return await self._misbehave(request, odd)
        if request.path not in self.table:
            return web.json_response({"status": "error", "http_status": 404}, status=404)
        return web.json_response(self.table[request.path])

    async def _misbehave(self, request: web.Request, odd: Misbehaviour) -> web.StreamResponse:
        if odd.delay:
            await asyncio.sleep(odd.delay)
        if odd.stream_bytes or odd.announced_bytes:
            response = web.StreamResponse(status=odd.status, headers=odd.headers)
            if odd.announced_bytes:
                response.content_length = odd.announced_bytes
            await response.prepare(request)
            chunk = b'{"filler": "' + b"x" * (64 << 10) + b'"},'
            total = odd.stream_bytes or odd.announced_bytes
            sent = 0
            try:
                while sent < total:
                    piece = chunk[: total - sent]
                    await response.write(piece)
                    sent += len(piece)
            except (ConnectionResetError, asyncio.CancelledError):
                return response  # the client stopped reading, as it should
            return response
        body = odd.body
        if body is None:
            body = json.dumps(self.table.get(request.path, {})).encode()
        return web.Response(
            body=body, status=odd.status, content_type="application/json", headers=odd.headers
        )


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample called ``name`` in an exposition, by its sorted labels."""
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float | None:
    """The one sample of ``name`` whose labels include ``labels``; ``None`` if there is none."""
    matches = [
        number for key, number in samples(text, name).items() if labels.items() <= dict(key).items()
    ]
    assert len(matches) <= 1, f"{name} {labels} matches {len(matches)} samples"
    return matches[0] if matches else None


def families(text: str) -> set[str]:
    """The names of the families in an exposition."""
    return {family.name for family in text_string_to_metric_families(text)}


async def scrape(
    client: TestClient, module: str, target: str, auth: str, scrape_timeout: str = "5"
) -> tuple[int, str]:
    response = await client.get(
        "/firewall",
        params={"module": module, "target": target, "auth": auth},
        headers={"X-Prometheus-Scrape-Timeout-Seconds": scrape_timeout},
    )
    return response.status, await response.text()

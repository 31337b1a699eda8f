"""Fake firewall APIs on 127.0.0.1: replay a vendor's answers, check its credentials.

Each ``FakeApi`` serves one vendor's table from ``tests.peers.firewall_payloads``
(its own deep copy, so a test may edit it), checks the credentials the way that
API takes them, records every request (path, query, headers) and can be told to
misbehave per path: another status, a delay, a raw body, or an endless stream.
A table or misbehaviour entry ``path?name=value`` answers the requests of that
path with that query parameter (FortiOS's policy counters, per ``ip_version``);
the plain ``path`` answers the others.
With ``growing=True`` its counters (policy hits and bytes, interface and tunnel
bytes, states created) go up with time, as on a firewall passing traffic, so
``rate()`` over two scrapes is more than zero.

A ``FakeApi`` is an aiohttp application: async tests serve it with pytest-aiohttp's
``aiohttp_server``; :class:`FakeFirewalls` serves several on a thread of their
own, for synchronous fixtures (the Grafana test stack) and subprocess scrapers::

    with FakeFirewalls(("fortigate", "opnsense"), growing=True) as firewalls:
        target = firewalls.target("fortigate")  # 127.0.0.1:<port>
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.peers import firewall_payloads as payloads
from tests.peers.snmp import _Peer

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
# The fields that count up on a firewall passing traffic, by vendor: a field
# name, or "parent.field" where the name alone is ambiguous (OPNsense's
# "total" is a row count in most answers, a counter in pf's statistics).
COUNTERS: Mapping[str, frozenset[str]] = {
    "fortigate": frozenset(
        {
            "bytes",
            "packets",
            "hit_count",
            "software_bytes",
            "asic_bytes",
            "rx_bytes",
            "tx_bytes",
            "rx_packets",
            "tx_packets",
            "incoming_bytes",
            "outgoing_bytes",
        }
    ),
    "opnsense": frozenset(
        {
            "evaluations",
            "packets",
            "bytes",
            "received-bytes",
            "sent-bytes",
            "received-packets",
            "sent-packets",
            "searches.total",
            "inserts.total",
            "removals.total",
            "match.total",
        }
    ),
    "pfsense": frozenset(
        {
            "inbytes",
            "outbytes",
            "inbytespass",
            "outbytespass",
            "inpkts",
            "outpkts",
            "bytes_in",
            "bytes_out",
        }
    ),
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
    # Set when a request for the path arrives (before the delay).
    arrived: asyncio.Event | None = None


@dataclass(frozen=True)
class Seen:
    path: str
    query: dict[str, str]
    headers: dict[str, str]


class FakeApi:
    """One vendor's API; ``app`` is the aiohttp application to serve."""

    def __init__(self, vendor: str, *, growing: bool = False) -> None:
        self.vendor = vendor
        self.table: dict[str, Any] = copy.deepcopy(dict(TABLES[vendor]))
        self.growing = growing
        self.started = time.monotonic()
        self.misbehaviours: dict[str, Misbehaviour] = {}
        self.requests: list[Seen] = []
        # Paths whose streamed answer was written out in full: the client read it all.
        self.streamed_in_full: list[str] = []
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
        key = self._key(request)
        odd = self.misbehaviours.get(key, self.misbehaviours.get(request.path))
        if odd is not None:
            return await self._misbehave(request, odd)
        if key not in self.table:
            return web.json_response({"status": "error", "http_status": 404}, status=404)
        answer = self.table[key]
        if self.growing:
            answer = grown(answer, COUNTERS[self.vendor], time.monotonic() - self.started)
        return web.json_response(answer)

    def _key(self, request: web.Request) -> str:
        """The table entry for ``request``: ``path?name=value`` where the table has one
        for a parameter of the request (FortiOS answers per ``ip_version``), else the path."""
        for name, value in request.query.items():
            keyed = f"{request.path}?{name}={value}"
            if keyed in self.table or keyed in self.misbehaviours:
                return keyed
        return request.path

    async def _misbehave(self, request: web.Request, odd: Misbehaviour) -> web.StreamResponse:
        if odd.arrived is not None:
            odd.arrived.set()
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
            self.streamed_in_full.append(request.path)
            return response
        body = odd.body
        if body is None:
            body = json.dumps(self.table.get(self._key(request), {})).encode()
        return web.Response(
            body=body, status=odd.status, content_type="application/json", headers=odd.headers
        )


def grown(node: Any, counters: frozenset[str], seconds: float, parent: str = "") -> Any:
    """``node`` with every counter field grown as ``seconds`` of traffic would grow it.

    Each counter gains one per second plus a thousandth of its value per
    second, so every series has a rate of its own and none stays at zero.
    """
    if isinstance(node, dict):
        return {
            key: (
                value + int(seconds * (1 + value / 1000))
                if _is_count(value) and (key in counters or f"{parent}.{key}" in counters)
                else grown(value, counters, seconds, key)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [grown(item, counters, seconds, parent) for item in node]
    return node


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class FakeFirewalls(_Peer):
    """One ``FakeApi`` per vendor, served over plain HTTP on its own thread and event loop.

    ``fakes`` holds them by vendor (their tables and requests are the test's to
    read; edit a table only between scrapes) and ``target(vendor)`` is the
    ``host:port`` a ``/firewall`` scrape names.
    """

    def __init__(self, vendors: Iterable[str], *, growing: bool = False) -> None:
        self.fakes = {vendor: FakeApi(vendor, growing=growing) for vendor in vendors}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="FakeFirewalls", daemon=True)

    def target(self, vendor: str) -> str:
        return f"127.0.0.1:{self.fakes[vendor].port}"

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fake firewall APIs did not start within 10s")
        if self._failure is not None:
            raise RuntimeError(f"the fake firewall APIs did not start: {self._failure}")

    def stop(self) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and self._thread.is_alive():
            loop.call_soon_threadsafe(stopping.set)
        if self._thread.ident is not None:
            self._thread.join(timeout=15)

    def _serve(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        runners: list[web.AppRunner] = []
        try:
            for fake in self.fakes.values():
                runner = web.AppRunner(fake.app, access_log=None, shutdown_timeout=1.0)
                await runner.setup()
                runners.append(runner)
                site = web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                fake.port = runner.addresses[0][1]
        except Exception as exc:  # start() raises it on the caller's thread
            self._failure = exc
        self._ready.set()
        try:
            if self._failure is None:
                await self._stopping.wait()
        finally:
            for runner in runners:
                await runner.cleanup()

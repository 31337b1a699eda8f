"""GET requests to firewalls' REST APIs: one pooled session, bounded answers, JSON out.

``/firewall`` reads a dozen endpoints of one firewall per scrape, in parallel;
``AiohttpApiClient`` keeps one ``aiohttp.ClientSession`` between scrapes so
those requests share connections (at most ``CONNECTIONS_PER_FIREWALL`` to one
firewall at a time: their web servers are small). What this module promises
the caller:

* the request carries the caller's headers (the credentials) to the URL's
  host and nowhere else: redirects are not followed, proxies from the
  environment are not used;
* nothing one firewall answers is sent to another: cookies are not kept;
* an answer is read up to ``max_bytes`` and no further, however long the
  firewall's body or its ``Content-Length``;
* every failure is an ``ApiError`` whose message names the status or the
  cause, never a header or a body, so it is safe for a log line.

Tree::

    ExporterError
     └── ApiError            one request failed (status, TLS, timeout, size, JSON)
          └── ApiAuthError   the firewall refused the credentials (HTTP 401)
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from yarl import URL

from exporter.clients.probe_net import LinkLocalCheckingResolver, ZonedHostRequest
from exporter.common.version import __version__
from exporter.errors import ExporterError
from exporter.lifecycle import Lifecycle

# Firewall web servers serve their GUI too; a scrape must not take all their workers.
CONNECTIONS_PER_FIREWALL = 4
# Connections idle longer than this are closed: firewalls drop idle keep-alives early.
KEEPALIVE_SECONDS = 15.0
# Parsing a large answer on the event loop would stall every other scrape.
PARSE_IN_THREAD_ABOVE_BYTES = 256 << 10


class ApiError(ExporterError):
    """One request to a firewall API failed; the message is fit for a log line."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ApiAuthError(ApiError):
    """The firewall refused the credentials: every other request will fail too."""


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """One GET; ``headers`` hold the credentials and are never shown anywhere.

    ``tls`` is the context for an https URL; ``server_hostname`` the name the
    certificate must carry (and the SNI sent) when the URL's host is an
    address the target was pinned to. ``deadline`` is in ``loop.time()``.
    """

    url: URL
    headers: Mapping[str, str]
    tls: ssl.SSLContext | None
    server_hostname: str | None
    max_bytes: int
    deadline: float


class ApiClient(Lifecycle, Protocol):
    """Sends GET requests to firewall APIs and returns their JSON."""

    async def get_json(self, request: ApiRequest) -> object:
        """The decoded JSON of a 200 answer; raises ``ApiError`` (never anything else)."""
        ...


class AiohttpApiClient:
    """One ``ClientSession`` for every firewall, made at ``start`` and closed at ``close``."""

    user_agent = f"Scout-Firewall/{__version__}"

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=256,
            limit_per_host=CONNECTIONS_PER_FIREWALL,
            keepalive_timeout=KEEPALIVE_SECONDS,
            # A name resolving to a link-local address fails saying a zone is needed.
            resolver=LinkLocalCheckingResolver(),
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": self.user_agent, "Accept": "application/json"},
            trust_env=False,  # an HTTP(S)_PROXY must not see the credentials
            # A firewall's session cookie would go to its neighbours on the host or domain.
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=True,
            # A link-local firewall's zone stays off the Host header and SNI.
            request_class=ZonedHostRequest,
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def get_json(self, request: ApiRequest) -> object:
        session = self._session
        if session is None or session.closed:
            raise ApiError("the firewall client is closed (the exporter is reloading)")
        try:
            async with asyncio.timeout_at(request.deadline):
                body = await self._fetch(session, request)
        except TimeoutError:
            raise ApiError("no answer before the scrape deadline") from None
        return await _decode(body)

    async def _fetch(self, session: aiohttp.ClientSession, request: ApiRequest) -> bytes:
        try:
            async with session.get(
                request.url,
                headers=dict(request.headers),
                ssl=request.tls if request.tls is not None else True,
                server_hostname=request.server_hostname,
                allow_redirects=False,
            ) as response:
                _check_status(response)
                return await _read_bounded(response, request.max_bytes)
        except aiohttp.ClientConnectorCertificateError as exc:
            reason = getattr(exc.certificate_error, "verify_message", exc.certificate_error)
            raise ApiError(f"TLS certificate not trusted: {reason}") from None
        except aiohttp.ClientConnectorError as exc:
            raise ApiError(f"cannot connect to {exc.host}:{exc.port}: {_why(exc)}") from None
        except aiohttp.ClientPayloadError:
            raise ApiError("the answer was cut short or badly encoded") from None
        except aiohttp.ClientError as exc:
            raise ApiError(f"request failed: {type(exc).__name__}") from None


def _why(exc: aiohttp.ClientConnectorError) -> str:
    error = exc.os_error
    if isinstance(error, OSError):
        # A resolver's own refusal (a link-local address needing a zone) is in its text.
        return error.strerror or str(error) or type(error).__name__
    return str(error)


def _check_status(response: aiohttp.ClientResponse) -> None:
    status = response.status
    if status == 200:
        return
    if status == 401:
        raise ApiAuthError("HTTP 401: the firewall refused the credentials", status)
    if status == 403:
        raise ApiError("HTTP 403: the API user may not read this", status)
    if 300 <= status < 400:
        # Not followed: the credentials would go wherever the Location says.
        raise ApiError(
            f"HTTP {status}: redirected, not followed (check the module's scheme and port)",
            status,
        )
    raise ApiError(f"HTTP {status} {response.reason or ''}".rstrip(), status)


async def _read_bounded(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    announced = response.content_length
    if announced is not None and announced > max_bytes:
        raise ApiError(f"answer of {announced} bytes is larger than max_response_bytes {max_bytes}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 << 10):
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(f"answer is larger than max_response_bytes {max_bytes}")
        chunks.append(chunk)
    return b"".join(chunks)


def _loads(body: bytes) -> object:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        # JSONDecodeError's message holds a position, never the document.
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        raise ApiError(f"malformed JSON: {reason}") from None


async def _decode(body: bytes) -> object:
    if len(body) > PARSE_IN_THREAD_ABOVE_BYTES:
        return await asyncio.to_thread(_loads, body)
    return _loads(body)

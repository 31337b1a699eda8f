"""Raw-socket HTTP against an app served by :func:`exporter.common.serving.serving`.

Hostile-peer tests speak HTTP over plain sockets where a client library would
tidy up what they need to send (header bytes no client writes, a body in two
TCP segments), against the same server both daemons run in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable

from aiohttp import web

from exporter.common.serving import ServerLimits, listening_sockets, serving


@contextlib.asynccontextmanager
async def served(app: web.Application, limits: ServerLimits | None = None) -> AsyncIterator[int]:
    """Serve ``app`` on a free loopback port inside the block; yields the port."""
    limits = limits or ServerLimits()
    sockets = listening_sockets("127.0.0.1", 0, limits.backlog)
    async with serving(app, sockets, limits=limits):
        yield sockets[0].getsockname()[1]


async def exchange(port: int, *parts: bytes, pause: float = 0.0) -> bytes:
    """Send ``parts`` as separate writes (``pause`` apart) and read the whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for n, part in enumerate(parts):
            if n:
                await asyncio.sleep(pause)
            writer.write(part)
            await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def malformed_requests(credentials: str) -> dict[str, bytes]:
    """Request heads aiohttp's parser refuses (or that once made a daemon
    answer 500), each carrying ``Authorization: <credentials>``; they follow a
    request line and the first headers, each ending in CRLF."""
    auth_line = f"Authorization: {credentials}".encode()
    return {
        "space before the colon": b"Authorization : " + credentials.encode() + b"\r\n\r\n",
        "bare LF line ends": b"X: 1\n" + auth_line + b"\nX: \r\r\n\n",
        "control character in a header": auth_line + b"\r\nX-Bad: a\x01b\r\n\r\n",
        "bad Content-Length": auth_line + b"\r\nContent-Length: abc\r\n\r\n{}",
        "bad chunk size": auth_line
        + b"\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        "Content-Length and chunked": auth_line
        + b"\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
        "folded header": auth_line + b"\r\n  folded\r\n\r\n",
        "header too long": auth_line + b"\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
        "credentials not UTF-8": auth_line + b"\xff\xfe\r\nContent-Length: 2\r\n\r\n{}",
        "credentials over several lines": auth_line + b"\r\n\tmore\r\n\r\n",
    }


async def send_malformed_requests(
    port: int, head: bytes, credentials: str, records: list[logging.LogRecord]
) -> str:
    """Send each of :func:`malformed_requests` after ``head``; all of ``records``
    (pytest's captured log records), formatted, once they are answered.

    Each must be refused (400) or turned away (401); a refusal is still
    logged, with its problem, so an operator sees it.
    """
    for name, rest in malformed_requests(credentials).items():
        before = len(records)
        answer = await exchange(port, head + rest)
        await asyncio.sleep(0.05)  # the error is logged after the answer
        assert status_of(answer) in (400, 401), (name, answer[:200])
        if status_of(answer) == 400:
            assert any("Error handling request" in r.getMessage() for r in records[before:]), name
    return formatted(records)


def formatted(records: Iterable[logging.LogRecord]) -> str:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(formatter.format(r) for r in records)

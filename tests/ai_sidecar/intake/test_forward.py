"""An intake process's app in this process: the webhook served here, every other
request passed to a main process on a Unix socket (ai_sidecar.intake.forward)."""

from __future__ import annotations

import asyncio
import gzip
import io
import socket
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from ai_sidecar.intake.forward import (
    MAIN_PROCESS_GONE,
    MAIN_PROCESS_STUCK,
    PEER_HEADER,
    believe_intake_peer,
)
from ai_sidecar.intake.processes import intake_app
from ai_sidecar.keys import METRICS
from ai_sidecar.settings import SidecarSettings
from exporter.common.serving import listening_sockets, serving
from tests.ai_sidecar.builders import alert, payload

TOKEN = "intake-token"
BIG = bytes(range(256)) * 20_000  # 5 MB, streamed back in chunks
LIMIT = 1_000_000


@dataclass
class Seen:
    """What the stand-in main process saw of each request."""

    remotes: list[str | None]
    headers: list[dict[str, str]]
    bodies: list[bytes]
    # /stuck answers once this is set: a main process held up until then.
    unstuck: asyncio.Event = field(default_factory=asyncio.Event)


def main_app(seen: Seen) -> web.Application:
    """A stand-in for the main process: answers that show what arrived."""

    async def echo(request: web.Request) -> web.Response:
        seen.remotes.append(request.remote)
        seen.headers.append(dict(request.headers))
        seen.bodies.append(await request.read())
        response = web.Response(status=303, text="see", headers={"Location": "/console/x"})
        response.set_cookie("a", "1")
        response.set_cookie("b", "2")
        return response

    async def compressed(_: web.Request) -> web.Response:
        return web.Response(
            body=gzip.compress(b"metrics " * 1000),
            headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"},
        )

    async def big(_: web.Request) -> web.Response:
        return web.Response(body=BIG, content_type="application/octet-stream")

    async def cut(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)  # chunked: no length to fall short of
        await response.write(b"half of it")
        assert request.transport is not None
        request.transport.abort()
        return response

    async def stuck(_: web.Request) -> web.Response:
        await seen.unstuck.wait()
        return web.Response(text="late")

    app = web.Application(middlewares=[believe_intake_peer])
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/stuck", stuck)
    app.router.add_get("/compressed", compressed)
    app.router.add_get("/big", big)
    app.router.add_get("/cut", cut)
    return app


@pytest.fixture
async def main_process(tmp_path: Path) -> AsyncIterator[tuple[Seen, Path, str]]:
    """The stand-in main process on a Unix socket and on a TCP port."""
    seen = Seen([], [], [])
    path = tmp_path / "main.sock"
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(path))
    unix.listen(16)
    unix.setblocking(False)
    tcp = listening_sockets("127.0.0.1", 0, 16)
    port = tcp[0].getsockname()[1]
    async with serving(main_app(seen), [unix, *tcp]):
        yield seen, path, f"http://127.0.0.1:{port}"


@asynccontextmanager
async def serving_intake(
    tmp_path: Path, socket_path: Path, **timeouts: float
) -> AsyncIterator[str]:
    """The intake app, forwarding to ``socket_path``; its base URL."""
    settings = SidecarSettings(
        data_dir=tmp_path / "data", webhook_token=TOKEN, max_body_bytes=LIMIT
    )
    settings.data_dir.mkdir()
    sockets = listening_sockets("127.0.0.1", 0, 16)
    port = sockets[0].getsockname()[1]
    app = intake_app(settings, socket_path, idle_timeout=10.0, **timeouts)
    async with serving(app, sockets):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
async def intake(tmp_path: Path, main_process: tuple[Seen, Path, str]) -> AsyncIterator[str]:
    """The intake app, forwarding to the stand-in; its base URL."""
    async with serving_intake(tmp_path, main_process[1]) as url:
        yield url


async def test_forwarded_request_arrives_as_the_client_sent_it(main_process, intake):
    seen, _, _ = main_process
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            f"{intake}/echo?x=1",
            data=b"user=a&password=b",
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Cookie": "__Host-scout=s1",
                "X-Forwarded-For": "203.0.113.9",
                PEER_HEADER: "198.51.100.7",  # a client's own claim: replaced
            },
            allow_redirects=False,
        ) as reply,
    ):
        assert reply.status == 303
        assert reply.headers["Location"] == "/console/x"
        assert sorted(c.key for c in reply.cookies.values()) == ["a", "b"]
        assert len(reply.headers.getall("Set-Cookie")) == 2
        assert await reply.text() == "see"
    # The main process sees the client's address, not the Unix socket's, nor the claim.
    assert seen.remotes == ["127.0.0.1"]
    headers = seen.headers[0]
    assert headers["Cookie"] == "__Host-scout=s1"
    assert headers["X-Forwarded-For"] == "203.0.113.9"
    assert headers["Host"] == intake.removeprefix("http://")
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert seen.bodies == [b"user=a&password=b"]


async def status_through(intake: str, method: str, **options: Any) -> int:
    """The status of one request to the stand-in's /echo through the intake app."""
    async with (
        aiohttp.ClientSession() as client,
        client.request(method, f"{intake}/echo", allow_redirects=False, **options) as reply,
    ):
        return reply.status


async def test_a_compressed_request_body_is_passed_on_decoded(main_process, intake):
    seen, _, _ = main_process
    data = gzip.compress(b"user=a")
    assert (
        await status_through(intake, "POST", data=data, headers={"Content-Encoding": "gzip"}) == 303
    )
    assert seen.bodies == [b"user=a"]
    assert "Content-Encoding" not in seen.headers[0]


async def test_the_peer_header_is_ignored_on_the_tcp_port(main_process):
    seen, _, direct = main_process
    async with (
        aiohttp.ClientSession() as client,
        client.get(
            f"{direct}/echo", headers={PEER_HEADER: "198.51.100.7"}, allow_redirects=False
        ) as reply,
    ):
        assert reply.status == 303
    assert seen.remotes == ["127.0.0.1"]


async def test_no_cookie_is_kept_from_one_client_for_the_next(main_process, intake):
    seen, _, _ = main_process
    for _ in range(2):
        async with (
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client,
            client.get(f"{intake}/echo", allow_redirects=False) as reply,
        ):
            assert reply.status == 303
    assert all("Cookie" not in headers for headers in seen.headers)


async def test_answers_come_back_as_they_went(intake):
    async with aiohttp.ClientSession(auto_decompress=False) as client:
        async with client.get(f"{intake}/compressed") as reply:
            assert reply.headers["Content-Encoding"] == "gzip"
            assert gzip.decompress(await reply.read()) == b"metrics " * 1000
        async with client.get(f"{intake}/big") as reply:
            assert reply.status == 200
            assert await reply.read() == BIG
        async with client.head(f"{intake}/big") as reply:
            assert reply.status == 200
            assert reply.headers["Content-Length"] == str(len(BIG))
            assert await reply.read() == b""


async def test_the_main_process_gone_is_a_503(main_process, intake):
    _, path, _ = main_process
    path.unlink()  # nothing listens at the path any more
    async with aiohttp.ClientSession() as client, client.get(f"{intake}/echo") as reply:
        assert reply.status == 503
        assert reply.headers["Retry-After"] == "5"
        assert await reply.json() == {"error": MAIN_PROCESS_GONE}


async def test_a_main_process_silent_too_long_is_a_504(tmp_path, main_process):
    seen, path, _ = main_process
    try:
        async with (
            serving_intake(tmp_path, path, read_timeout=1.0) as intake,
            aiohttp.ClientSession() as client,
        ):
            async with client.get(f"{intake}/stuck") as reply:
                assert reply.status == 504
                assert await reply.json() == {"error": MAIN_PROCESS_STUCK}
            seen.unstuck.set()
            async with client.get(f"{intake}/stuck") as reply:  # and the next one is served
                assert reply.status == 200
                assert await reply.text() == "late"
    finally:
        seen.unstuck.set()


async def test_a_main_process_that_never_reads_a_large_body_is_a_504(tmp_path):
    # The main process accepts the connection but its loop is held up: nothing
    # reads what the intake process sends. A body larger than the socket's
    # buffers stops the intake process's write, before any answer could time out.
    path = tmp_path / "main.sock"
    deaf = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deaf.bind(str(path))
    deaf.listen(16)
    try:
        async with (
            serving_intake(tmp_path, path, read_timeout=1.0) as intake,
            aiohttp.ClientSession() as client,
            client.post(f"{intake}/echo", data=io.BytesIO(b"x" * 900_000)) as reply,
        ):
            assert reply.status == 504
            assert await reply.json() == {"error": MAIN_PROCESS_STUCK}
    finally:
        deaf.close()


async def test_the_webhook_is_served_here_and_stored(tmp_path, main_process, intake):
    seen, _, _ = main_process
    alerts = [alert("ProbeLoss", instance=f"dev{i}") for i in range(3)]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as client:
        async with client.post(
            f"{intake}/api/v1/alertmanager", json=payload(*alerts), headers=headers
        ) as reply:
            assert reply.status == 200, await reply.text()
            assert (await reply.json())["new"] == 3
        # Only POST is served, and nothing else on the path goes to the main process.
        async with client.get(f"{intake}/api/v1/alertmanager") as reply:
            assert reply.status == 405
        async with client.post(f"{intake}/api/v1/alertmanager", json=payload(*alerts)) as reply:
            assert reply.status == 401
    assert seen.remotes == []
    with sqlite3.connect(tmp_path / "data" / "scout.db") as db:
        assert db.execute("SELECT count(*) FROM alerts").fetchone() == (3,)


async def test_webhook_counters_count_each_request_once(tmp_path, main_process):
    seen, path, _ = main_process
    settings = SidecarSettings(data_dir=tmp_path / "data", webhook_token=TOKEN)
    settings.data_dir.mkdir()
    sockets = listening_sockets("127.0.0.1", 0, 16)
    port = sockets[0].getsockname()[1]
    app = intake_app(settings, path, idle_timeout=10.0)
    async with serving(app, sockets), aiohttp.ClientSession() as client:
        for method in ("GET", "PUT"):
            async with client.request(method, f"http://127.0.0.1:{port}/api/v1/alertmanager"):
                pass
    registry = app[METRICS].registry
    assert registry.get_sample_value("scout_sidecar_webhook_requests_total", {"code": "405"}) == 2
    assert seen.remotes == []  # the main process would have counted them again


async def test_refusals_here_are_answers_on_every_path(main_process, intake):
    """A body too large or undecodable is refused by the intake process itself, on
    a console path too (whose error page only the main process can render)."""
    seen, _, _ = main_process
    async with aiohttp.ClientSession() as client:
        async with client.post(f"{intake}/console/login", data=b"x" * (LIMIT + 1)) as reply:
            assert reply.status == 413
            assert "limit" in (await reply.json())["error"]
        async with client.post(
            f"{intake}/console/login", data=b"not gzip", headers={"Content-Encoding": "gzip"}
        ) as reply:
            assert reply.status == 400
    assert seen.remotes == []


async def _raw(base: str, request: bytes) -> bytes:
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    answer = await reader.read(65536)
    writer.close()
    return answer


async def test_an_absolute_form_target_reaches_its_path(main_process, intake):
    seen, _, _ = main_process
    answer = await _raw(
        intake,
        b"GET http://elsewhere.example/echo?a=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 303"), answer[:100]
    assert len(seen.remotes) == 1


async def test_headers_the_connection_header_names_stay_on_their_hop(main_process, intake):
    seen, _, _ = main_process
    headers = {"Connection": "keep-alive, X-Hop", "X-Hop": "secret", "X-Kept": "1"}
    assert await status_through(intake, "GET", headers=headers) == 303
    assert "X-Hop" not in seen.headers[0]
    assert seen.headers[0]["X-Kept"] == "1"


async def test_an_answer_cut_upstream_is_cut_for_the_client(intake):
    async with aiohttp.ClientSession() as client, client.get(f"{intake}/cut") as reply:
        assert reply.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await reply.read()

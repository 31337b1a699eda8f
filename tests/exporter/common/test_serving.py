"""The shared server's limits: header and body read timeouts and the connection cap."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from exporter.common.serving import ServerLimits
from tests.exporter.common.raw_http import served

FAST = ServerLimits(header_timeout=0.5, body_timeout=0.5, max_connections=3)
# Longest a cut-off may take beyond its timeout: aiohttp's timers are coarse, and a
# loaded machine is late. Far below the defects' own times: a cut that never comes
# while bytes trickle in lasts the whole 50 s trickle.
SLACK = 5.0


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.Response(text=f"got {len(body)} bytes")


async def _hello(_: web.Request) -> web.Response:
    return web.Response(text="hello")


# Far more than a loopback connection's socket buffers hold.
BIG_ANSWER = 32 * 1024 * 1024


async def _big(_: web.Request) -> web.Response:
    return web.Response(body=b"x" * BIG_ANSWER)


@contextlib.asynccontextmanager
async def _server(limits: ServerLimits = FAST) -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_get("/", _hello)
    app.router.add_post("/", _hello)  # leaves the body unread
    app.router.add_get("/big", _big)
    app.router.add_post("/echo", _echo)
    async with served(app, limits) as port:
        yield port


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> float:
    """Seconds until the server closed the connection (fails if it did not in time)."""
    started = time.monotonic()
    async with asyncio.timeout(seconds):
        while await reader.read(1024):
            pass
    return time.monotonic() - started


async def _get(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = await reader.read()
    writer.close()
    return answer


async def test_a_client_that_sends_nothing_is_cut_off_after_the_header_timeout():
    async with _server() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        took = await _closed_within(reader, FAST.header_timeout + SLACK)
        writer.close()
    assert took >= FAST.header_timeout * 0.9


async def _trickle_until_cut_off(head: bytes, trickled: bytes, port: int) -> float:
    """Send ``head`` at once, then ``trickled`` a byte every 50 ms; seconds until cut off."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    started = time.monotonic()

    async def trickle() -> None:
        for byte in trickled:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)

    sender = asyncio.create_task(trickle())
    with contextlib.suppress(ConnectionError):
        await _closed_within(reader, max(FAST.header_timeout, FAST.body_timeout) + SLACK)
    took = time.monotonic() - started
    sender.cancel()
    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
        await sender
    writer.close()
    return took


async def test_a_client_trickling_its_headers_is_cut_off():
    async with _server() as port:
        took = await _trickle_until_cut_off(
            b"", b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000, port
        )
    # Bytes kept arriving all along: only a deadline on the whole head ends it.
    assert took < FAST.header_timeout + SLACK


async def test_a_client_trickling_its_body_is_cut_off_and_the_server_still_answers():
    async with _server() as port:
        took = await _trickle_until_cut_off(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", b"a" * 1000, port
        )
        assert took < FAST.body_timeout + SLACK
        assert (await _get(port)).endswith(b"hello")


async def test_an_unread_body_is_drained_no_longer_than_the_body_timeout():
    async with _server() as port:
        # Answered at once; then aiohttp reads (and drops) the rest of the
        # body before the connection can serve another request.
        took = await _trickle_until_cut_off(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", b"a" * 1000, port
        )
    assert took < FAST.body_timeout + SLACK


async def test_a_client_that_stops_reading_its_answer_gives_up_its_slot():
    limits = ServerLimits(header_timeout=0.5, body_timeout=0.5, max_connections=1)
    loop = asyncio.get_running_loop()
    async with _server(limits) as port:
        with socket.socket() as stalled:
            # A small receive window: the answer fills the socket buffers at once.
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stalled.setblocking(False)
            await loop.sock_connect(stalled, ("127.0.0.1", port))
            await loop.sock_sendall(stalled, b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            started = time.monotonic()
            # The only slot is the stalled client's until its answer stops moving.
            answer = await asyncio.wait_for(_get(port), limits.body_timeout + SLACK + 2)
            waited = time.monotonic() - started
    assert answer.endswith(b"hello")
    assert waited >= limits.body_timeout * 0.9


async def test_a_prompt_body_is_read_whole():
    async with _server() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
        )
        answer = await reader.read()
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.endswith(b"got 5 bytes")


async def test_beyond_the_connection_cap_a_client_waits_instead_of_failing():
    async with _server() as port:
        # From before the held connections open: their header timeouts start as each
        # is accepted, and opening them took over 0.1 s on a loaded machine.
        started = time.monotonic()
        held = [
            await asyncio.open_connection("127.0.0.1", port) for _ in range(FAST.max_connections)
        ]
        answer = await asyncio.wait_for(_get(port), FAST.header_timeout + SLACK + 2)
        waited = time.monotonic() - started
        for _, writer in held:
            writer.close()
    assert answer.endswith(b"hello")
    # It was served only once the silent connections had timed out.
    assert waited >= FAST.header_timeout * 0.9


async def test_below_the_cap_a_client_is_served_at_once():
    # A long header timeout: a client made to wait for the held connections to be
    # cut would wait 5 s, far from being served at once even on a loaded machine.
    limits = ServerLimits(header_timeout=5, body_timeout=5, max_connections=3)
    async with _server(limits) as port:
        held = [
            await asyncio.open_connection("127.0.0.1", port)
            for _ in range(limits.max_connections - 1)
        ]
        started = time.monotonic()
        answer = await _get(port)
        waited = time.monotonic() - started
        for _, writer in held:
            writer.close()
    assert answer.endswith(b"hello")
    assert waited < limits.header_timeout / 2


def _with_256_open_files(soft_only: bool, *lines: str) -> str:
    """Run ``lines`` in a fresh interpreter whose open-files limit is 256; its output."""
    script = "\n".join(
        (
            "import resource",
            "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)",
            f"resource.setrlimit(resource.RLIMIT_NOFILE, (256, {'hard' if soft_only else '256'}))",
            *lines,
        )
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def test_the_cap_is_at_most_half_the_open_files_limit():
    output = _with_256_open_files(
        False,
        "from exporter.common.serving import ServerLimits",
        "print(ServerLimits(max_connections=512).connection_cap(),"
        " ServerLimits(max_connections=10).connection_cap())",
    )
    assert output.split() == ["128", "10"]


def test_open_files_soft_limit_is_raised_to_the_hard_limit():
    output = _with_256_open_files(
        True,
        "from exporter.common.serving import raise_open_files_limit",
        "raise_open_files_limit()",
        "print(resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard))",
    )
    assert output == "True"


# An app whose start-up takes a while, served by run() until a signal: prints
# what ran, so the test sees a stop signal sent during start-up handled as a stop.
_SLOW_START = """
import asyncio, signal, sys
from aiohttp import web
from exporter.common.serving import listening_sockets, run

async def slow(app):
    print("starting", flush=True)
    await asyncio.sleep(2)
    print("started", flush=True)
    yield
    print("cleaned up", flush=True)

app = web.Application()
app.cleanup_ctx.append(slow)
run(
    app,
    listening_sockets("127.0.0.1", 0, 8),
    on_stop_signal=lambda: print("stop signal", flush=True),
)
print("exited", flush=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_during_start_up_is_a_stop(signum: int):
    server = subprocess.Popen(
        [sys.executable, "-c", _SLOW_START], stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    assert server.stdout.readline().strip() == "starting"
    server.send_signal(signum)
    try:
        output, _ = server.communicate(timeout=20)
    finally:
        server.kill()
    # Before: SIGTERM killed it at once (no clean-up), SIGINT cut start-up short and hung.
    assert server.returncode == 0
    assert output.split("\n")[:4] == ["stop signal", "started", "cleaned up", "exited"]

"""The Alertmanager client against a real Alertmanager: how posts are judged, raw alerts listed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

import aiohttp
from aiohttp import web

from ai_sidecar.notify import AlertmanagerClient, fingerprint
from ai_sidecar.notify.alertmanager import ALERTS_PATH, Reply
from scripts.localstack import free_port
from tests.ai_sidecar.builders import peer_member
from tests.ai_sidecar.notify.harness import SCOUT_LABELS, raw_postable
from tests.peers.alertmanager import Alertmanager, postable

TIMEOUT = timedelta(seconds=5)


async def test_accepted_and_refused_posts(
    alertmanager: Alertmanager, session: aiohttp.ClientSession
) -> None:
    client = AlertmanagerClient(session, TIMEOUT)
    good = peer_member("LinkDown")
    ok = await client.post_alerts(alertmanager.url, [raw_postable(good)])
    assert (ok.outcome, ok.detail) == ("ok", "")
    listed = await asyncio.to_thread(alertmanager.alerts)
    assert [a["fingerprint"] for a in listed] == [good.fingerprint]

    bad = postable({"alertname": "LinkDown", "bad-label": "x"})
    refused = await client.post_alerts(alertmanager.url, [bad])
    assert refused.outcome == "refused"
    assert refused.detail.startswith("HTTP 400: ")
    assert "invalid label set" in refused.detail


async def test_an_unreachable_peer_is_a_failure_and_lists_nothing(
    session: aiohttp.ClientSession,
) -> None:
    client = AlertmanagerClient(session, TIMEOUT)
    nobody = f"http://127.0.0.1:{free_port()}"
    failed = await client.post_alerts(nobody, [raw_postable(peer_member("LinkDown"))])
    assert failed.outcome == "failed"
    assert "ClientConnectorError" in failed.detail
    assert await client.raw_alerts(nobody) is None


async def test_raw_alerts_lists_raw_alerts_only(
    alertmanager: Alertmanager, session: aiohttp.ClientSession
) -> None:
    client = AlertmanagerClient(session, TIMEOUT)
    raw = peer_member("LinkDown", "sw1")
    copy_labels = {**raw.labels, **SCOUT_LABELS}
    alertmanager.post([raw_postable(raw), postable(copy_labels)])
    # The enriched copy is in Alertmanager, but not among the raw alerts.
    assert {a["fingerprint"] for a in await asyncio.to_thread(alertmanager.alerts)} == {
        raw.fingerprint,
        fingerprint(copy_labels),
    }
    listed = await client.raw_alerts(alertmanager.url)
    assert listed is not None
    assert [a["fingerprint"] for a in listed] == [raw.fingerprint]
    assert listed[0]["labels"] == dict(raw.labels)


async def post_to_stand_in(
    session: aiohttp.ClientSession,
    answer: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> Reply:
    """Post one alert to a stand-in peer whose alerts endpoint answers with ``answer``."""
    app = web.Application()
    app.router.add_post(ALERTS_PATH, answer)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        client = AlertmanagerClient(session, TIMEOUT)
        return await client.post_alerts(
            f"http://127.0.0.1:{port}", [raw_postable(peer_member("LinkDown"))]
        )
    finally:
        await runner.cleanup()


async def test_a_refusal_with_an_endless_answer_is_read_only_in_part(
    session: aiohttp.ClientSession,
) -> None:
    """Something at a peer's address refuses a post and then streams for ever: the
    client reads the start of the answer for its log, not the whole."""

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=400)
        await response.prepare(request)
        while True:
            await response.write(b"x" * 65536)

    reply = await post_to_stand_in(session, endless)
    # Before: the whole answer was read until the client's timeout, and it failed.
    assert reply.outcome == "refused"
    assert reply.detail.startswith("HTTP 400: xxx")
    assert len(reply.detail) <= len("HTTP 400: ") + 500


async def test_a_refusal_sent_in_pieces_is_logged_whole(session: aiohttp.ClientSession) -> None:
    async def in_two_writes(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=400)
        await response.prepare(request)
        await response.write(b'{"code":400,')
        await asyncio.sleep(0.2)
        await response.write(b'"message":"invalid label set"}')
        await response.write_eof()
        return response

    reply = await post_to_stand_in(session, in_two_writes)
    assert reply.detail == 'HTTP 400: {"code":400,"message":"invalid label set"}'


async def test_a_refusal_whose_answer_stalls_is_still_a_refusal(
    session: aiohttp.ClientSession,
) -> None:
    async def stalled(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=400, headers={"Content-Length": "500"})
        await response.prepare(request)
        await response.write(b'{"code":400,"message":"bad')
        # Longer than the client's timeout: before, the post failed on it.
        await asyncio.sleep(TIMEOUT.total_seconds() + 1)
        return response

    reply = await post_to_stand_in(session, stalled)
    assert reply.outcome == "refused"
    assert reply.detail == 'HTTP 400: {"code":400,"message":"bad'

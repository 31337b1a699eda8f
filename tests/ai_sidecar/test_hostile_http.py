"""Hostile peers on the sidecar's port: split bodies, huge bodies, malformed requests.

These speak HTTP over raw sockets where a client library would tidy up what
the test needs to send: a body in two TCP segments, header bytes no client
would write.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ai_sidecar import webhook
from ai_sidecar.app import create_app
from ai_sidecar.settings import SidecarSettings
from ai_sidecar.store import SqliteStore
from tests.ai_sidecar.builders import alert, alert_json, payload
from tests.ai_sidecar.test_app import AUTH, first_incident_id, settings
from tests.ai_sidecar.test_webhook_http import AUTH as WEBHOOK_AUTH
from tests.ai_sidecar.test_webhook_http import URL, sidecar_app
from tests.exporter.common.raw_http import (
    exchange,
    formatted,
    send_malformed_requests,
    served,
    status_of,
)

# --- the feedback endpoint reads its whole body ------------------------------------


async def test_feedback_body_in_two_segments_is_read_whole(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(settings(tmp_path)))
    incident_id = await first_incident_id(client)
    body = json.dumps({"useful": True, "comment": "right device, " + "x" * 400}).encode()
    head = (
        f"POST /api/v1/incidents/{incident_id}/feedback HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nAuthorization: {AUTH['Authorization']}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    # Headers and half the body, a pause, then the rest: two TCP segments.
    answer = await exchange(client.port, head + body[:20], body[20:], pause=0.3)
    assert status_of(answer) == 201, answer
    detail = await (await client.get(f"/api/v1/incidents/{incident_id}", headers=AUTH)).json()
    assert [f["comment"] for f in detail["feedback"]] == ["right device, " + "x" * 400]


# --- a big webhook body does not hold up small requests ----------------------------


def biggest_refused_payload(limit: int) -> bytes:
    """A body just under ``limit`` that the parser reads to its end, then refuses.

    Refused (the last alert's status is wrong) so that the test measures the
    parse, not the store.
    """
    one = replace(alert("LinkDown", instance="sw1"), annotations={"description": "x" * 200})
    # Each alert gets its own label "n", of at most 6 digits.
    size = len(json.dumps(alert_json(replace(one, labels={**one.labels, "n": "0" * 6})))) + 2
    items = [replace(one, labels={**one.labels, "n": str(n)}) for n in range(limit // size - 1)]
    data = payload(*items)
    data["alerts"][-1]["status"] = "pending"
    body = json.dumps(data).encode()
    assert limit // 2 < len(body) <= limit
    return body


def post(port: int, body: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        headers = {**WEBHOOK_AUTH, "Content-Type": "application/json"}
        conn.request("POST", URL, body=body, headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


async def test_small_request_is_answered_while_a_big_body_is_parsed(
    aiohttp_client, tmp_path, monkeypatch
):
    limit = SidecarSettings().max_body_bytes
    store = await SqliteStore.open(tmp_path / "scout.db")
    try:
        client = await aiohttp_client(sidecar_app(store, limit=limit))
        big = biggest_refused_payload(limit)
        small = json.dumps(payload(alert("DeviceDown", instance="r1"))).encode()
        parsing = threading.Event()
        events: list[str] = []
        real_parse: Callable[..., Any] = webhook.parse_payload

        def watched_parse(body: bytes, *args: Any) -> Any:
            if len(body) == len(big):
                parsing.set()
                try:
                    return real_parse(body, *args)
                finally:
                    events.append("big parsed")
            return real_parse(body, *args)

        monkeypatch.setattr(webhook, "parse_payload", watched_parse)

        def small_once_big_is_parsing() -> int:
            assert parsing.wait(timeout=60)
            status = post(client.port, small)
            events.append("small answered")
            return status

        # Plain threads for the clients: the test's own loop serves the app.
        big_status, small_status = await asyncio.gather(
            asyncio.to_thread(post, client.port, big),
            asyncio.to_thread(small_once_big_is_parsing),
        )
        assert (big_status, small_status) == (400, 200)
        assert events == ["small answered", "big parsed"]
    finally:
        await store.close()


# --- the bearer token never reaches a log --------------------------------------------

CANARY = "canary-token-3b9d51e2"
REQUEST_HEAD = b"POST /api/v1/alertmanager HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"


async def test_malformed_requests_never_log_the_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    # Served as scout-sidecar serves it: the redaction belongs to the server.
    async with served(create_app(settings(tmp_path, token=CANARY + "-other"))) as port:
        logged = await send_malformed_requests(
            port, REQUEST_HEAD, f"Bearer {CANARY}", caplog.records
        )
    assert "Invalid header token" in logged
    assert CANARY not in logged
    assert "Traceback" not in logged


# --- a body that does not decode as its headers say ----------------------------------


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        (URL, "application/json"),
        ("/api/v1/incidents/inc-x/feedback", "application/json"),
        # Anyone may post the sign-in form.
        ("/console/login", "application/x-www-form-urlencoded"),
    ],
    ids=["webhook", "feedback", "login"],
)
async def test_a_body_that_does_not_decode_is_a_400_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, path: str, content_type: str
):
    caplog.set_level(logging.DEBUG)
    body = b"username=a&password=b: not gzip at all"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH['Authorization']}\r\n"
        f"Content-Type: {content_type}\r\nContent-Encoding: gzip\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    async with served(create_app(settings(tmp_path))) as port:
        answer = await exchange(port, head + body)
        await asyncio.sleep(0.05)  # what aiohttp logs, it logs after the answer
    # A 5xx would have Alertmanager send the same broken body again for ever.
    assert status_of(answer) == 400, answer[:300]
    # The rest of the body cannot be read: the client must not send another
    # request on this connection, which the server closes.
    assert b"\r\nConnection: close\r\n" in answer.split(b"\r\n\r\n")[0] + b"\r\n"
    logged = formatted(caplog.records)
    # The problem is logged in one line, as the server's other refusals are.
    assert "Traceback" not in logged
    assert "400 Can not decode content-encoding (request not logged" in logged


# --- a client that hangs up halfway through its body ----------------------------------


@pytest.mark.parametrize(
    ("path", "content_type"),
    [(URL, "application/json"), ("/console/login", "application/x-www-form-urlencoded")],
    ids=["webhook", "login"],
)
async def test_a_client_gone_before_its_body_ends_logs_no_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, path: str, content_type: str
):
    caplog.set_level(logging.DEBUG)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH['Authorization']}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    async with served(create_app(settings(tmp_path))) as port:
        for _ in range(3):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head + b'{"version": "4", ')
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.close()
            await writer.wait_closed()
        await asyncio.sleep(0.1)  # the server sees each connection end
        # The server is none the worse.
        assert status_of(await exchange(port, b"GET /-/healthy HTTP/1.0\r\n\r\n")) == 200
    # Anyone can hang up: an error with a traceback each time would bury real ones.
    logged = formatted(caplog.records)
    assert "Traceback" not in logged
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], logged

"""The webhook over HTTP: what Alertmanager (or a misconfigured sender) sees, and what is stored.

Every refused request must leave the store untouched and say why in JSON.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from ai_sidecar.keys import METRICS, SETTINGS, STORE, WAKEUP
from ai_sidecar.metrics import SidecarMetrics, create_metrics
from ai_sidecar.models import ENRICHED_LABEL
from ai_sidecar.request_errors import request_errors
from ai_sidecar.settings import SidecarSettings
from ai_sidecar.store import SqliteStore, Store
from ai_sidecar.webhook import MAX_LABELS, receive
from scripts.localstack import Service, alertmanager_service, free_port
from tests.ai_sidecar.builders import alert, payload

TOKEN = "webhook-test-token-7f3a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
URL = "/api/v1/alertmanager"
FIXTURE = Path(__file__).parent / "fixtures" / "alertmanager-0.25-webhook.json"
LIMIT = 64 * 1024


def sidecar_app(store: Store, token: str | None = TOKEN, limit: int = LIMIT) -> web.Application:
    # The real app's middleware, without its worker: these tests look at what
    # the handler stored before anything consumes it.
    app = web.Application(middlewares=[request_errors])
    app[SETTINGS] = SidecarSettings(webhook_token=token, max_body_bytes=limit)
    app[METRICS] = create_metrics()
    app[STORE] = store
    app[WAKEUP] = asyncio.Event()
    app.router.add_post(URL, receive)
    return app


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    database = await SqliteStore.open(tmp_path / "scout.db")
    yield database
    await database.close()


@pytest.fixture
async def client(aiohttp_client: Any, store: Store) -> TestClient[Any, Any]:
    result: TestClient[Any, Any] = await aiohttp_client(sidecar_app(store))
    return result


def app_of(client: TestClient[Any, Any]) -> web.Application:
    app = client.app
    assert app is not None
    return app


def metric(client: TestClient[Any, Any], name: str, **labels: str) -> float:
    metrics: SidecarMetrics = app_of(client)[METRICS]
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def invalid(client: TestClient[Any, Any], reason: str) -> float:
    return metric(client, "scout_sidecar_alerts_invalid_total", reason=reason)


async def post_json(
    client: TestClient[Any, Any], data: Any, headers: dict[str, str] | None = None
) -> aiohttp.ClientResponse:
    headers = {**AUTH, "Content-Type": "application/json"} if headers is None else headers
    response: aiohttp.ClientResponse = await client.post(
        URL, data=json.dumps(data).encode(), headers=headers
    )
    return response


async def error_of(response: aiohttp.ClientResponse, status: int) -> str:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error"}
    message: str = body["error"]
    return message


async def test_recorded_alertmanager_delivery_is_stored(
    client: TestClient[Any, Any], store: Store
) -> None:
    # The exact bytes and headers Alertmanager 0.25 sent, plus the token.
    headers = {**AUTH, "Content-Type": "application/json", "User-Agent": "Alertmanager/0.25.0"}
    response = await client.post(URL, data=FIXTURE.read_bytes(), headers=headers)

    assert response.status == 200
    assert await response.json() == {
        "status": "stored",
        "alerts": 2,
        "new": 2,
        "duplicates": 0,
        "ignored_enriched": 0,
    }
    stored = await store.pending(10)
    assert [(p.alert.fingerprint, p.alert.status) for p in stored] == [
        ("32a57348a5d263f5", "firing"),
        ("28dabb766dc3f91a", "resolved"),
    ]
    assert app_of(client)[WAKEUP].is_set()
    assert metric(client, "scout_sidecar_alerts_received_total") == 2


async def test_redelivery_is_acknowledged_and_counted_as_duplicates(
    client: TestClient[Any, Any], store: Store
) -> None:
    body = payload(alert("InterfaceDown", instance="sw1"), alert("ProbeLoss", instance="srv1"))
    first = await post_json(client, body)
    assert (await first.json())["new"] == 2
    app_of(client)[WAKEUP].clear()

    again = await post_json(client, body)

    assert again.status == 200
    assert await again.json() == {
        "status": "stored",
        "alerts": 2,
        "new": 0,
        "duplicates": 2,
        "ignored_enriched": 0,
    }
    assert await store.alert_count() == 2
    assert not app_of(client)[WAKEUP].is_set()  # nothing new for the worker
    assert metric(client, "scout_sidecar_alerts_duplicate_total") == 2
    assert metric(client, "scout_sidecar_alerts_received_total") == 4


async def test_enriched_copies_coming_back_are_ignored(
    client: TestClient[Any, Any], store: Store
) -> None:
    raw = alert("InterfaceDown", instance="sw1")
    looped = alert("InterfaceDown", instance="sw1", **{ENRICHED_LABEL: "true"})

    response = await post_json(client, payload(raw, looped))

    assert response.status == 200
    assert await response.json() == {
        "status": "stored",
        "alerts": 2,
        "new": 1,
        "duplicates": 0,
        "ignored_enriched": 1,
    }
    assert [p.alert.fingerprint for p in await store.pending(10)] == [raw.fingerprint]
    assert metric(client, "scout_sidecar_alerts_looped_total") == 1


async def test_truncated_alerts_are_counted(client: TestClient[Any, Any]) -> None:
    response = await post_json(client, payload(alert("A", instance="x"), truncated=37))
    assert response.status == 200
    assert metric(client, "scout_sidecar_alerts_truncated_total") == 37


async def test_authentication_can_be_switched_off(aiohttp_client: Any, store: Store) -> None:
    client = await aiohttp_client(sidecar_app(store, token=None))
    response = await post_json(client, payload(alert("A")), {"Content-Type": "application/json"})
    assert response.status == 200
    assert await store.alert_count() == 1


def second_alert_changed(**fields: Any) -> bytes:
    """A delivery of two alerts whose second has ``fields``: one bad alert refuses all."""
    data = payload(alert("A"), alert("B"))
    data["alerts"][1].update(fields)
    return json.dumps(data).encode()


REFUSED: list[tuple[str, dict[str, str], bytes, int, str, str]] = [
    (
        "no-token",
        {"Content-Type": "application/json"},
        json.dumps(payload(alert("A"))).encode(),
        401,
        "missing bearer token: send 'Authorization: Bearer <token>'",
        "unauthorized",
    ),
    (
        "wrong-token",
        {"Authorization": "Bearer not-the-token", "Content-Type": "application/json"},
        json.dumps(payload(alert("A"))).encode(),
        401,
        "invalid bearer token",
        "unauthorized",
    ),
    (
        "basic-auth",
        {"Authorization": "Basic dXNlcjpwYXNz", "Content-Type": "application/json"},
        json.dumps(payload(alert("A"))).encode(),
        401,
        "missing bearer token: send 'Authorization: Bearer <token>'",
        "unauthorized",
    ),
    (
        "text-plain",
        {**AUTH, "Content-Type": "text/plain"},
        json.dumps(payload(alert("A"))).encode(),
        415,
        'Content-Type must be application/json, got "text/plain"',
        "media_type",
    ),
    (
        "malformed-json",
        {**AUTH, "Content-Type": "application/json"},
        b'{"version": "4", "alerts": [',
        400,
        "request body is not valid JSON: EOF while parsing a list at line 1 column 28",
        "invalid",
    ),
    (
        "wrong-version",
        {**AUTH, "Content-Type": "application/json"},
        json.dumps({**payload(alert("A")), "version": "3"}).encode(),
        400,
        'version: unsupported webhook payload version "3"; '
        'only version "4" (Alertmanager webhook v4) is supported',
        "invalid",
    ),
    (
        "missing-fields",
        {**AUTH, "Content-Type": "application/json; charset=utf-8"},
        json.dumps({"version": "4", "alerts": [{"status": "firing"}]}).encode(),
        400,
        "alerts[0].labels: required; alerts[0].startsAt: required; alerts[0].fingerprint: required",
        "invalid",
    ),
    (
        "starts-at-go-zero-time",
        {**AUTH, "Content-Type": "application/json"},
        second_alert_changed(startsAt="0001-01-01T00:00:00Z"),
        400,
        "alerts[1].startsAt: Go's zero time (unset); an alert must say when it started: "
        '"0001-01-01T00:00:00Z"',
        "invalid",
    ),
    (
        "labels-too-many",
        {**AUTH, "Content-Type": "application/json"},
        second_alert_changed(labels={f"label_{i}": "x" for i in range(MAX_LABELS + 1)}),
        400,
        f"alerts[1].labels: must have at most {MAX_LABELS} entries",
        "invalid",
    ),
    (
        "declared-too-large",
        {**AUTH, "Content-Type": "application/json"},
        json.dumps(payload(*(alert("A", instance=f"i{i}") for i in range(400)))).encode(),
        413,
        f"request body is larger than the limit of {LIMIT} bytes",
        "too_large",
    ),
]


@pytest.mark.parametrize(
    ("headers", "body", "status", "message", "reason"),
    [pytest.param(*case[1:], id=case[0]) for case in REFUSED],
)
async def test_refused_requests_say_why_and_store_nothing(
    client: TestClient[Any, Any],
    store: Store,
    headers: dict[str, str],
    body: bytes,
    status: int,
    message: str,
    reason: str,
) -> None:
    response = await client.post(URL, data=body, headers=headers)

    assert await error_of(response, status) == message
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert await store.alert_count() == 0
    assert invalid(client, reason) == 1
    assert not app_of(client)[WAKEUP].is_set()


async def test_chunked_body_over_the_limit_is_refused_before_it_ends(
    client: TestClient[Any, Any], store: Store
) -> None:
    never_ending = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        # No Content-Length (chunked), and the body never finishes: only a
        # server that stops reading past the limit can answer at all.
        yield b'{"version": "4", "alerts": [], "pad": "'
        for _ in range(LIMIT // 1024 + 2):
            yield b"x" * 1024
        await never_ending.wait()

    headers = {**AUTH, "Content-Type": "application/json"}
    try:
        response = await asyncio.wait_for(client.post(URL, data=endless(), headers=headers), 10)
        assert await error_of(response, 413) == (
            f"request body is larger than the limit of {LIMIT} bytes"
        )
    finally:
        never_ending.set()
    assert await store.alert_count() == 0
    assert invalid(client, "too_large") == 1


async def test_body_exactly_at_the_limit_is_accepted(client: TestClient[Any, Any]) -> None:
    body = json.dumps({"version": "4", "alerts": [], "pad": ""}).encode()
    body = body.replace(b'"pad": ""', b'"pad": "' + b"x" * (LIMIT - len(body)) + b'"')
    assert len(body) == LIMIT
    response = await client.post(
        URL, data=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status == 200, await response.text()


async def test_a_store_that_cannot_write_is_a_503_so_alertmanager_retries(
    client: TestClient[Any, Any], store: Store
) -> None:
    await store.close()
    response = await post_json(client, payload(alert("A")))
    message = await error_of(response, 503)
    # The store's reason (here its file's path) goes to the log, not to the client.
    assert message == "alerts not stored, retry later: the store cannot write now"
    assert "scout.db" not in message


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Callable[[int], Service]]:
    """Start the distribution's Alertmanager with a webhook to a local port."""
    started: list[Service] = []

    def start(webhook_port: int) -> Service:
        config = tmp_path / "alertmanager.yml"
        receiver = {
            "name": "scout",
            "webhook_configs": [
                {
                    "url": f"http://127.0.0.1:{webhook_port}{URL}",
                    "send_resolved": True,
                    "http_config": {"authorization": {"type": "Bearer", "credentials": TOKEN}},
                }
            ],
        }
        route = {
            "receiver": "scout",
            "group_by": ["alertname"],
            "group_wait": "0s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        }
        config.write_text(json.dumps({"route": route, "receivers": [receiver]}))
        service = alertmanager_service(config, tmp_path, free_port())
        service.start()
        started.append(service)
        service.wait_ready()
        return service

    yield start
    for service in started:
        service.stop(grace=5)


async def test_real_alertmanager_delivers_with_its_bearer_token(
    client: TestClient[Any, Any],
    store: Store,
    alertmanager: Callable[[int], Service],
) -> None:
    assert client.port is not None
    service = await asyncio.to_thread(alertmanager, client.port)
    am_url = service.ready_url.removesuffix("/-/ready")
    sent = [
        {"labels": {"alertname": "LinkDown", "instance": f"rtr{i}", "severity": "critical"}}
        for i in range(3)
    ]
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{am_url}/api/v2/alerts", json=sent) as response,
    ):
        assert response.status == 200

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while await store.alert_count() < 3:
        assert loop.time() < deadline, "Alertmanager's notification never got stored"
        await asyncio.sleep(0.05)
    stored = await store.pending(10)
    assert sorted(p.alert.labels["instance"] for p in stored) == ["rtr0", "rtr1", "rtr2"]
    assert {p.alert.status for p in stored} == {"firing"}
    assert invalid(client, "unauthorized") == 0

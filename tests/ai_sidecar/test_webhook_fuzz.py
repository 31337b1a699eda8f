"""Fuzzing the webhook: whatever arrives, the answer is a payload or a 400, never a crash.

Directly against :func:`parse_payload` (arbitrary bytes, arbitrary JSON,
payload-shaped objects, mutated valid payloads, and valid payloads that must
come back exactly), then over HTTP against a running app: every answer is a 200
or a 4xx, and a 4xx stores nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import threading
import unicodedata
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ai_sidecar.errors import BadRequestError
from ai_sidecar.models import Alert
from ai_sidecar.store import SqliteStore, Store
from ai_sidecar.webhook import (
    EARLIEST_START,
    MAX_ANNOTATION_VALUE_CHARS,
    MAX_ANNOTATIONS,
    MAX_LABELS,
    MAX_START_AHEAD,
    MAX_TRUNCATED_ALERTS,
    WebhookPayload,
    parse_payload,
)
from tests.ai_sidecar.builders import alert_json
from tests.ai_sidecar.test_webhook_http import AUTH, URL, sidecar_app

R = TypeVar("R")

FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,  # no example files left in the working tree
    suppress_health_check=[HealthCheck.too_slow],
)

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=25,
)

times = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-11))]
    ),
)
time_texts = times.map(lambda t: t.isoformat()) | st.sampled_from(
    [
        "0001-01-01T00:00:00Z",
        "2024-05-01T10:00:00.123456789Z",
        # Valid text whose instant falls outside what a datetime can hold in UTC.
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "2024-05-01T10:00:00+24:00",
        "2024-13-01T00:00:00Z",
        "2024-05-01T24:00:00Z",
        "now",
    ]
)
# Shaped like RFC 3339 but with any digits: impossible dates, offsets, overflow.
rfc3339_like = st.from_regex(
    r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}"
    r"(\.[0-9]{1,12})?([Zz]|[+-][0-9]{2}:[0-9]{2})?\Z"
)
label_maps = st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=5)


def valid_label_name(name: str) -> bool:
    return bool(name) and not any(unicodedata.category(ch) in ("Cc", "Cf") for ch in name)


# What the parser accepts: started between the epoch and now, ended no earlier than it started
# (and, resolved, not in the future). The bounds are local times in the zones drawn: a day's
# margin keeps each instant past the epoch in UTC (1970-01-01T00:00+05:30 is before it), and
# the latest end (a month after the latest start) before the sidecar's clock.
PAST_FROM, PAST_TO = datetime(1970, 1, 2), datetime(2026, 1, 1)
PAST_ZONES = [UTC, timezone(timedelta(hours=5, minutes=30))]
LONGEST_EPISODE = timedelta(days=30)
past_times = st.datetimes(
    min_value=PAST_FROM, max_value=PAST_TO, timezones=st.sampled_from(PAST_ZONES)
)


@st.composite
def valid_alerts(draw: st.DrawFn) -> Alert:
    starts_at = draw(past_times)
    ends_at = draw(st.none() | st.timedeltas(timedelta(0), LONGEST_EPISODE))
    return Alert(
        # Fingerprints follow the label names' rule (no control or formatting characters).
        fingerprint=draw(st.text(min_size=1, max_size=16).filter(valid_label_name)),
        status=draw(st.sampled_from(["firing", "resolved"])),
        labels=draw(
            st.dictionaries(
                st.text(min_size=1, max_size=10).filter(valid_label_name),
                st.text(max_size=20),
                min_size=1,
                max_size=5,
            )
        ),
        annotations=draw(label_maps),
        starts_at=starts_at,
        ends_at=None if ends_at is None else starts_at + ends_at,
        generator_url=draw(st.text(max_size=30)),
    )


alerts = valid_alerts()


def test_valid_alerts_are_drawn_within_what_the_parser_accepts_in_every_zone() -> None:
    # Hypothesis reaches the bounds only now and then: a bound outside what the
    # parser takes makes test_valid_payloads_come_back_exactly fail at random.
    latest_end = datetime.now(UTC)
    for zone in PAST_ZONES:
        assert PAST_FROM.replace(tzinfo=zone) >= EARLIEST_START, zone
        assert PAST_TO.replace(tzinfo=zone) + LONGEST_EPISODE <= latest_end, zone


def payload_json(items: list[Alert], truncated: int = 0) -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": "{}:{}",
        "truncatedAlerts": truncated,
        "status": "firing",
        "receiver": "scout",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": [alert_json(a) for a in items],
    }


# Objects with the right keys and arbitrary values reach the per-field checks.
alert_shaped = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from(["firing", "resolved", "pending"]) | json_values,
        "labels": label_maps | json_values,
        "annotations": label_maps | json_values,
        "startsAt": time_texts | json_values,
        "endsAt": time_texts | json_values,
        "generatorURL": st.text(max_size=10) | json_values,
        "fingerprint": st.text(max_size=10) | json_values,
    },
)
payload_shaped = st.fixed_dictionaries(
    {},
    optional={
        "version": st.sampled_from(["4", "3", 4]) | json_values,
        "alerts": st.lists(alert_shaped | json_values, max_size=4) | json_values,
        "truncatedAlerts": st.integers(-5, 5) | json_values,
        "groupLabels": label_maps | json_values,
        "receiver": json_values,
    },
)


def parse_or_refuse(body: bytes) -> WebhookPayload | None:
    """The property: a well-formed payload, or a BadRequestError with a short one-line message."""
    try:
        payload = parse_payload(body)
    except BadRequestError as exc:
        message = str(exc)
        assert message
        assert "\n" not in message
        assert len(message) < 2000, message
        return None
    for alert in payload.alerts:
        assert alert.fingerprint
        assert alert.labels
        assert alert.status in ("firing", "resolved")
        assert alert.starts_at.utcoffset() == timedelta(0)
        assert alert.ends_at is None or alert.ends_at.utcoffset() == timedelta(0)
        for mapping in (alert.labels, alert.annotations):
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items())
    assert 0 <= payload.truncated_alerts <= MAX_TRUNCATED_ALERTS
    latest_start = datetime.now(UTC) + MAX_START_AHEAD
    seen: dict[str, Any] = {}
    for alert in payload.alerts:
        assert all(valid_label_name(name) for name in alert.labels)
        assert valid_label_name(alert.fingerprint)
        assert EARLIEST_START <= alert.starts_at <= latest_start
        assert len(alert.labels) <= MAX_LABELS
        assert len(alert.annotations) <= MAX_ANNOTATIONS
        assert alert.ends_at is None or alert.ends_at >= alert.starts_at
        if alert.status == "resolved" and alert.ends_at is not None:
            assert alert.ends_at <= latest_start
        for value in alert.annotations.values():
            assert len(value) <= MAX_ANNOTATION_VALUE_CHARS
        assert seen.setdefault(alert.fingerprint, alert.labels) == alert.labels
    return payload


@FUZZ
@given(st.binary(max_size=400))
def test_arbitrary_bytes(body: bytes) -> None:
    parse_or_refuse(body)


@FUZZ
@given(json_values | payload_shaped)
def test_arbitrary_json(value: Any) -> None:
    parse_or_refuse(json.dumps(value).encode())


@st.composite
def mutated_payloads(draw: st.DrawFn) -> bytes:
    data = payload_json(draw(st.lists(alerts, min_size=1, max_size=3)))
    # Walk to a random container inside the payload, then break something there.
    target: Any = data
    while True:
        keys = list(target) if isinstance(target, dict) else list(range(len(target)))
        if not keys:
            break
        key = draw(st.sampled_from(keys))
        child = target[key]
        if isinstance(child, dict | list) and draw(st.booleans()):
            target = child
            continue
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            target[key] = draw(json_values)
        elif action == "delete":
            del target[key]
        elif isinstance(target, dict):
            target[draw(st.text(max_size=8))] = draw(json_values)
        else:
            target.append(draw(json_values))
        break
    body = json.dumps(data).encode()
    if draw(st.booleans()):
        # Byte-level damage as well: cut, or splice in garbage.
        at = draw(st.integers(0, len(body)))
        body = body[:at] + draw(st.binary(max_size=4)) + body[at + draw(st.integers(0, 4)) :]
    return body


@FUZZ
@given(mutated_payloads())
def test_mutated_valid_payloads(body: bytes) -> None:
    parse_or_refuse(body)


@FUZZ
@given(st.lists(alerts, min_size=1, max_size=2), rfc3339_like | time_texts, st.data())
def test_time_fields(items: list[Alert], text: str, data: st.DataObject) -> None:
    body = payload_json(items)
    field = data.draw(st.sampled_from(["startsAt", "endsAt"]))
    body["alerts"][-1][field] = text
    parse_or_refuse(json.dumps(body).encode())


@FUZZ
@given(
    st.lists(alerts, max_size=5, unique_by=lambda a: a.fingerprint),
    st.integers(0, MAX_TRUNCATED_ALERTS),
)
def test_valid_payloads_come_back_exactly(items: list[Alert], truncated: int) -> None:
    body = json.dumps(payload_json(items, truncated)).encode()
    payload = parse_or_refuse(body)
    assert payload is not None
    assert payload.alerts == tuple(items)
    assert payload.truncated_alerts == truncated


class LiveSidecar:
    """The webhook app on a loopback port, served from its own thread and event loop.

    Hypothesis drives plain functions, so the server cannot share the test's loop.
    """

    def __init__(self, data_dir: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="live-sidecar")
        self.thread.start()
        self.store: Store = self.call(SqliteStore.open(data_dir / "scout.db"))
        self.runner = web.AppRunner(sidecar_app(self.store))
        self.call(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.call(site.start())
        self.port: int = self.runner.addresses[0][1]

    def call(self, coro: Coroutine[Any, Any, R]) -> R:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def count(self) -> int:
        return self.call(self.store.alert_count())

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        with contextlib.closing(conn):
            conn.request("POST", URL, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, json.loads(response.read())

    def stop(self) -> None:
        self.call(self.runner.cleanup())
        self.call(self.store.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveSidecar]:
    sidecar = LiveSidecar(tmp_path_factory.mktemp("live-sidecar"))
    yield sidecar
    sidecar.stop()


http_bodies = (
    st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | payload_shaped.map(lambda v: json.dumps(v).encode())
    | mutated_payloads()
    | st.lists(alerts, max_size=3).map(lambda items: json.dumps(payload_json(items)).encode())
)
JSON_HEADERS = {**AUTH, "Content-Type": "application/json"}
# Mostly well-addressed requests, so the bodies reach the parser and the store.
http_headers = st.sampled_from(
    [
        *[JSON_HEADERS] * 8,
        {**AUTH, "Content-Type": "application/json; charset=utf-8"},
        {"Content-Type": "application/json"},
        {**AUTH, "Content-Type": "text/plain"},
    ]
)


@settings(FUZZ, max_examples=200)
@given(body=http_bodies, headers=http_headers)
def test_fuzzed_requests_get_200_or_4xx_and_refusals_store_nothing(
    live: LiveSidecar, body: bytes, headers: dict[str, str]
) -> None:
    before = live.count()
    status, answer = live.post(body, headers)
    after = live.count()

    if status == 200:
        assert answer["status"] == "stored"
        assert after - before == answer["new"]
    else:
        assert 400 <= status < 500, (status, answer)
        assert isinstance(answer["error"], str)
        assert answer["error"]
        assert after == before

"""Fake firewall APIs on free loopback ports, and the real exporter app to scrape them.

Every test here logs at DEBUG, aiohttp's loggers included, and fails if any
record holds one of the canary secrets, whatever the test itself checks.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable, Iterator

import pytest
from aiohttp.test_utils import TestClient

from exporter.app import create_app
from exporter.config import parse_config
from exporter.live import Settings
from tests.peers.firewall_api import (
    CANARIES,
    FORTIGATE_TOKEN,
    OPNSENSE_KEY,
    OPNSENSE_SECRET,
    PFSENSE_KEY,
    FakeApi,
)

AUTHS = f"""
auths:
  fgt: {{type: http, bearer_token: {FORTIGATE_TOKEN}, allowed_targets: [127.0.0.0/8]}}
  opn:
    type: http
    username: {OPNSENSE_KEY}
    password: {OPNSENSE_SECRET}
    allowed_targets: [127.0.0.0/8]
  pf: {{type: http, api_key: {PFSENSE_KEY}, allowed_targets: [127.0.0.0/8]}}
  wrong: {{type: http, bearer_token: canary-wrong-secret-00aa, allowed_targets: [127.0.0.0/8]}}
  opn_wrong:
    type: http
    username: {OPNSENSE_KEY}
    password: canary-wrong-secret-00aa
    allowed_targets: [127.0.0.0/8]
  pf_wrong: {{type: http, api_key: canary-wrong-secret-00aa, allowed_targets: [127.0.0.0/8]}}
  fgt_elsewhere:
    type: http
    bearer_token: {FORTIGATE_TOKEN}
    allowed_targets: [192.0.2.0/24, "*.example.net"]
  fgt_by_name: {{type: http, bearer_token: {FORTIGATE_TOKEN}, allowed_targets: [127.0.0.0/8]}}
"""
MODULES = """
modules:
  fortigate_http: {prober: fortigate, scheme: http}
  fortigate_budget: {prober: fortigate, scheme: http, max_rule_series: 1}
  fortigate_all_rules: {prober: fortigate, scheme: http, all_rules: true}
  fortigate_small: {prober: fortigate, scheme: http, max_response_bytes: 65536}
  fortigate_branch: {prober: fortigate, scheme: http, vdom: branch}
  opnsense_http: {prober: opnsense, scheme: http}
  pfsense_http: {prober: pfsense, scheme: http}
"""

Scout = Callable[..., Awaitable[TestClient]]
StartFake = Callable[..., Awaitable[FakeApi]]


@pytest.fixture(autouse=True)
def no_secret_in_any_log_line(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.get_records("setup") + caplog.get_records("call"):
        text = record.getMessage() + repr(record.__dict__)
        leaked = [canary for canary in CANARIES if canary in text]
        assert not leaked, f"{leaked} in a log line of {record.name}"


@pytest.fixture
def start_fake(aiohttp_server) -> StartFake:
    """Start a vendor's fake API, over TLS when given a server context."""

    async def start(vendor: str, tls: ssl.SSLContext | None = None) -> FakeApi:
        fake = FakeApi(vendor)
        server = await aiohttp_server(fake.app, ssl=tls)
        fake.port = server.port
        return fake

    return start


@pytest.fixture
def scout(aiohttp_client) -> Scout:
    """The exporter app with the test auths and modules (plus ``extra`` YAML modules),
    and ``offset`` seconds taken off each scrape timeout."""

    async def make(extra: str = "", offset: float = 0.5) -> TestClient:
        text = AUTHS + MODULES + extra
        settings = Settings(enabled_collectors=frozenset(), timeout_offset_seconds=offset)
        return await aiohttp_client(create_app(settings, parse_config(text, "firewall.yml")))

    return make

"""A WS-Man listener over HTTPS (a throwaway CA) and an exporter configured to scrape it."""

from __future__ import annotations

import gc
import ssl
import warnings
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from cryptography import x509

from exporter.app import create_app
from exporter.config import parse_config
from exporter.live import Settings
from tests.exporter.certs import CertificateAuthority
from tests.exporter.targets.winrm.wsman_server import WsmanServer

USERNAME = "CORP\\monitor"
# A canary: it must never appear in a log line, a metric or an answer.
PASSWORD = "canary-secret-Pa55w0rd"


@dataclass
class WinrmPeer:
    server: WsmanServer
    target: str
    ca_file: Path


@pytest.fixture(autouse=True)
def collect_the_listeners_cut_connections() -> Iterator[None]:
    """Collect, after the listener has stopped, the server side of connections the
    client cut (the hostile hosts' trickled answers): asyncio's TLS transports
    of such connections are left unclosed, and collected later they warn inside
    another test, which then fails for a warning that is not its own."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path)


@pytest.fixture
async def wsman(aiohttp_server, ca: CertificateAuthority) -> WinrmPeer:
    pair = ca.server("wsman")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pair.cert, pair.key)
    server = WsmanServer(username=USERNAME, password=PASSWORD)
    running = await aiohttp_server(server.app(), ssl=context)
    return WinrmPeer(server, f"127.0.0.1:{running.port}", ca.pair.cert)


@pytest.fixture
async def named_wsman(aiohttp_server, ca: CertificateAuthority) -> WinrmPeer:
    """A listener whose certificate names ``localhost`` only, no address: the target is the name."""
    pair = ca.issue("wsman-named", server=True, sans=[x509.DNSName("localhost")])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pair.cert, pair.key)
    server = WsmanServer(username=USERNAME, password=PASSWORD)
    running = await aiohttp_server(server.app(), ssl=context)
    return WinrmPeer(server, f"localhost:{running.port}", ca.pair.cert)


@pytest.fixture
async def ntlm_wsman(aiohttp_server, tmp_path: Path, monkeypatch) -> WinrmPeer:
    """A listener on plain HTTP that takes NTLM only, and encrypted messages only."""
    users = tmp_path / "ntlm-users"
    domain, user = USERNAME.split("\\")
    users.write_text(f"{domain}:{user}:{PASSWORD}\n")
    monkeypatch.setenv("NTLM_USER_FILE", str(users))
    server = WsmanServer(ntlm=True)
    running = await aiohttp_server(server.app())
    return WinrmPeer(server, f"127.0.0.1:{running.port}", users)


def exporter_config(ca_file: Path, *, password: str = PASSWORD, module: str = "") -> str:
    return f"""
auths:
  windows:
    type: winrm
    username: '{USERNAME}'
    password: '{password}'
    transport: basic
    https: true
    ca_file: '{ca_file}'
    allowed_targets: [127.0.0.0/8, "::1/128"]
  windows_no_ca:
    type: winrm
    username: '{USERNAME}'
    password: '{password}'
    transport: basic
    https: true
    allowed_targets: [127.0.0.0/8, "::1/128"]
  windows_ntlm:
    type: winrm
    username: '{USERNAME}'
    password: '{password}'
    transport: ntlm
    allowed_targets: [127.0.0.0/8, "::1/128"]
  windows_credssp:
    type: winrm
    username: '{USERNAME}'
    password: '{password}'
    transport: credssp
    allowed_targets: [127.0.0.0/8, "::1/128"]
modules:
  fileserver:
    prober: winrm
    services: {{exclude: "wuauserv"}}
    critical_services: [Spooler, LanmanServer]
    top_processes: 2
{module}
"""


ClientFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def exporter_client(aiohttp_client, wsman: WinrmPeer) -> ClientFactory:
    async def make(*, password: str = PASSWORD, module: str = "") -> TestClient:
        config = parse_config(
            exporter_config(wsman.ca_file, password=password, module=module), "winrm.yml"
        )
        settings = Settings(enabled_collectors=frozenset())
        return await aiohttp_client(create_app(settings, config))

    return make

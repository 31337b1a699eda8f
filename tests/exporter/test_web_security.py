"""TLS, mutual TLS and basic auth end to end: a real scout-exporter scraped by a real Prometheus."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from cryptography import x509

from scripts.localstack import Service, exporter_service, free_port
from tests.conftest import promql, wait_for
from tests.exporter.certs import CertificateAuthority, Pair

pytestmark = pytest.mark.peers

USER = "prometheus"
PASSWORD = "scrape-password-canary"
# Cost 8: cheap enough for a 1 s scrape interval on a busy test machine, real bcrypt all the same.
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=8)).decode()


@dataclass
class TlsService(Service):
    """A service whose readiness is checked over TLS, with a client certificate and password."""

    client_context: ssl.SSLContext | None = None
    authorization: str | None = None

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert not self.exited(), self.log_tail()
            # Any HTTP answer (a 403 for a refused SAN, too) means it is serving.
            if fetch(self.ready_url, self.client_context, self.authorization)[0] != 0:
                return
            time.sleep(0.1)
        pytest.fail(f"{self.name} not ready over TLS:\n{self.log_tail()}")


def fetch(
    url: str, context: ssl.SSLContext | None, authorization: str | None = None
) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if authorization:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError):
        return 0, ""


def basic_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def client_context(ca: CertificateAuthority, client: Pair | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca.pair.cert)
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    return context


@dataclass
class Secured:
    url: str
    service: TlsService
    ca: CertificateAuthority
    client: Pair
    web_config: Path


@pytest.fixture
def secured_exporter(
    tmp_path: Path, start_service: Callable[[Service], Service]
) -> Callable[..., Secured]:
    """scout-exporter over TLS with basic auth and (by default) client certificates."""

    def start(
        client_auth: str = "RequireAndVerifyClientCert", allowed_sans: tuple[str, ...] = ()
    ) -> Secured:
        pki = tmp_path / "pki"
        pki.mkdir(exist_ok=True)
        ca = CertificateAuthority(pki, "ca")
        ca.server("server")
        client = ca.client("client")
        verifies = client_auth != "NoClientCert"
        web_config = tmp_path / "web.yml"
        web_config.write_text(
            "tls_server_config:\n"
            "  cert_file: pki/server.crt\n"
            "  key_file: pki/server.key\n"
            f"  client_auth_type: {client_auth}\n"
            + ("  client_ca_file: pki/ca.crt\n" if verifies else "")
            + (f"  client_allowed_sans: {list(allowed_sans)}\n" if allowed_sans else "")
            + f"basic_auth_users:\n  {USER}: '{HASH}'\n"
        )
        port = free_port()
        plain = exporter_service(tmp_path, port, [f"--web.config.file={web_config}"])
        url = f"https://127.0.0.1:{port}"
        service = TlsService(
            name=plain.name,
            argv=plain.argv,
            ready_url=f"{url}/-/ready",
            log_path=plain.log_path,
            client_context=client_context(ca, client if verifies else None),
            authorization=basic_header(USER, PASSWORD),
        )
        start_service(service)
        return Secured(url, service, ca, client, web_config)

    return start


def scrape_job(
    name: str, url: str, ca: CertificateAuthority, client: Pair | None, password: str
) -> dict[str, Any]:
    tls: dict[str, str] = {"ca_file": str(ca.pair.cert)}
    if client is not None:
        tls |= {"cert_file": str(client.cert), "key_file": str(client.key)}
    return {
        "job_name": name,
        "scheme": "https",
        "tls_config": tls,
        "basic_auth": {"username": USER, "password": password},
        "static_configs": [{"targets": [url.removeprefix("https://")]}],
    }


def test_prometheus_scrapes_over_mutual_tls_with_basic_auth(secured_exporter, prometheus_factory):
    exporter = secured_exporter()
    prometheus = prometheus_factory(
        [
            scrape_job("good", exporter.url, exporter.ca, exporter.client, PASSWORD),
            scrape_job("wrong_password", exporter.url, exporter.ca, exporter.client, "nope"),
            scrape_job("no_client_cert", exporter.url, exporter.ca, None, PASSWORD),
        ]
    )
    wait_for(lambda: promql(prometheus, 'up{job="good"} == 1'), what="the good job to be up")
    cpu = wait_for(
        lambda: promql(prometheus, 'scout_host_cpu_seconds_total{job="good"}'),
        what="host metrics through TLS",
    )
    assert {series["metric"]["mode"] for series in cpu} >= {"user", "system", "idle"}
    for job in ("wrong_password", "no_client_cert"):
        down = wait_for(
            lambda job=job: promql(prometheus, f'up{{job="{job}"}} == 0'),
            what=f"the {job} job to be scraped and down",
        )
        assert len(down) == 1
    # Nothing of the refused jobs got through.
    assert promql(prometheus, 'scout_exporter_build_info{job!="good"}') == []
    assert PASSWORD not in exporter.service.log_path.read_text()


def answer_to(address: str, context: ssl.SSLContext | None) -> bytes | str:
    """What a GET /metrics gets back: bytes of the answer, or the error's text."""
    host, port = address.split(":")
    try:
        with contextlib.ExitStack() as stack:
            raw = stack.enter_context(socket.create_connection((host, int(port)), timeout=5))
            stream = raw
            if context is not None:
                stream = stack.enter_context(context.wrap_socket(raw, server_hostname=host))
            stream.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            return stream.recv(1024)
    except OSError as exc:  # ssl.SSLError included
        return str(exc)


def test_client_without_certificate_is_refused_in_the_handshake(secured_exporter):
    exporter = secured_exporter()
    address = exporter.url.removeprefix("https://")
    # TLS 1.3: the client's side of the handshake completes; the server then
    # closes the connection (or sends an alert) instead of answering.
    refused = answer_to(address, client_context(exporter.ca, None))
    assert refused == b"" or "CERTIFICATE_REQUIRED" in str(refused), refused
    auth = basic_header(USER, PASSWORD)
    assert fetch(f"{exporter.url}/metrics", client_context(exporter.ca, None), auth)[0] == 0
    with_cert = client_context(exporter.ca, exporter.client)
    answer = answer_to(address, with_cert)
    assert isinstance(answer, bytes)
    assert answer.startswith(b"HTTP/1.1 401")
    status, body = fetch(f"{exporter.url}/metrics", with_cert, auth)
    assert status == 200
    assert "scout_exporter_build_info" in body


@pytest.mark.parametrize(("allowed", "status"), [("prometheus", 200), ("grafana", 403)])
def test_client_allowed_sans_admit_only_listed_certificates(secured_exporter, allowed, status):
    exporter = secured_exporter(allowed_sans=(allowed, "other.example"))
    context = client_context(exporter.ca, exporter.client)  # its SAN is DNS:prometheus
    answer = fetch(f"{exporter.url}/metrics", context, basic_header(USER, PASSWORD))
    assert answer[0] == status
    assert ("scout_exporter_build_info" in answer[1]) == (status == 200)


def test_plain_http_to_the_tls_port_gets_a_400_and_nothing_else(secured_exporter):
    exporter = secured_exporter("NoClientCert")
    address = exporter.url.removeprefix("https://")
    # What Go's servers (node_exporter, Prometheus) answer there.
    answer = answer_to(address, None)
    assert answer == (
        b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
    )
    context = client_context(exporter.ca, None)
    assert fetch(f"{exporter.url}/-/healthy", context, basic_header(USER, PASSWORD))[0] == 200
    assert fetch(f"http://{address}/-/healthy", None, basic_header(USER, PASSWORD))[0] == 400


def test_renewed_certificate_is_served_after_a_reload(secured_exporter):
    exporter = secured_exporter("NoClientCert")
    host, port = exporter.url.removeprefix("https://").split(":")

    def served_serial() -> int:
        context = client_context(exporter.ca, None)
        with (
            socket.create_connection((host, int(port)), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number

    first = served_serial()
    renewed = exporter.ca.server("server")  # same paths, new certificate and key
    assert exporter.service.process is not None
    os.kill(exporter.service.process.pid, signal.SIGHUP)

    def renewed_served() -> bool:
        return served_serial() != first

    wait_for(renewed_served, timeout=10, what="the renewed certificate")
    assert (
        served_serial() == x509.load_pem_x509_certificate(renewed.cert.read_bytes()).serial_number
    )
    assert "config reloaded" in exporter.service.log_path.read_text()


def test_reload_over_https_needs_the_flag(secured_exporter):
    exporter = secured_exporter("NoClientCert")
    request = urllib.request.Request(f"{exporter.url}/-/reload", data=b"", method="POST")
    request.add_header("Authorization", basic_header(USER, PASSWORD))
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5, context=client_context(exporter.ca, None))
    assert refused.value.code == 403
    assert "--web.enable-lifecycle" in refused.value.read().decode()

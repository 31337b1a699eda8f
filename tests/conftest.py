"""Shared fixtures: real processes on free loopback ports, and small HTTP helpers."""

from __future__ import annotations

import inspect
import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.localstack import Service, exporter_service, free_port, prometheus_service
from tests.peers.postgres import PostgresServer


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def http_post(url: str, timeout: float = 5.0) -> tuple[int, str]:
    request = urllib.request.Request(url, data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """For an opener that shows redirects (as HTTPError with the 3xx code) instead of
    following them: a console form's 303 is the answer under test."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def run_on_busy_port(module: str, *args: str) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run ``python -m module`` told to listen on a port that is already taken."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", module, *args, f"--web.listen-address=127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    return result, port


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` otherwise.

    A network error from ``check`` (a refused connection, a read that timed out on a
    loaded machine) is a "not yet", not the end of the wait; the failure says the last.
    """
    deadline = time.monotonic() + timeout
    last_error: OSError | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except OSError as exc:
            last_error = exc
        else:
            if result:
                return result
        time.sleep(0.2)
    error = "" if last_error is None else f" (last error: {last_error!r})"
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}{error}")


def promql(base_url: str, query: str) -> list[dict[str, Any]]:
    url = f"{base_url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    status, body = http_get(url)
    assert status == 200, body
    payload = json.loads(body)
    assert payload["status"] == "success", payload
    result: list[dict[str, Any]] = payload["data"]["result"]
    return result


@pytest.fixture
def start_service() -> Iterator[Callable[[Service], Service]]:
    """Start services that are stopped (whole process group) at teardown."""
    started: list[Service] = []

    def start(service: Service) -> Service:
        service.start()
        started.append(service)
        service.wait_ready()
        return service

    yield start
    for service in reversed(started):
        service.stop(grace=5)


@pytest.fixture
def exporter_factory(
    tmp_path: Path, start_service: Callable[[Service], Service]
) -> Callable[..., tuple[Service, str]]:
    """Run ``scout-exporter`` on a free port; returns the service and its base URL."""

    def make(*args: str) -> tuple[Service, str]:
        port = free_port()
        service = start_service(exporter_service(tmp_path, port, args))
        return service, f"http://127.0.0.1:{port}"

    return make


@pytest.fixture
def prometheus_factory(
    tmp_path: Path, start_service: Callable[[Service], Service]
) -> Callable[[list[dict[str, Any]]], str]:
    """Run the distribution's Prometheus with the given scrape configs; returns its URL."""

    def make(scrape_configs: list[dict[str, Any]]) -> str:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            json.dumps(  # JSON is valid YAML
                {
                    "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                    "scrape_configs": scrape_configs,
                }
            )
        )
        start_service(prometheus_service(config, tmp_path, port))
        return f"http://127.0.0.1:{port}"

    return make


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One private PostgreSQL server for the session; each test makes its own database."""
    with PostgresServer() as server:
        yield server


# Fixtures that start real daemons (Prometheus, Alertmanager, VictoriaMetrics,
# snmpd, snmpsim, snmp_exporter, Scout's own processes, network namespaces, chromium).
# A test that uses one, directly or through another fixture, is in the slow lane:
# `pytest -m "not peers"` leaves it out. Modules that start daemons themselves
# carry `pytestmark = pytest.mark.peers`.
PEER_FIXTURES = frozenset(
    {
        "start_service",
        "exporter_factory",
        "prometheus_factory",
        "sidecar_factory",
        "alertmanager",
        "engine",
        "snmpd",
        "own_snmpd",
        "netns_snmpd",
        "sim",
        "snmpsim",
        "snmp_exporter",
        "netns",
        "isolated_netns",
        "link_local_netns",
        "secured_exporter",
        "tsc",
        "postgres_server",
        "browser",
    }
)


# Calls in a test's own body that start a process (a Scout CLI, a tool): a
# fresh interpreter costs about a second, so those tests are in the slow lane too.
PROCESS_CALLS = (
    "subprocess.",
    "sys.executable",
    "run_cli(",
    "run_exporter(",
    "run_in_netns(",
    "run_on_busy_port(",
)


def _starts_a_process(item: pytest.Item) -> bool:
    function = getattr(item, "function", None)
    if function is None:
        return False
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return False
    return any(call in source for call in PROCESS_CALLS)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PEER_FIXTURES.intersection(getattr(item, "fixturenames", ())) or _starts_a_process(item):
            item.add_marker(pytest.mark.peers)
    # Minutes of waiting on a wall-clock timer go first: under `make test`'s
    # parallel workers (pytest-xdist, whole files in collection order) the other
    # workers run the rest of the suite meanwhile, instead of everyone waiting at
    # the end. The sort is stable, so the order is otherwise unchanged.
    items.sort(key=lambda item: item.get_closest_marker("waits") is None)

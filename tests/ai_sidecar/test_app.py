"""The sidecar's service endpoints; the webhook and incidents come with the sidecar core."""

from __future__ import annotations

import signal

from ai_sidecar.app import create_app
from ai_sidecar.settings import SidecarSettings
from scripts.localstack import free_port, sidecar_service
from tests.conftest import http_get, run_on_busy_port


async def test_metrics_health_and_landing(aiohttp_client):
    client = await aiohttp_client(create_app(SidecarSettings()))
    metrics = await (await client.get("/metrics")).text()
    assert 'scout_sidecar_build_info{pythonversion="' in metrics
    assert "process_cpu_seconds_total" in metrics
    assert (await client.get("/-/healthy")).status == 200
    assert (await client.get("/-/ready")).status == 200
    landing = await (await client.get("/")).text()
    assert 'href="/metrics"' in landing


async def test_two_apps_do_not_share_metrics(aiohttp_client):
    # Each app owns its registry: a second one must not fail on duplicate names.
    first = await aiohttp_client(create_app(SidecarSettings()))
    second = await aiohttp_client(create_app(SidecarSettings()))
    assert (await first.get("/metrics")).status == 200
    assert (await second.get("/metrics")).status == 200


def test_cli_serves_and_stops_cleanly_on_sigterm(tmp_path, start_service):
    port = free_port()
    service = start_service(sidecar_service(tmp_path, port))
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    assert "scout_sidecar_build_info" in body
    assert service.process is not None
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(timeout=10) == 0


def test_cli_busy_port_is_a_clear_error():
    result, port = run_on_busy_port("ai_sidecar.cli", "serve")
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr

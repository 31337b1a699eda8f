"""The exporter's HTTP endpoints, served by the real app on aiohttp's test server."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from exporter.app import create_app
from exporter.cli import build_parser, enabled_collectors
from exporter.live import Settings

GOOD = """
auths:
  public_v2: {type: snmp, community: first-community-secret, allowed_targets: [any]}
"""
GOOD_AGAIN = """
auths:
  public_v2: {type: snmp, community: second-community-secret, allowed_targets: [any]}
  core: {type: http, bearer_token: token-secret, allowed_targets: [any]}
"""
BAD = """
auths:
  public_v2: {type: snmp, community: first-community-secret, allowed_targets: [any]}
  brand_new_auth: {type: snmp, comunity: typo}
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "scout.yml"
    path.write_text(GOOD)
    return path


@pytest.fixture
async def client(aiohttp_client, config_file):
    return await aiohttp_client(
        create_app(Settings(config_file=config_file, enable_lifecycle=True))
    )


async def get_text(client, path: str, **kwargs) -> str:
    response = await client.get(path, **kwargs)
    assert response.status == 200
    return await response.text()


async def test_landing_page_links_every_endpoint(client):
    page = await get_text(client, "/")
    for href in ("/metrics", "/config", "/-/healthy", "/-/ready"):
        assert f'href="{href}"' in page
    assert "Collectors enabled: host" in page
    # Read by screen readers and phones as the sidecar's page is.
    assert '<html lang="en">' in page
    assert '<meta name="viewport"' in page
    assert page.count("<main>") == 1


async def test_health_endpoints(client):
    assert await get_text(client, "/-/healthy") == "Healthy.\n"
    assert await get_text(client, "/-/ready") == "Ready.\n"


async def test_metrics_has_host_self_and_process_metrics(client):
    text = await get_text(client, "/metrics")
    assert 'scout_exporter_build_info{pythonversion="' in text
    assert "scout_config_last_reload_successful 1.0" in text
    assert 'scout_collector_success{collector="host"} 1.0' in text
    assert "scout_host_cpu_seconds_total{" in text
    assert "process_resident_memory_bytes" in text


async def test_metrics_speaks_openmetrics_when_asked(client):
    response = await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await response.text()).endswith("# EOF\n")


async def test_metrics_gzipped_when_asked(client):
    response = await client.get(
        "/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    )
    assert response.headers["Content-Encoding"] == "gzip"
    assert b"scout_host_load1" in gzip.decompress(await response.read())


async def test_config_endpoint_masks_secrets(client):
    text = await get_text(client, "/config")
    assert "first-community-secret" not in text
    assert "community: <secret>" in text


async def test_bad_reload_keeps_old_config_and_reports_it(client, config_file):
    config_file.write_text(BAD)
    response = await client.post("/-/reload")
    assert response.status == 500
    body = await response.text()
    assert f'{config_file}:4: auths.brand_new_auth: unknown key "comunity"' in body
    metrics = await get_text(client, "/metrics")
    assert "scout_config_last_reload_successful 0.0" in metrics
    assert 'scout_collector_success{collector="host"} 1.0' in metrics
    shown = await get_text(client, "/config")
    assert "public_v2:" in shown
    assert "brand_new_auth" not in shown


async def test_reload_of_an_unreadable_file_fails_cleanly(client, config_file):
    config_file.write_bytes(b"auths: {a: \xff\xfe}\n")
    response = await client.post("/-/reload")
    assert response.status == 500
    assert "not a text file" in await response.text()
    assert "scout_config_last_reload_successful 0.0" in await get_text(client, "/metrics")


async def test_good_reload_takes_the_new_config(client, config_file):
    config_file.write_text(BAD)
    await client.post("/-/reload")
    config_file.write_text(GOOD_AGAIN)
    response = await client.post("/-/reload")
    assert response.status == 200
    assert "scout_config_last_reload_successful 1.0" in await get_text(client, "/metrics")
    shown = await get_text(client, "/config")
    assert "core:" in shown
    assert "token-secret" not in shown


async def test_reload_only_by_post(client):
    response = await client.get("/-/reload")
    assert response.status == 405


async def test_disabled_collector_is_not_run(aiohttp_client):
    client = await aiohttp_client(create_app(Settings(enabled_collectors=frozenset())))
    text = await get_text(client, "/metrics")
    assert "scout_host_" not in text
    assert "scout_collector_success{" not in text
    assert "scout_exporter_build_info{" in text


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], {"host"}),
        (["--no-collector.host"], set()),
        (["--collector.disable-defaults"], set()),
        (["--collector.disable-defaults", "--collector.host"], {"host"}),
    ],
)
def test_collector_flags_select_collectors(flags, expected):
    assert enabled_collectors(build_parser().parse_args(flags)) == expected

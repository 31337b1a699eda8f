"""The real exporter scraped by the distribution's real Prometheus, on loopback."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.conftest import http_get, http_post, promql, wait_for

# Starts real daemons: the slow lane (see the peers marker in pyproject).
pytestmark = pytest.mark.peers


GOOD = (
    "auths:\n"
    "  public_v2: {type: snmp, community: integration-community-secret, allowed_targets: [any]}\n"
)
# The secret sits where a mapping belongs, so an error that echoed input would leak it.
BAD = "auths:\n  public_v2: integration-community-secret\n"


def scrape_config(exporter_url: str) -> list[dict[str, object]]:
    return [{"job_name": "scout", "static_configs": [{"targets": [exporter_url.split("//")[1]]}]}]


def test_prometheus_scrapes_host_metrics(exporter_factory, prometheus_factory):
    _, exporter = exporter_factory()
    prometheus = prometheus_factory(scrape_config(exporter))
    wait_for(lambda: promql(prometheus, 'up{job="scout"} == 1'), what="the target to be up")
    cpu = wait_for(
        lambda: promql(prometheus, "scout_host_cpu_seconds_total"), what="host CPU seconds"
    )
    modes = {series["metric"]["mode"] for series in cpu}
    assert {"user", "system", "idle"} <= modes
    assert all(float(series["value"][1]) >= 0 for series in cpu)
    # The scrape timeout is 1s, so the collector had 0.5s, and made it.
    ok = promql(prometheus, 'scout_collector_success{collector="host"}')
    assert [s["value"][1] for s in ok] == ["1"]


def test_bad_reload_keeps_serving(tmp_path: Path, exporter_factory, prometheus_factory):
    config = tmp_path / "scout.yml"
    config.write_text(GOOD)
    service, exporter = exporter_factory(f"--config.file={config}", "--web.enable-lifecycle")
    prometheus = prometheus_factory(scrape_config(exporter))
    wait_for(lambda: promql(prometheus, "scout_config_last_reload_successful == 1"), what="scrape")

    config.write_text(BAD)
    assert service.process is not None
    os.kill(service.process.pid, signal.SIGHUP)
    wait_for(
        lambda: promql(prometheus, "scout_config_last_reload_successful == 0"),
        what="Prometheus to see the failed reload",
    )
    status, body = http_post(f"{exporter}/-/reload")
    assert status == 500
    assert f"{config}:2: auths.public_v2: should be a mapping" in body
    assert "integration-community-secret" not in body

    # Still up, still collecting: the newest CPU sample keeps moving forward.
    before = float(promql(prometheus, "timestamp(scout_host_load1)")[0]["value"][1])
    wait_for(
        lambda: float(promql(prometheus, "timestamp(scout_host_load1)")[0]["value"][1]) > before,
        what="a fresh scrape after the failed reload",
    )
    assert promql(prometheus, 'up{job="scout"} == 1')
    status, shown = http_get(f"{exporter}/config")
    assert status == 200
    assert "community: <secret>" in shown
    assert "integration-community-secret" not in service.log_path.read_text()
    assert "config reload failed" in service.log_path.read_text()

"""docker-compose.yml and Grafana provisioning, validated without a container engine."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def compose_config(**env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GRAFANA_")}
    return subprocess.run(
        [
            "docker-compose",
            "--project-directory",
            str(REPO),
            "-f",
            str(REPO / "docker-compose.yml"),
            "config",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**environ, **env},
    )


def test_compose_file_is_valid_and_listens_on_loopback_only():
    result = compose_config(GRAFANA_ADMIN_PASSWORD="test-only-password")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert set(services) == {"exporter", "sidecar", "prometheus", "alertmanager", "grafana"}
    for name, service in services.items():
        assert service["network_mode"] == "host", name
        assert "ports" not in service, name
        addresses = [a for a in service.get("command", []) if "listen-address=" in a]
        addresses += [str(service.get("environment", {}).get("GF_SERVER_HTTP_ADDR", ""))]
        assert any("127.0.0.1" in a for a in addresses), name


def test_compose_refuses_to_start_grafana_without_an_admin_password():
    result = compose_config()
    assert result.returncode != 0
    assert "set GRAFANA_ADMIN_PASSWORD in .env" in result.stderr


def test_compose_scrape_ports_match_prometheus_config():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    prometheus = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"][0]
        for job in prometheus["scrape_configs"]
        if "static_configs" in job
    }
    # Multi-target jobs reach their targets through the exporter too.
    exporter_listen = next(
        a for a in compose["services"]["exporter"]["command"] if "listen-address" in a
    )
    for job in prometheus["scrape_configs"]:
        for rule in job.get("relabel_configs", []):
            if rule.get("target_label") == "__address__":
                assert exporter_listen.endswith(rule["replacement"]), job["job_name"]
    for service, job in (("exporter", "scout-exporter"), ("sidecar", "scout-sidecar")):
        listen = next(a for a in compose["services"][service]["command"] if "listen-address" in a)
        assert listen.endswith(targets[job]), (service, listen, targets[job])


def test_grafana_time_interval_equals_scrape_interval():
    datasource = yaml.safe_load(
        (REPO / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]
    prometheus = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    assert datasource["jsonData"]["timeInterval"] == prometheus["global"]["scrape_interval"]

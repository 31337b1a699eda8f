"""docker-compose.yml and Grafana provisioning, validated without a container engine."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ai_sidecar.app import create_app
from ai_sidecar.config import load_config
from ai_sidecar.intake.processes import STOP_GRACE as INTAKE_STOP_GRACE
from ai_sidecar.settings import SidecarSettings
from ai_sidecar.worker_process import watched_children
from exporter.clients.winrm import CLEANUP_SECONDS as WINRM_CLEANUP_SECONDS
from exporter.common.durations import parse_duration
from exporter.common.serving import SHUTDOWN_TIMEOUT

# Starts real daemons: the slow lane (see the peers marker in pyproject).
pytestmark = pytest.mark.peers


REPO = Path(__file__).resolve().parent.parent


def compose_config(**env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("GRAFANA_", "SCOUT_"))}
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


SINGLE = {"exporter", "sidecar", "prometheus", "alertmanager", "grafana"}
# The `sharded` profile's services: started only with `--profile sharded`.
SHARDED = {"exporter-shard-1", "prometheus-shard-0", "prometheus-shard-1"}
SHARDED |= {"victoria-metrics", "vmalert"}


def test_compose_file_is_valid_and_listens_on_loopback_only():
    result = compose_config(GRAFANA_ADMIN_PASSWORD="test-only-password")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert {n for n, s in services.items() if "profiles" not in s} == SINGLE
    assert {n for n, s in services.items() if s.get("profiles") == ["sharded"]} == SHARDED
    assert set(services) == SINGLE | SHARDED
    for name, service in services.items():
        assert service["network_mode"] == "host", name
        assert "ports" not in service, name
        addresses = [a for a in service.get("command", []) if "istenAddr" in a or "listen-" in a]
        addresses += [str(service.get("environment", {}).get("GF_SERVER_HTTP_ADDR", ""))]
        assert any("127.0.0.1" in a for a in addresses), name


def test_compose_refuses_to_start_grafana_without_an_admin_password():
    result = compose_config()
    assert result.returncode != 0
    assert "set GRAFANA_ADMIN_PASSWORD in .env" in result.stderr


def _seconds(duration: str) -> float:
    return parse_duration(duration).total_seconds()


def test_docker_waits_for_a_clean_stop_before_killing(tmp_path):
    """Docker SIGKILLs a service stop_grace_period after its SIGTERM (10 s unless
    set); the periods must cover the longest clean stop the code allows."""
    services = _compose_services()
    # The sidecar with --web.processes above 1, as the image would run it: the intake
    # processes stop first (all at once), then this process's requests in flight, then
    # each child it watches (worker, anomaly scorer) in turn.
    sidecar = services["sidecar"]
    config = load_config(REPO / "docs" / "examples" / "scout-sidecar.yml")
    settings = SidecarSettings(
        data_dir=tmp_path, prometheus_url=sidecar["environment"]["SCOUT_PROMETHEUS_URL"]
    )
    app = create_app(settings, config, worker_process=True)
    children = [child.stop_grace for child in watched_children(app)]
    assert len(children) == 2  # the worker and the anomaly scorer
    sidecar_stop = INTAKE_STOP_GRACE + SHUTDOWN_TIMEOUT + sum(children)
    assert _seconds(sidecar.get("stop_grace_period", "10s")) >= sidecar_stop
    # An exporter: a WinRM scrape's thread runs on to its deadline (the longest
    # scrape_timeout Prometheus sends, plain or sharded), after the requests in flight
    # were given SHUTDOWN_TIMEOUT; then its command is signalled to end and its shell
    # is deleted from the host: two exchanges, each connecting and reading within
    # CLEANUP_SECONDS.
    timeouts = []
    for path in [
        REPO / "prometheus" / "prometheus.yml",
        *(REPO / "prometheus").glob("sharded/*.yml"),
    ]:
        prometheus = yaml.safe_load(path.read_text())
        timeouts.append(prometheus["global"].get("scrape_timeout", "10s"))
        timeouts += [job.get("scrape_timeout", "10s") for job in prometheus["scrape_configs"]]
    longest_scrape = max(_seconds(timeout) for timeout in timeouts)
    exporter_stop = max(SHUTDOWN_TIMEOUT, longest_scrape) + 2 * (2 * WINRM_CLEANUP_SECONDS)
    exporters = {
        name for name, service in services.items() if "scout-exporter" in service.get("command", [])
    }
    assert exporters == {"exporter", "exporter-shard-1"}
    for name in exporters:
        assert _seconds(services[name].get("stop_grace_period", "10s")) >= exporter_stop, name


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


def _listen(service: dict[str, Any]) -> str:
    address = next(a for a in service["command"] if "listen-address=" in a or "istenAddr=" in a)
    return str(address.split("=", 1)[1])


def _config_file(service: dict[str, Any]) -> Path:
    flag = next(a for a in service["command"] if a.startswith("--config.file="))
    return REPO / "prometheus" / flag.removeprefix("--config.file=/etc/prometheus/")


def test_sharded_profile_runs_the_generated_deployment():
    """The profile's processes are where prometheus/sharded/ (scripts/shards.py) says."""
    services = _compose_services()
    sharded = {"SCOUT_PROMETHEUS_CONFIG": "sharded/global.yml"}
    sharded_services = _compose_services(**sharded)
    global_config = yaml.safe_load(_config_file(sharded_services["prometheus"]).read_text())
    assert _listen(sharded_services["prometheus"]) == _listen(services["prometheus"])
    jobs = {job["job_name"]: job for job in global_config["scrape_configs"]}
    shards = jobs["scout-shard"]["static_configs"]
    assert len(shards) == 2
    for k, group in enumerate(shards):
        prometheus = services[f"prometheus-shard-{k}"]
        assert group == {"targets": [_listen(prometheus)], "labels": {"shard": str(k)}}
        config = yaml.safe_load(_config_file(prometheus).read_text())
        assert config["global"]["external_labels"] == {"shard": str(k)}
        own = {job["job_name"]: job for job in config["scrape_configs"]}
        exporter = services["exporter" if k == 0 else f"exporter-shard-{k}"]
        assert own["scout-exporter"]["static_configs"] == [{"targets": [_listen(exporter)]}]
        [write] = config["remote_write"]
        assert write["url"] == f"http://{_listen(services['victoria-metrics'])}/api/v1/write"
    assert jobs["victoria-metrics"]["static_configs"][0]["targets"] == [
        _listen(services["victoria-metrics"])
    ]
    assert jobs["vmalert"]["static_configs"][0]["targets"] == [_listen(services["vmalert"])]
    vmalert = services["vmalert"]["command"]
    vm_url = f"http://{_listen(services['victoria-metrics'])}"
    assert f"-datasource.url={vm_url}" in vmalert
    assert f"-notifier.url=http://{_listen(services['alertmanager'])}" in vmalert
    assert "-rule=/etc/prometheus/sharded/rules/*.yml" in vmalert
    # The sidecar and Grafana query the Prometheus by default, the global view when told to.
    datasource = yaml.safe_load(
        (REPO / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]
    assert datasource["url"] == "${SCOUT_PROMQL_URL}"
    default_url = f"http://{_listen(services['prometheus'])}"
    assert services["grafana"]["environment"]["SCOUT_PROMQL_URL"] == default_url
    global_view = _compose_services(SCOUT_PROMQL_URL=vm_url, **sharded)
    assert global_view["sidecar"]["environment"]["SCOUT_PROMETHEUS_URL"] == vm_url
    assert global_view["grafana"]["environment"]["SCOUT_PROMQL_URL"] == vm_url


def test_grafana_time_interval_equals_scrape_interval():
    datasource = yaml.safe_load(
        (REPO / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]
    prometheus = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    assert datasource["jsonData"]["timeInterval"] == prometheus["global"]["scrape_interval"]


def _compose_services(**env: str) -> dict[str, Any]:
    result = compose_config(GRAFANA_ADMIN_PASSWORD="test-only-password", **env)
    assert result.returncode == 0, result.stderr
    services: dict[str, Any] = yaml.safe_load(result.stdout)["services"]
    return services


def test_alertmanager_and_sidecar_share_the_secrets_directory(tmp_path):
    secrets = tmp_path / "secrets"
    result = compose_config(GRAFANA_ADMIN_PASSWORD="x", SCOUT_SECRETS_DIR=str(secrets))
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    for name in ("alertmanager", "sidecar"):
        assert f"{secrets}:/etc/scout/secrets:ro" in services[name]["volumes"], name
    # Without the variable: the documented host directory, outside the repository.
    for name in ("alertmanager", "sidecar"):
        assert "/etc/scout/secrets:/etc/scout/secrets:ro" in _compose_services()[name]["volumes"]
    # Every secret file alertmanager.yml reads is inside that mount.
    config = (REPO / "alertmanager" / "alertmanager.yml").read_text()
    files = re.findall(r"_file: (\S+)", config)
    assert files
    assert all(f.startswith("/etc/scout/secrets/") for f in files), files


def test_sidecar_and_alertmanager_point_at_each_other():
    services = _compose_services()
    sidecar = services["sidecar"]
    environment = sidecar["environment"]
    assert environment["SCOUT_ALERTMANAGER_URLS"] == f"http://{_listen(services['alertmanager'])}"
    assert environment["SCOUT_PROMETHEUS_URL"] == f"http://{_listen(services['prometheus'])}"
    assert "sidecar-data:/var/lib/scout:rw" in sidecar["volumes"]
    assert environment["SCOUT_DATA_DIR"] == "/var/lib/scout"
    config = yaml.safe_load((REPO / "alertmanager" / "alertmanager.yml").read_text())
    [hook] = next(r for r in config["receivers"] if r["name"] == "scout-sidecar")["webhook_configs"]
    assert hook["url"] == f"http://{_listen(sidecar)}/api/v1/alertmanager"


def test_sidecar_reads_the_token_file_alertmanager_sends():
    sidecar = _compose_services()["sidecar"]
    config = yaml.safe_load((REPO / "alertmanager" / "alertmanager.yml").read_text())
    [hook] = next(r for r in config["receivers"] if r["name"] == "scout-sidecar")["webhook_configs"]
    token_file = hook["http_config"]["authorization"]["credentials_file"]
    assert sidecar["environment"]["SCOUT_WEBHOOK_TOKEN_FILE"] == token_file
    assert "SCOUT_WEBHOOK_TOKEN" not in sidecar["environment"]


def test_env_example_documents_every_variable_compose_reads():
    compose = (REPO / "docker-compose.yml").read_text()
    variables = set(re.findall(r"\$\{([A-Z_]+)", compose))
    example = (REPO / ".env.example").read_text()
    documented = set(re.findall(r"^#? ?([A-Z_]+)=", example, re.MULTILINE))
    # Compose's own setting, read from .env without a ${} in the file.
    assert variables == documented - {"COMPOSE_PROFILES"}


def test_one_host_is_reported_by_one_exporter_of_the_sharded_profile():
    """Both exporters of the profile run on one host: shard 1's reporting it too would fire
    every host alert (HostCpuHigh...) twice, once per shard. It serves the devices only."""
    services = _compose_services()
    shard_1 = services["exporter-shard-1"]
    assert "--collector.disable-defaults" in shard_1["command"]
    assert not any(a.startswith("--path.rootfs") for a in shard_1["command"])
    assert "--collector.disable-defaults" not in services["exporter"]["command"]

"""ExporterDown per exporter, end to end: a real Prometheus on the shipped scrape jobs
and rule, scraping devices through two real exporters, one of which dies."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.localstack import (
    Service,
    exporter_service,
    free_port,
    prometheus_service,
    write_prometheus_config,
)
from tests.conftest import wait_for
from tests.peers.shards import api, render_rules

# Starts real daemons: the slow lane (see the peers marker in pyproject).
pytestmark = pytest.mark.peers

REPO = Path(__file__).resolve().parent.parent
# The relabelling README's "Several exporters under one Prometheus" adds after
# the shipped __address__ one: a target group's own exporter.
OWN_EXPORTER = {
    "source_labels": ["__exporter_address"],
    "regex": "(.+)",
    "target_label": "__address__",
}


def two_exporter_config(tmp_path: Path, site_a: str, site_b: str) -> Path:
    """The shipped exporter and ICMP probe jobs, every second, through site A's exporter
    by default and site B's for the target group naming it; the shipped rules with
    ExporterDown's ``for`` shortened."""
    targets = tmp_path / "icmp.yml"
    targets.write_text(
        yaml.safe_dump(
            [
                {"targets": ["127.0.0.1"]},
                {"targets": ["127.0.0.2"], "labels": {"__exporter_address": site_b}},
            ]
        )
    )
    config_path = tmp_path / "prometheus.yml"
    shipped = REPO / "prometheus" / "prometheus.yml"
    write_prometheus_config(
        shipped, config_path, {"scout-exporter": site_a}, f"127.0.0.1:{free_port()}"
    )
    config: dict[str, Any] = yaml.safe_load(config_path.read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    rules = render_rules(REPO / "prometheus" / "rules", tmp_path / "rules", {"ExporterDown": "0s"})
    config["rule_files"] = [str(rules / "scout.rules.yml")]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs["scout-exporter"]["static_configs"] = [{"targets": [site_a, site_b]}]
    probe = jobs["probe_icmp"]
    probe["file_sd_configs"] = [{"files": [str(targets)]}]
    relabel = probe["relabel_configs"]
    [to_exporter] = [i for i, r in enumerate(relabel) if r.get("target_label") == "__address__"]
    relabel.insert(to_exporter + 1, OWN_EXPORTER)
    config["scrape_configs"] = [jobs["scout-exporter"], probe]
    config_path.write_text(yaml.safe_dump(config))
    return config_path


def test_of_two_exporters_under_one_prometheus_the_dead_one_fires_alone(
    tmp_path: Path, start_service: Callable[[Service], Service]
):
    ports = {site: free_port() for site in ("a", "b")}
    address = {site: f"127.0.0.1:{port}" for site, port in ports.items()}
    exporters = {
        site: start_service(exporter_service(tmp_path / site, port)) for site, port in ports.items()
    }
    config = two_exporter_config(tmp_path, address["a"], address["b"])
    port = free_port()
    prometheus = f"http://127.0.0.1:{port}"
    start_service(prometheus_service(config, tmp_path, port))

    def up() -> dict[tuple[str, str], tuple[str, str]]:
        """(job, instance) -> (value, scout_exporter) of every target."""
        return {
            (r["metric"]["job"], r["metric"]["instance"]): (
                r["value"][1],
                r["metric"].get("scout_exporter", ""),
            )
            for r in api(prometheus, "/api/v1/query", query="up")["result"]
        }

    both_up = {
        ("scout-exporter", address["a"]): ("1", address["a"]),
        ("scout-exporter", address["b"]): ("1", address["b"]),
        ("probe_icmp", "127.0.0.1"): ("1", address["a"]),
        ("probe_icmp", "127.0.0.2"): ("1", address["b"]),
    }
    wait_for(lambda: up() == both_up, timeout=30, what=f"every target up: {both_up}")

    def firing() -> list[dict[str, str]]:
        return [
            alert["labels"]
            for alert in api(prometheus, "/api/v1/alerts")["alerts"]
            if alert["labels"]["alertname"] == "ExporterDown" and alert["state"] == "firing"
        ]

    # Waited for, not read once: one scrape that outlived its 1 s timeout on a
    # loaded machine fires ExporterDown until the next evaluation.
    wait_for(lambda: firing() == [], timeout=30, what="no ExporterDown while both answer")
    exporters["a"].stop(grace=5)
    # A's own alert: a slow scrape of B may fire B's for an evaluation beside it.
    [alert] = wait_for(
        lambda: [a for a in firing() if a["instance"] == address["a"]],
        timeout=30,
        what="ExporterDown for site A",
    )
    assert alert["scout_exporter"] == alert["instance"] == address["a"]

    def a_alone() -> bool:
        """Site B's exporter and device answer: the alert is A's alone."""
        return up()[("probe_icmp", "127.0.0.2")] == ("1", address["b"]) and [
            labels["scout_exporter"] for labels in firing()
        ] == [address["a"]]

    wait_for(a_alone, timeout=30, what=f"ExporterDown for {address['a']} alone, B's device up")

"""The sidecar as an operator runs it: ``scout-sidecar`` in a process of its own.

For the tests and benchmarks that need the whole notification path (real
Alertmanager, the sidecar process, Slack and SMTP sinks). The sidecar gets the
webhook token the Alertmanager peer uses (:data:`tests.peers.alertmanager.TEST_TOKEN`)
and a Prometheus URL where nothing listens, so its analyst works without context
(or the PromQL engine a test gives it).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.localstack import Service, free_port
from tests.peers.alertmanager import TEST_TOKEN


@dataclass
class Sidecar:
    service: Service
    url: str

    def _get(self, path: str) -> Any:
        request = urllib.request.Request(
            self.url + path, headers={"Authorization": f"Bearer {TEST_TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def incidents(self) -> list[dict[str, Any]]:
        incidents: list[dict[str, Any]] = self._get("/api/v1/incidents")
        return incidents

    def incident(self, incident_id: str) -> dict[str, Any]:
        """One incident as ``GET /api/v1/incidents/{id}`` shows it (with its LLM exchanges)."""
        found: dict[str, Any] = self._get(f"/api/v1/incidents/{incident_id}")
        return found


def start_sidecar(
    workdir: Path,
    port: int,
    alertmanagers: list[str],
    config_text: str,
    *,
    log_level: str = "debug",
    prometheus_url: str | None = None,
) -> Sidecar:
    """Start ``scout-sidecar`` on 127.0.0.1:``port`` with ``config_text``; wait until ready.

    ``prometheus_url``: the engine it queries (default: a port where nothing listens).
    """
    config = workdir / "sidecar.yml"
    config.write_text(config_text)
    address = f"127.0.0.1:{port}"
    service = Service(
        name="sidecar",
        argv=[
            sys.executable,
            "-m",
            "ai_sidecar.cli",
            f"--web.listen-address={address}",
            f"--config.file={config}",
            f"--log.level={log_level}",
        ],
        ready_url=f"http://{address}/-/ready",
        log_path=workdir / "logs" / "sidecar.log",
        env={
            **os.environ,
            "SCOUT_WEBHOOK_TOKEN": TEST_TOKEN,
            "SCOUT_ALERTMANAGER_URLS": ",".join(alertmanagers),
            # By default nothing listens there: the analyst works without context.
            "SCOUT_PROMETHEUS_URL": prometheus_url or f"http://127.0.0.1:{free_port()}",
            "SCOUT_DATA_DIR": str(workdir / "sidecar-data"),
        },
    )
    service.start()
    service.wait_ready()
    return Sidecar(service, f"http://{address}")

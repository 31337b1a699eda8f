"""History for real engines: hours or weeks of samples without waiting for scrapes.

Prometheus gets OpenMetrics text turned into TSDB blocks by ``promtool``,
loaded when it starts on that storage directory; VictoriaMetrics takes the
same samples through its import API.
"""

from __future__ import annotations

import subprocess
import urllib.request
from pathlib import Path

from scripts.localstack import Service, find_binary, free_port


def backfill(openmetrics: Path, storage: Path) -> None:
    """Write the samples of ``openmetrics`` (ending in ``# EOF``) as blocks under ``storage``."""
    subprocess.run(
        [
            find_binary("promtool"),
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            str(openmetrics),
            str(storage),
        ],
        check=True,
        capture_output=True,
        # A day of one-minute samples for hundreds of series takes minutes.
        timeout=600,
    )


def victoria_metrics_service(directory: Path) -> tuple[Service, str]:
    """VictoriaMetrics on a free port, storing under ``directory``; the service and its URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    service = Service(
        name="victoria-metrics",
        argv=[
            find_binary("victoria-metrics"),
            "-search.latencyOffset=1s",
            f"-httpListenAddr=127.0.0.1:{port}",
            f"-storageDataPath={directory / 'victoria-metrics'}",
        ],
        ready_url=f"{base}/health",
        log_path=directory / "logs" / "victoria-metrics.log",
    )
    return service, base


def import_into_victoria_metrics(base: str, lines: str) -> None:
    """Import ``metric{labels} value unix_ms`` lines and make them searchable at once."""
    request = urllib.request.Request(
        f"{base}/api/v1/import/prometheus", data=lines.encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 204
    # Imported samples become searchable after the next flush; ask for it now.
    with urllib.request.urlopen(f"{base}/internal/force_flush", timeout=30) as response:
        assert response.status == 200

"""History for a real Prometheus: OpenMetrics text turned into TSDB blocks by ``promtool``.

Prometheus loads the blocks when it starts on that storage directory, so a test
gets hours or weeks of samples without waiting for them to be scraped.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from scripts.localstack import find_binary


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
        timeout=60,
    )

"""Golden expositions: compare a scrape with its file line by line, and lint a file with promtool.

``SCOUT_UPDATE_GOLDEN=1`` rewrites the file from the scrape instead (review the diff).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def assert_matches_golden(text: str, golden: Path) -> None:
    if os.environ.get("SCOUT_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text.splitlines() == golden.read_text().splitlines()


def assert_promtool_clean(exposition: bytes) -> None:
    result = subprocess.run(
        [shutil.which("promtool") or "promtool", "check", "metrics"],
        input=exposition,
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()

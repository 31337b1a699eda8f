"""The weekly-report benchmark's store and its SQL peer (benchmarks/console_report.py):
the report's counts and the plain SQL aggregates agree on a small storm week."""

from __future__ import annotations

from pathlib import Path

import pytest

from ai_sidecar.store.sqlite.incidents import stamp
from benchmarks import console_report


async def test_the_report_and_the_sql_peer_agree(tmp_path: Path) -> None:
    path = tmp_path / "scout.db"
    incidents = await console_report.fill(path, 3000, seed=7)
    report = await console_report.week_report(path)
    period = console_report.week_period()
    rows = console_report.peer(path, stamp(period.start), stamp(period.end))
    assert report.incidents + report.merged == incidents
    console_report.check_agreement(report, rows)
    # The check does fail when a number differs.
    tampered = [row if row[0] != "members" else (*row[:2], row[2] + 1, row[3]) for row in rows]
    with pytest.raises(AssertionError):
        console_report.check_agreement(report, tampered)

"""A short run of benchmarks/flow_ingest.py: Scout and nfcapd read its replay in full."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import flow_ingest
from benchmarks.common import missing_programs


@pytest.mark.parametrize("version", flow_ingest.VERSIONS)
def test_the_replay_is_counted_in_full_in_process(version: str) -> None:
    datagrams = flow_ingest.build_datagrams(version, 45)
    measure = flow_ingest.in_process(datagrams, scrape_every=10)
    assert (
        measure.records
        == flow_ingest.records_in(datagrams)
        == 45 * flow_ingest.RECORDS_PER_PACKET[version]
    )
    assert measure.cpu_seconds > 0
    assert measure.rate > 0


@pytest.mark.peers
@pytest.mark.skipif(bool(missing_programs(["nfcapd", "nfdump"])), reason="nfdump is not installed")
def test_scout_and_nfcapd_receive_the_same_records(tmp_path: Path) -> None:
    datagrams = flow_ingest.build_datagrams("ipfix", 60)
    scout, nfcapd = flow_ingest.side_by_side(datagrams, tmp_path)
    assert scout.records == nfcapd.records == 60 * 24
    assert scout.cpu_seconds > 0
    assert nfcapd.cpu_seconds > 0


def test_main_prints_a_line_per_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert flow_ingest.main(["--packets", "20", "--no-peers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[-4:]] == [*flow_ingest.VERSIONS, "v5-scan"]

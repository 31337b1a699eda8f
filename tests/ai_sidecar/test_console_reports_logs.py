"""What making PDF reports writes to serve's log: no third-party chatter (fontTools'
subsetting at info, fpdf quoting the characters its font lacks), and the one warning
the report gives about those characters itself, once, without quoting them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

# Alert text the PDF font (DejaVu Sans) has no glyph for.
CJK_SITE = "東京データセンター"

MAKE_TWO_PDFS = textwrap.dedent(
    f"""
    import asyncio, logging, sys
    from dataclasses import replace
    from pathlib import Path

    from ai_sidecar.config import SidecarConfig
    from ai_sidecar.console.reports.service import ReportMaker
    from ai_sidecar.store import SqliteStore
    from exporter.common.logs import configure_logging
    from tests.ai_sidecar.builders import T0, incident, member

    async def main() -> None:
        store = await SqliteStore.open(Path(sys.argv[1]) / "scout.db")
        found = incident(member("HostDown", "srv-1", site={CJK_SITE!r}))
        await store.save_incidents([replace(found, group={{"site": {CJK_SITE!r}}})])
        maker = ReportMaker(store, SidecarConfig(), None)
        period = maker.period("day", end_date=T0.date())
        for _ in range(2):
            made = await maker.make(period)
            assert (await made.pdf()).startswith(b"%PDF")
        await store.close()
        # The project's own warnings still pass.
        logging.getLogger("ai_sidecar.reports").warning("done")

    configure_logging("info", "json")
    asyncio.run(main())
    """
)


def test_pdf_reports_leave_serves_log_to_the_project(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", MAKE_TWO_PDFS, str(tmp_path)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines()]
    loggers = {record["logger"] for record in records}
    assert not any(name.startswith(("fontTools", "fpdf")) for name in loggers), loggers
    messages = [record["msg"] for record in records if record["logger"] == "ai_sidecar.reports"]
    glyphs = [message for message in messages if "no glyph" in message]
    # Two PDFs, one warning; the characters themselves are alert text and stay out.
    assert len(glyphs) == 1
    assert "done" in messages
    assert CJK_SITE[0] not in done.stderr
    assert "\\u6771" not in done.stderr

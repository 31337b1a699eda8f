"""Reports while Prometheus hangs: a real Prometheus stopped with SIGSTOP accepts
connections (the kernel completes them) and never answers. The console's report
leaves its Prometheus tables out once the health probe has found it unreachable,
and ``scout-sidecar report`` asks it once, briefly, before the report; while a
report does wait on Prometheus, the command says so on stderr."""

from __future__ import annotations

import asyncio
import csv
import fcntl
import io
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from ai_sidecar.app import create_app
from ai_sidecar.config import parse_config
from ai_sidecar.console.health import PROBE
from ai_sidecar.console.reports.command import WaitingOnPrometheus
from ai_sidecar.console.reports.measured import PROMETHEUS_DOWN
from ai_sidecar.console.session import SESSIONS
from ai_sidecar.i18n import translator
from ai_sidecar.promql import Sample, Series
from ai_sidecar.settings import SidecarSettings
from ai_sidecar.store import SqliteStore
from scripts.localstack import Service, free_port, prometheus_service
from tests.ai_sidecar.test_console_reports import VIEWER, FixedUser, as_excel_reads, fill
from tests.ai_sidecar.test_console_reports import run_cli_command as run_cli

pytestmark = pytest.mark.peers

# Short enough that a report which did ask the stopped Prometheus ends soon (and
# says it timed out, which the tests tell apart from "did not ask").
CONFIG = "reports: {query_timeout: 3s}\n"
WEEK = {"period": "week", "end": "2026-11-08"}


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    directory = tmp_path_factory.mktemp("hung-prometheus")
    config = directory / "prometheus.yml"
    config.write_text("global: {scrape_interval: 1m}\n")
    service = prometheus_service(config, directory, free_port())
    service.start()
    try:
        service.wait_ready()
        yield service
    finally:
        service.stop(grace=5)


def url_of(service: Service) -> str:
    return service.ready_url.removesuffix("/-/ready")


@contextmanager
def hung(service: Service) -> Iterator[None]:
    """``service`` stopped: its listening socket still completes connections."""
    assert service.process is not None
    os.kill(service.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(service.process.pid, signal.SIGCONT)


async def data_dir(tmp_path: Path) -> Path:
    store = await SqliteStore.open(tmp_path / "data" / "scout.db")
    await fill(store)
    await store.close()
    return tmp_path / "data"


async def test_the_report_page_does_not_wait_for_a_prometheus_the_probe_found_down(
    aiohttp_client, prometheus: Service, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    settings = SidecarSettings(
        data_dir=await data_dir(tmp_path), webhook_token="t", prometheus_url=url_of(prometheus)
    )
    app = create_app(settings, parse_config(CONFIG, "t"))
    app[SESSIONS] = FixedUser(VIEWER)
    with hung(prometheus):
        client = await aiohttp_client(app)
        # The banner's first probe, at start, waits out its own time box.
        for _ in range(300):
            if app[PROBE].state == "unreachable":
                break
            await asyncio.sleep(0.1)
        assert app[PROBE].state == "unreachable"
        page = await client.get("/console/reports", params=WEEK, headers={"Accept-Language": "fr"})
        assert page.status == 200
        said = translator("fr", "console").gettext(PROMETHEUS_DOWN)
        assert said.startswith("indisponible : Prometheus n'a pas répondu")
        assert (await page.text()).count(said.replace("'", "&#39;")) == 3
        download = await client.get("/console/reports.csv", params=WEEK)
        rows = list(csv.reader(io.StringIO(as_excel_reads(await download.read()))))
        for section in ("bandwidth", "wan", "anomalies"):
            assert [section, PROMETHEUS_DOWN] in rows
        # The rest of the report is all there.
        assert ["summary", "Incidents", "4"] in rows


def run_report(prometheus: Service, tmp_path: Path, data: Path) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "sidecar.yml"
    config.write_text(CONFIG)
    argv = ["--format", "csv", "--output", "-", f"--config.file={config}", *WEEK_ARGS]
    return run_cli("report", *argv, data_dir=data, SCOUT_PROMETHEUS_URL=url_of(prometheus))


WEEK_ARGS = ("--period", "week", "--end", "2026-11-08")


async def test_the_cli_asks_a_hung_prometheus_once_and_leaves_its_tables_out(
    prometheus: Service, tmp_path: Path
) -> None:
    data = await data_dir(tmp_path)
    with hung(prometheus):
        done = await asyncio.to_thread(run_report, prometheus, tmp_path, data)
    assert done.returncode == 0, done.stderr
    assert "Prometheus did not answer within 2 s" in done.stderr
    rows = list(csv.reader(io.StringIO(done.stdout)))
    for section in ("bandwidth", "wan", "anomalies"):
        assert [section, PROMETHEUS_DOWN] in rows
    assert "waiting for Prometheus" not in done.stderr


async def test_the_cli_says_it_waits_for_prometheus_in_lines_when_stderr_is_no_terminal(
    prometheus: Service, tmp_path: Path
) -> None:
    done = await asyncio.to_thread(run_report, prometheus, tmp_path, await data_dir(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "scout-sidecar: waiting for Prometheus (each query up to 3 s)\n" in done.stderr
    # A log file or a pipe: whole lines, no carriage returns or terminal controls.
    assert "\r" not in done.stderr
    assert "\033" not in done.stderr


class Terminal(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.drawn = asyncio.Event()

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        # tqdm's bar, drawn while none of the three queries has answered.
        if "| 0/3 [" in text:
            self.drawn.set()
        return super().write(text)


class Waits:
    """A PromQL client that answers once the terminal shows the progress bar."""

    def __init__(self, out: Terminal) -> None:
        self.out = out

    async def instant(self, query: str, at: datetime, *, time_box: timedelta) -> tuple[Sample, ...]:
        # Bounded only so that a bar never drawn fails the test instead of hanging it.
        await asyncio.wait_for(self.out.drawn.wait(), 60)
        return ()

    async def range(
        self, query: str, start: datetime, end: datetime, step: timedelta, *, time_box: timedelta
    ) -> tuple[Series, ...]:
        raise AssertionError("a report makes no range query")


async def test_on_a_terminal_the_wait_is_a_tqdm_bar_left_when_all_have_answered() -> None:
    out = Terminal()
    client = WaitingOnPrometheus(Waits(out), timedelta(seconds=10), out)
    now = datetime.now(UTC)
    await asyncio.gather(*(client.instant("up", now, time_box=timedelta(1)) for _ in range(3)))
    shown = out.getvalue()
    drawn = shown.split("\r")
    assert drawn[0] == ""
    assert all(d.startswith("waiting for Prometheus (each query up to 10 s): ") for d in drawn[1:])
    # Redrawn in place while waiting; the last drawing, all answered, stays on its line.
    assert "  0%|" in drawn[1]
    assert "| 3/3 [" in drawn[-1]
    assert shown.count("\n") == 1
    assert shown.endswith("\n")
    # The bar is tqdm's: no hand-written terminal controls.
    assert "\033" not in shown


class Gate:
    """Prometheus behind a gate: the probe's ``vector(1)`` goes through, every other
    query waits until the gate opens."""

    def __init__(self, prometheus: str) -> None:
        self.prometheus = prometheus
        self.open = asyncio.Event()
        self.held = 0

    async def query(self, request: web.Request) -> web.Response:
        if request.query.get("query") != "vector(1)":
            self.held += 1
            await self.open.wait()
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.prometheus + request.path_qs) as answer,
        ):
            return web.Response(
                body=await answer.read(), status=answer.status, content_type="application/json"
            )


async def read_until(leader: int, seen: bytearray, wanted: bytes) -> bool:
    """Read the terminal into ``seen`` until ``wanted`` shows (True) or it closes (False)."""
    while wanted not in seen:
        try:
            chunk = await asyncio.to_thread(os.read, leader, 4096)
        except OSError:  # EIO: every process that had it open is gone
            return False
        if not chunk:
            return False
        seen.extend(chunk)
    return True


# 0: a new pty as `script`, `docker run -t` or `kubectl exec -t` open it, which
# reports no size; tqdm drew only a blank line there.
@pytest.mark.parametrize("columns", [120, 0])
async def test_on_a_terminal_the_cli_draws_a_bar_on_stderr_until_prometheus_answers(
    prometheus: Service, tmp_path: Path, columns: int
) -> None:
    data = await data_dir(tmp_path)
    gate = Gate(url_of(prometheus))
    app = web.Application()
    app.router.add_get("/api/v1/query", gate.query)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    config = tmp_path / "sidecar.yml"
    # Long enough that the queries held at the gate are answered, not timed out.
    config.write_text("reports: {query_timeout: 60s}\n")
    environ = {key: value for key, value in os.environ.items() if not key.startswith("SCOUT_")}
    environ.update(SCOUT_DATA_DIR=str(data), SCOUT_PROMETHEUS_URL=f"http://127.0.0.1:{port}")
    leader, follower = pty.openpty()
    if columns:
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    assert os.get_terminal_size(follower).columns == columns
    seen = bytearray()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ai_sidecar.cli",
            "report",
            "--format",
            "csv",
            "--output",
            "-",
            f"--config.file={config}",
            *WEEK_ARGS,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=follower,
        )
        os.close(follower)
        follower = -1
        reading = asyncio.create_task(process.stdout.read())  # type: ignore[union-attr]
        bar = b"waiting for Prometheus (each query up to 60 s):   0%|"
        drawn = await asyncio.wait_for(read_until(leader, seen, bar), 90)
        assert drawn, seen.decode(errors="replace")
        # Every report query is held at the gate: none has answered while the bar is up.
        asked = re.search(rb"\| 0/(\d+) \[", seen)
        assert asked is not None
        queries = int(asked.group(1))
        assert queries > 0
        gate.open.set()
        await asyncio.wait_for(read_until(leader, seen, b"scout-sidecar: wrote "), 90)
        stdout = (await asyncio.wait_for(reading, 90)).decode()
        assert await process.wait() == 0
    finally:
        if follower != -1:
            os.close(follower)
        os.close(leader)
        await runner.cleanup()
    stderr = seen.decode()
    # The bar, all answered, stays above the command's last lines.
    assert gate.held == queries
    answered = f"| {queries}/{queries} ["
    assert answered in stderr
    assert stderr.index(answered) < stderr.index("scout-sidecar: rendering csv")
    # Prometheus did answer: its tables say what it had, not that it was down or slow.
    rows = list(csv.reader(io.StringIO(stdout)))
    assert [
        "bandwidth",
        "not available: no flow metrics (scout_flow_talker_bytes_total) in Prometheus",
    ] in rows
    # Standard output is the CSV alone.
    assert stdout.startswith("section,")
    assert "waiting for Prometheus" not in stdout
    assert "query/s" not in stdout

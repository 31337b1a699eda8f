"""``scout-sidecar report``: a report from the shell, as PDF, HTML or CSV.

``report --period day|week|month --format pdf|html|csv --output FILE|- [--end YYYY-MM-DD]
[--config.file FILE]`` (``-``: standard output; a CSV file starts with a byte-order
mark for spreadsheets, standard output does not) reads the store ``serve`` would
use (``SCOUT_STORE_URL`` with its password, or the SQLite file in ``SCOUT_DATA_DIR``) and Prometheus
from ``SCOUT_PROMETHEUS_URL`` (optional: without it the Prometheus tables say
so). Times are in the config's ``notifications.timezone``. What it is doing
goes to stderr. Before the report it asks Prometheus a trivial query, as the
console's health probe does: one that does not answer within
:data:`~ai_sidecar.console.health.PROBE_TIMEOUT` is left out of the report
(its tables say so) instead of being waited for, query after query. While the
report waits on Prometheus, stderr shows it: on a terminal a tqdm bar (queries
answered of those asked, time waited), as the other commands show progress,
once the wait passes :data:`PROGRESS_DELAY` (80 columns wide on a terminal
that reports no size, see :mod:`ai_sidecar.terminal`); otherwise a line when the wait
starts and one every :data:`PROGRESS_EVERY` seconds (a log file or a pipe
gets no carriage returns).

Exit status: 0 on success, 1 when the store cannot be read, 2 for a usage,
config or settings error, or an output file that cannot be written.
The parser is in :mod:`ai_sidecar.subcommands`: this package starts the console.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any, TextIO

import aiohttp
from tqdm import tqdm

from ai_sidecar.cli import (
    DATA_DIR_ENV,
    PROMETHEUS_ENV,
    PROMETHEUS_TOKEN_ENV,
    PROMETHEUS_TOKEN_FILE_ENV,
    parse_url,
    store_settings_from,
)
from ai_sidecar.config import load_config
from ai_sidecar.console.reports.service import ReportMaker
from ai_sidecar.credentials import read_secret
from ai_sidecar.errors import ConfigError
from ai_sidecar.promql import PromQLClient, Sample, Series
from ai_sidecar.settings import SidecarSettings
from ai_sidecar.store import StoreError
from ai_sidecar.terminal import bar_size
from exporter.common.files import replaced_on_success
from exporter.common.logs import quiet_third_party_loggers

# The --output that means standard output.
STDOUT = "-"
# Seconds between progress lines while waiting on Prometheus, when stderr is no terminal.
PROGRESS_EVERY = 10.0
# Seconds a wait on Prometheus goes unshown on a terminal: most answer well within it,
# and a bar drawn for them would be noise.
PROGRESS_DELAY = 1.0
# Seconds between redraws of the bar, so that the time waited moves while no query answers.
REDRAW_EVERY = 1.0


def _say(text: str) -> None:
    print(f"scout-sidecar: {text}", file=sys.stderr, flush=True)


def run_report(args: argparse.Namespace) -> int:
    # No log handler here: Python's last resort prints fpdf's warnings on stderr.
    quiet_third_party_loggers()

    try:
        config = load_config(args.config_file)
        settings = store_settings_from(os.environ)
        if settings.store_location is None and not settings.database_path.is_file():
            raise ConfigError(
                f"{DATA_DIR_ENV}: no store at {settings.database_path} "
                "(set it to the data directory the sidecar uses)"
            )
        prometheus = os.environ.get(PROMETHEUS_ENV, "").strip()
        settings = SidecarSettings(
            data_dir=settings.data_dir,
            store_url=settings.store_url,
            store_password=settings.store_password,
            prometheus_url=parse_url(prometheus, PROMETHEUS_ENV) if prometheus else None,
            prometheus_bearer_token=read_secret(
                os.environ, PROMETHEUS_TOKEN_ENV, PROMETHEUS_TOKEN_FILE_ENV
            ),
        )
    except ConfigError as exc:
        _say(str(exc))
        return 2
    to_stdout = str(args.output) == STDOUT
    try:
        if to_stdout:
            body = asyncio.run(_make(settings, config, args))
            sys.stdout.buffer.write(body)
            sys.stdout.buffer.flush()
        else:
            # Opened before the report is made: a directory that cannot be written
            # to fails at once; the file appears whole or not at all.
            with replaced_on_success(args.output) as handle:
                body = asyncio.run(_make(settings, config, args))
                handle.write(body)
    except StoreError as exc:
        _say(str(exc))
        return 1
    except BrokenPipeError:
        raise  # standard output closed (`| head`): the CLI ends quietly
    except OSError as exc:
        _say(f"{'stdout' if to_stdout else args.output}: cannot write: {exc.strerror}")
        return 2
    where = "stdout" if to_stdout else args.output
    _say(f"wrote the {args.period} report ({args.format}, {len(body)} bytes) to {where}")
    return 0


class WaitingOnPrometheus:
    """A PromQL client that shows on ``out`` how long the report has been waiting on it:
    a tqdm bar on a terminal, lines otherwise (see the module's docstring)."""

    def __init__(self, client: PromQLClient, time_box: timedelta, out: TextIO) -> None:
        self._client = client
        self._time_box = time_box
        self._out = out
        self._pending = 0
        # Queries asked since the wait began: the bar's total.
        self._asked = 0
        self._bar: tqdm[Any] | None = None
        self._ticker: asyncio.Task[None] | None = None

    async def instant(self, query: str, at: datetime, *, time_box: timedelta) -> tuple[Sample, ...]:
        async with self._waiting():
            return await self._client.instant(query, at, time_box=time_box)

    async def range(
        self, query: str, start: datetime, end: datetime, step: timedelta, *, time_box: timedelta
    ) -> tuple[Series, ...]:
        async with self._waiting():
            return await self._client.range(query, start, end, step, time_box=time_box)

    @contextlib.asynccontextmanager
    async def _waiting(self) -> AsyncIterator[None]:
        if self._pending == 0:
            self._start()
        self._pending += 1
        self._asked += 1
        if self._bar is not None:
            self._bar.total = self._asked
        try:
            yield
        finally:
            self._pending -= 1
            if self._bar is not None:
                self._bar.update(1)
            if self._pending == 0:
                await self._stop()

    def _start(self) -> None:
        self._asked = 0
        box = f"{self._time_box.total_seconds():g} s"
        if self._out.isatty():
            self._bar = tqdm(
                desc=f"waiting for Prometheus (each query up to {box})",
                total=0,
                unit="query",
                file=self._out,
                delay=PROGRESS_DELAY,
                # Fixed, so that update(0) redraws (tqdm's own would skip it after an answer).
                miniters=0,
                **bar_size(self._out),
            )
        else:
            self._write(f"scout-sidecar: waiting for Prometheus (each query up to {box})\n")
        self._ticker = asyncio.create_task(self._tick(self._bar))

    async def _stop(self) -> None:
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        bar, self._bar = self._bar, None
        if bar is not None:
            # Left on its line, as the other commands' bars are; never drawn, it writes nothing.
            bar.close()

    async def _tick(self, bar: tqdm[Any] | None) -> None:
        started = time.monotonic()
        while True:
            await asyncio.sleep(PROGRESS_EVERY if bar is None else REDRAW_EVERY)
            if bar is not None:
                # tqdm draws on updates only; while no query answers, the time waited
                # would stand still.
                bar.update(0)
            else:
                waited = round(time.monotonic() - started)
                self._write(f"scout-sidecar: still waiting for Prometheus ({waited} s)\n")

    def _write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()


async def _make(settings: SidecarSettings, config: Any, args: argparse.Namespace) -> bytes:
    from ai_sidecar.clock import utc_now
    from ai_sidecar.components import open_store, promql_client
    from ai_sidecar.console.health import PROBE_TIMEOUT, why_prometheus_is_down

    _say("reading the store" + (" and Prometheus" if settings.prometheus_url else ""))
    store = await open_store(settings, worker=True)
    try:
        async with aiohttp.ClientSession() as session:
            client: PromQLClient | None = promql_client(settings, session)
            down = False
            if client is not None:
                why = await why_prometheus_is_down(client, utc_now())
                if why is not None:
                    down = True
                    _say(
                        f"Prometheus did not answer within {PROBE_TIMEOUT.total_seconds():g} s"
                        f" ({why}): the report leaves its tables out"
                    )
                client = WaitingOnPrometheus(client, config.reports.query_timeout, sys.stderr)
            maker = ReportMaker(store, config, client, prometheus_is_down=lambda: down)
            made = await maker.make(
                maker.period(args.period, end_date=args.end), language=args.language
            )
    finally:
        await store.close()
    _say(f"rendering {args.format}")
    if args.format == "pdf":
        return await made.pdf()
    if args.format == "html":
        return made.html().encode()
    # A file is for spreadsheets, which need the byte-order mark to read UTF-8; standard
    # output usually feeds a program (csvkit, awk, a script), to which the mark would be
    # part of the first column's name. Redirect into a file and Excel reads it as the
    # machine's code page: --output FILE is the spreadsheet's way.
    return made.csv().encode() if str(args.output) == STDOUT else made.csv_file()

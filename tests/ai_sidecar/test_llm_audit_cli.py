"""``scout-sidecar llm audit``: the kept LLM exchanges exported as JSON lines."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ai_sidecar import cli
from ai_sidecar.enrichment.llm import commands
from ai_sidecar.enrichment.llm.base import LlmExchange
from ai_sidecar.pipes import EXIT_BROKEN_PIPE
from ai_sidecar.store import PostgresStore, SqliteStore, Store
from ai_sidecar.store.exchanges import exchange_from_json
from ai_sidecar.store.postgres import Location
from ai_sidecar.subcommands import parse_since
from tests.ai_sidecar.exchanges import exchange
from tests.peers.postgres import PASSWORD

NOW = datetime.now(UTC).replace(microsecond=0)
RECENT = [
    exchange("inc-1", NOW - timedelta(hours=2)),
    exchange("inc-2", NOW - timedelta(hours=1), outcome="timeout", answer=""),
    exchange("inc-1", NOW - timedelta(minutes=5), prompt="réseau ✓ \x00"),
]
OLD = exchange("inc-1", NOW - timedelta(hours=30))


async def fill(opening: Awaitable[Store], exchanges: list[LlmExchange]) -> None:
    """Open a store (on the loop that fills it), record ``exchanges``, close it."""
    store = await opening
    try:
        for item in exchanges:
            await store.record_llm_exchange(item)
    finally:
        await store.close()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data directory with a store holding RECENT and OLD, named by SCOUT_DATA_DIR."""
    path = tmp_path / "data"
    asyncio.run(fill(SqliteStore.open(path / "scout.db"), [OLD, *RECENT]))
    for variable in (cli.STORE_URL_ENV, cli.STORE_PASSWORD_ENV, cli.STORE_PASSWORD_FILE_ENV):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv(cli.DATA_DIR_ENV, str(path))
    return path


def parse_lines(text: str) -> list[LlmExchange]:
    assert text.endswith("\n")
    return [exchange_from_json(json.loads(line)) for line in text.splitlines()]


def test_exports_the_exchanges_since_a_duration_to_a_file(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "audit.jsonl"

    assert cli.main(["llm", "audit", "--since", "24h", "--output", str(output)]) == 0

    text = output.read_text(encoding="utf-8")
    assert text.isascii()
    assert parse_lines(text) == RECENT
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "exported 3 LLM exchanges" in captured.err


def test_exports_one_incident_since_a_time_to_standard_output(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    since = (NOW - timedelta(days=2)).isoformat().replace("+00:00", "Z")

    assert cli.main(["llm", "audit", "--since", since, "--incident", "inc-1"]) == 0

    assert parse_lines(capsys.readouterr().out) == [OLD, RECENT[0], RECENT[2]]


@pytest.mark.parametrize(
    ("since", "message"),
    [
        ("yesterday", "expected a duration (24h, 7d) or an RFC 3339 time, got 'yesterday'"),
        ("5 minutes", "expected a duration (24h, 7d) or an RFC 3339 time"),
        ("2026-13-45T09:00:00Z", "got '2026-13-45T09:00:00Z'"),
        ("2026-11-02T09:00:00", "the time needs a zone, e.g. 2026-01-31T12:00:00Z"),
    ],
)
def test_a_bad_since_is_a_clear_usage_error(
    data_dir: Path, capsys: pytest.CaptureFixture[str], since: str, message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["llm", "audit", "--since", since])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --since" in err
    assert message in err


def test_since_takes_durations_and_zoned_times() -> None:
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    assert parse_since("90m", now) == now - timedelta(minutes=90)
    assert parse_since("2026-12-01T10:00:00+02:00", now) == datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def test_a_data_directory_without_a_store_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(cli.STORE_URL_ENV, raising=False)
    monkeypatch.setenv(cli.DATA_DIR_ENV, str(tmp_path / "nowhere"))

    assert cli.main(["llm", "audit", "--since", "1h"]) == 2

    assert "no store at" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_long_export_shows_progress_on_a_terminal_only(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(commands, "PROGRESS_ROWS", 2)
    terminal = Terminal()
    monkeypatch.setattr(commands.sys, "stderr", terminal)

    assert cli.main(["llm", "audit", "--since", "24h"]) == 0
    assert "3/3" in terminal.getvalue()
    assert parse_lines(capsys.readouterr().out) == RECENT

    monkeypatch.undo()
    monkeypatch.setattr(commands, "PROGRESS_ROWS", 2)
    monkeypatch.setenv(cli.DATA_DIR_ENV, str(data_dir))
    assert cli.main(["llm", "audit", "--since", "24h"]) == 0
    assert "3/3" not in capsys.readouterr().err


@pytest.mark.peers
def test_exports_from_a_postgresql_store(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = request.getfixturevalue("postgres_server")
    dsn = server.create_database()
    asyncio.run(fill(PostgresStore.open(Location(dsn, PASSWORD)), [OLD, *RECENT]))
    monkeypatch.setenv(cli.STORE_URL_ENV, dsn)
    monkeypatch.setenv(cli.STORE_PASSWORD_ENV, PASSWORD)
    monkeypatch.delenv(cli.STORE_PASSWORD_FILE_ENV, raising=False)

    assert cli.main(["llm", "audit", "--since", "24h", "--incident", "inc-2"]) == 0

    assert parse_lines(capsys.readouterr().out) == [RECENT[1]]


def read_end_closed() -> int:
    """A pipe's write end whose reader is already gone, as after ``| head`` exits."""
    read, write = os.pipe()
    os.close(read)
    return write


@pytest.mark.parametrize(
    "command",
    [
        ["llm", "audit", "--since", "24h"],
        ["anomaly", "score", "IN", "-"],
        ["anomaly", "backtest", "IN"],
    ],
)
def test_a_closed_standard_output_ends_quietly_like_other_unix_tools(
    data_dir: Path, tmp_path: Path, command: list[str]
) -> None:
    series = tmp_path / "in.csv"
    series.write_text(
        "timestamp,value,label\n"
        + "".join(f"{1_700_000_000 + 60 * i},{i % 7},0\n" for i in range(50)),
        encoding="utf-8",
    )
    write = read_end_closed()
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "ai_sidecar.cli",
                *(str(series) if a == "IN" else a for a in command),
            ],
            stdout=write,
            stderr=subprocess.PIPE,
            check=False,
            env=os.environ,
        )
    finally:
        os.close(write)
    assert done.stderr.decode() == ""
    assert done.returncode == EXIT_BROKEN_PIPE == 141

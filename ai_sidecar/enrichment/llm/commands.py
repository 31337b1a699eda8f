"""``scout-sidecar llm audit``: the LLM audit from the shell, as JSON lines.

``llm audit --since 24h|RFC3339 [--incident ID] [--output FILE]`` writes every
kept exchange made at or after ``--since`` (a duration back from now, or a
time with a zone), oldest first, one JSON object per line in the shape the
incident API shows (:func:`ai_sidecar.store.exchanges.exchange_to_json`), to
standard output or ``FILE``. It reads the store ``serve`` would use:
``SCOUT_STORE_URL`` (with ``SCOUT_STORE_PASSWORD`` or its ``_FILE``) or the
SQLite file in ``SCOUT_DATA_DIR``. A progress bar goes to stderr for a large
export, only when stderr is a terminal.

Exit status: 0 on success, 1 when the store cannot be read, 2 for a usage or
settings error (a bad ``--since``, no store in the data directory).
The parser is in :mod:`ai_sidecar.subcommands`: this module reads the store.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from ai_sidecar.cli import DATA_DIR_ENV, store_settings_from
from ai_sidecar.enrichment.llm.base import LlmExchange
from ai_sidecar.errors import ConfigError
from ai_sidecar.settings import SidecarSettings
from ai_sidecar.store import StoreError
from ai_sidecar.store.exchanges import exchange_to_json
from ai_sidecar.terminal import bar_size

# Exports this long show a progress bar (on a terminal).
PROGRESS_ROWS = 1000


def run_audit(args: argparse.Namespace) -> int:
    try:
        settings = store_settings_from(os.environ)
        if settings.store_location is None and not settings.database_path.is_file():
            raise ConfigError(
                f"{DATA_DIR_ENV}: no store at {settings.database_path} "
                "(set it to the data directory the sidecar uses)"
            )
    except ConfigError as exc:
        print(f"scout-sidecar: {exc}", file=sys.stderr)
        return 2
    try:
        exchanges = asyncio.run(_read(settings, args.incident, args.since))
    except StoreError as exc:
        print(f"scout-sidecar: {exc}", file=sys.stderr)
        return 1
    try:
        with _output(args.output) as out:
            write_lines(exchanges, out, progress=_progress(len(exchanges)))
    except BrokenPipeError:
        raise  # standard output closed (`| head`): the CLI ends quietly
    except OSError as exc:
        print(f"scout-sidecar: {args.output}: cannot write: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"exported {len(exchanges)} LLM exchanges", file=sys.stderr)
    return 0


async def _read(
    settings: SidecarSettings, incident_id: str | None, since: datetime
) -> list[LlmExchange]:
    from ai_sidecar.components import open_store  # imports the whole pipeline: only when run

    store = await open_store(settings, worker=True)
    try:
        return await store.llm_exchanges(incident_id=incident_id, since=since)
    finally:
        await store.close()


def write_lines(
    exchanges: list[LlmExchange],
    out: TextIO,
    *,
    progress: Callable[[list[LlmExchange]], Any] = iter,
) -> None:
    """One JSON object per line (ASCII: a prompt may hold any character)."""
    for exchange in progress(exchanges):
        out.write(json.dumps(exchange_to_json(exchange), ensure_ascii=True) + "\n")


def _progress(rows: int) -> Callable[[list[LlmExchange]], Any]:
    """A tqdm bar on stderr for a long export on a terminal; else plain iteration."""
    if rows < PROGRESS_ROWS or not sys.stderr.isatty():
        return iter
    size = bar_size(sys.stderr)
    return lambda items: tqdm(items, total=rows, unit="exchange", file=sys.stderr, **size)


@contextlib.contextmanager
def _output(path: Path | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        # Flushed here: a reader gone (`| head`) fails the export before it is reported done.
        sys.stdout.flush()
        return
    with path.open("w", encoding="utf-8") as handle:
        yield handle

"""``scout-sidecar anomaly train | models | rollback``: the model registry from the shell.

- ``train [--signal NAME]...`` fits the configured signals (all by default) on
  their history, in this process, and stores a new version of each. It reads
  ``SCOUT_PROMETHEUS_URL`` (and its token variables) and ``SCOUT_DATA_DIR``
  like ``serve``. A progress bar per signal (history windows fetched) goes to
  stderr, only when stderr is a terminal, so logs and pipes get plain lines.
- ``models [--signal NAME]`` lists the kept versions: signal, version (``*``
  marks the current one), when it was trained, the history range, series and
  quality statistics.
- ``rollback SIGNAL VERSION`` makes an older version current; a running
  sidecar switches to it at its next scoring cycle and keeps it until the
  next scheduled refit after the rollback.

Exit status: 0 on success, 1 when a signal failed to train, 2 for a usage or
config error (unknown signal or version, no Prometheus URL).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from tqdm import tqdm

from ai_sidecar.errors import ConfigError
from ai_sidecar.terminal import bar_size

# The registry (numpy), the trainer (the whole pipeline) and the config are
# imported when a command runs: every other command builds these parsers too.
if TYPE_CHECKING:
    from ai_sidecar.anomaly.history import Progress
    from ai_sidecar.anomaly.registry import ModelMeta
    from ai_sidecar.config import SidecarConfig

# Quality statistics shown by `anomaly models`, in this order, when present.
SHOWN_QUALITY = (
    "holdout_flags_per_series_day",
    "holdout_p99_score",
    "residual_spread",
    "series_dropped",
)


def add_model_commands(commands: Any) -> None:
    """Add ``train``, ``models`` and ``rollback`` to the ``anomaly`` group's subparsers."""
    train_command = commands.add_parser(
        "train",
        help="fit the configured signals on their PromQL history now",
        description="Fit signals on their history and store a new model version of each.",
    )
    train_command.add_argument(
        "--signal",
        dest="signals",
        action="append",
        metavar="NAME",
        help="train only this signal (repeatable; default: every configured signal)",
    )
    _add_config_file(train_command)
    train_command.set_defaults(run=run_train)

    models_command = commands.add_parser(
        "models",
        help="list the trained model versions",
        description="List every kept model version; * marks the one in use.",
    )
    models_command.add_argument("--signal", metavar="NAME", help="only this signal")
    _add_config_file(models_command)
    models_command.set_defaults(run=run_models)

    rollback_command = commands.add_parser(
        "rollback",
        help="make an older model version current",
        description="Make VERSION the model in use for SIGNAL.",
    )
    rollback_command.add_argument("signal", metavar="SIGNAL")
    rollback_command.add_argument("version", type=int, metavar="VERSION")
    _add_config_file(rollback_command)
    rollback_command.set_defaults(run=run_rollback)


def _add_config_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config.file",
        dest="config_file",
        type=Path,
        default=None,
        metavar="FILE",
        help="the sidecar's YAML config (its anomaly section)",
    )


def _config(args: argparse.Namespace) -> SidecarConfig:
    from ai_sidecar.config import load_config

    return load_config(args.config_file)


def _data_dir() -> Path:
    from ai_sidecar.cli import DATA_DIR_ENV  # the CLI imports this module: import late

    return Path(os.environ.get(DATA_DIR_ENV, "").strip() or "data")


def _fail(message: str) -> int:
    print(f"scout-sidecar: {message}", file=sys.stderr)
    return 2


def run_train(args: argparse.Namespace) -> int:
    from ai_sidecar.anomaly.trainer import TrainingJob, train
    from ai_sidecar.cli import (
        PROMETHEUS_ENV,
        PROMETHEUS_TOKEN_ENV,
        PROMETHEUS_TOKEN_FILE_ENV,
        parse_url,
    )
    from ai_sidecar.credentials import read_secret

    try:
        config = _config(args)
        url = os.environ.get(PROMETHEUS_ENV, "").strip()
        if not url:
            raise ConfigError(f"{PROMETHEUS_ENV} is not set: training reads history from it")
        url = parse_url(url, PROMETHEUS_ENV)
        token = read_secret(os.environ, PROMETHEUS_TOKEN_ENV, PROMETHEUS_TOKEN_FILE_ENV)
        names = tuple(args.signals or [s.name for s in config.anomaly.signals])
        for name in names:
            config.anomaly.signal(name)
    except ConfigError as exc:
        return _fail(str(exc))
    except KeyError as exc:
        return _fail(str(exc.args[0]))
    data_dir = _data_dir()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _fail(f"cannot create the data directory {data_dir}: {exc.strerror or exc}")
    job = TrainingJob(url, data_dir, config.anomaly, names, time.time(), token)
    try:
        with _progress_bars(sys.stderr) as progress:
            result = asyncio.run(train(job, progress))
    except KeyboardInterrupt:
        # Each signal's model is saved whole or not at all, so what finished is kept.
        print(
            "scout-sidecar: interrupted; signals trained before the interruption keep "
            "their new version (see `scout-sidecar anomaly models`)",
            file=sys.stderr,
        )
        return 130
    for name in names:
        if name in result.failed:
            print(f"{name}: failed: {result.failed[name]}", file=sys.stderr)
        elif (meta := result.trained.get(name)) is None:
            print(f"{name}: no series to train on")
        else:
            print(
                f"{name}: version {meta.version}, {meta.series} series, "
                f"{_range(meta)}, {meta.training_seconds:.1f}s"
            )
    return 1 if result.failed else 0


@contextmanager
def _progress_bars(stream: TextIO) -> Iterator[Any]:
    """A factory of per-signal progress callbacks: tqdm bars on a terminal, else nothing."""
    bars: list[tqdm[Any]] = []
    terminal = stream.isatty()

    def for_signal(name: str) -> Progress | None:
        if not terminal:
            return None
        bar = tqdm(desc=name, unit="request", file=stream, leave=True, **bar_size(stream))
        bars.append(bar)

        def advance(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        return advance

    try:
        yield for_signal
    finally:
        for bar in bars:
            bar.close()


def run_models(args: argparse.Namespace) -> int:
    from ai_sidecar.anomaly.registry import ModelRegistry, RegistryError

    try:
        config = _config(args)
    except ConfigError as exc:
        return _fail(str(exc))
    registry = ModelRegistry(_data_dir(), config.anomaly.keep_versions)
    rows = [("SIGNAL", "VERSION", "TRAINED", "RANGE", "SERIES", "QUALITY")]
    try:
        for name in [args.signal] if args.signal else registry.signals():
            current = registry.current_version(name)
            for meta in registry.versions(name):
                mark = "*" if meta.version == current else ""
                rows.append(
                    (
                        name,
                        f"{meta.version}{mark}",
                        _time(meta.trained_at),
                        _range(meta),
                        str(meta.series),
                        _quality(meta),
                    )
                )
    except RegistryError as exc:
        return _fail(str(exc))
    if len(rows) == 1:
        print("no trained models" + (f" for {args.signal}" if args.signal else ""))
        return 0
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    from ai_sidecar.anomaly.registry import ModelRegistry, RegistryError

    try:
        config = _config(args)
    except ConfigError as exc:
        return _fail(str(exc))
    registry = ModelRegistry(_data_dir(), config.anomaly.keep_versions)
    try:
        meta = registry.rollback(args.signal, args.version)
    except RegistryError as exc:
        return _fail(str(exc))
    print(f"{meta.signal}: version {meta.version} (trained {_time(meta.trained_at)}) is current")
    return 0


def _time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%MZ")


def _range(meta: ModelMeta) -> str:
    return f"{_time(meta.range_start)}..{_time(meta.range_end)}"


def _quality(meta: ModelMeta) -> str:
    shown = [f"{name}={meta.quality[name]:.3g}" for name in SHOWN_QUALITY if name in meta.quality]
    return " ".join(shown) or "-"

"""``scout-sidecar anomaly ...``: the detector offline, on CSV files.

``score INPUT.csv OUTPUT.csv`` reads ``timestamp,value`` and writes
``timestamp,value,anomaly_score``:

- UTF-8 text, comma-separated (``;`` is not a separator: ``1,5`` must be
  written ``1.5``), a header row naming ``timestamp`` and ``value`` once each
  (any order, any case); other columns are ignored; every row has as many
  fields as the header (a decimal comma would otherwise shift the columns);
- a value is a plain number (``1.5``, ``-2e3``; no ``1_000`` digit separators);
- a timestamp is Unix seconds (``1700000000``, ``1700000000.5``; numbers
  from 1e11 up are taken as milliseconds) or ISO 8601
  (``2026-12-03T10:00:00Z``, ``2026-12-03 10:00:00``; no zone means UTC);
- an empty value, ``NaN`` or an infinity is a gap: it scores 0, is written
  back as read, and the detector neither scores nor learns it;
- rows are scored in file order, one by one through the live path's
  :class:`~ai_sidecar.anomaly.detector.Detector`, so the score of row i
  depends only on rows 0..i. Timestamps and values are written back exactly
  as read; any spacing works (gaps, duplicates, 5-minute data);
- ``--step`` defaults to the median spacing of the rows the detector spends
  warming up (they score 0 whatever the step, which keeps the no-lookahead
  promise), ``--rest-period`` to 2.5 hours within 30 to 60 steps;
- ``-`` reads standard input or writes standard output.

``backtest LABELLED.csv [...]`` reads ``timestamp,value,label`` (label 0/1;
a run of 1s is one event), scores each file the same way and prints
precision, recall, F1, detection delay, false alarms per series-day and the
NAB-style score (``ai_sidecar.anomaly.backtest``); ``--json`` for machines.

Bad input is one line on stderr naming the file and line, and exit code 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

from ai_sidecar.anomaly.params import DetectorParams
from ai_sidecar.pipes import deferred, run_command
from exporter.common.durations import parse_duration


def add_anomaly_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """Add the ``anomaly`` group to the root parser's commands; return its own subparsers."""
    group = subparsers.add_parser(
        "anomaly",
        help="anomaly detection: score or backtest CSV files",
        description="Anomaly detection commands.",
    )
    commands = group.add_subparsers(dest="anomaly_command", metavar="COMMAND", required=True)
    score = commands.add_parser(
        "score",
        help="score a timestamp,value CSV (no lookahead)",
        description=(
            "Read timestamp,value rows and write timestamp,value,anomaly_score with scores "
            "in [0, 1]; the score of row i depends only on rows 0..i. '-' is stdin/stdout."
        ),
    )
    score.add_argument("input", metavar="INPUT.csv")
    score.add_argument("output", metavar="OUTPUT.csv")
    add_detector_arguments(score)
    score.set_defaults(run=deferred("ai_sidecar.anomaly.offline", "run_score"))
    backtest = commands.add_parser(
        "backtest",
        help="score labelled CSVs and report precision, recall, F1, delay, NAB score",
        description=(
            "Each file has timestamp,value,label columns (label 0 or 1; a run of 1s is one "
            "event). Reports event-level precision, recall, F1, detection delay, false "
            "alarms per series-day, and the NAB-style standard-profile score."
        ),
    )
    backtest.add_argument("inputs", metavar="LABELLED.csv", nargs="+")
    backtest.add_argument(
        "--threshold",
        type=_score_level,
        default=None,
        help="alarm at scores at or above this (default: the detector's alarm threshold)",
    )
    backtest.add_argument("--json", action="store_true", help="print JSON")
    add_detector_arguments(backtest)
    backtest.set_defaults(run=deferred("ai_sidecar.anomaly.offline", "run_backtest"))
    return commands


def add_detector_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = DetectorParams()
    parser.add_argument(
        "--step",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="spacing of the series (default: measured over the warm-up rows)",
    )
    parser.add_argument(
        "--seasonality", choices=["auto", "daily", "weekly", "none"], default="auto"
    )
    parser.add_argument("--transform", choices=["none", "log1p"], default="none")
    parser.add_argument(
        "--min-deviation",
        type=_non_negative,
        default=0.0,
        metavar="X",
        help="deviations smaller than this (in the value's units) never flag",
    )
    parser.add_argument(
        "--min-level",
        type=_non_negative,
        default=0.0,
        metavar="X",
        help="values below this, where the expected value is too, never flag",
    )
    parser.add_argument(
        "--rest-period",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="quiet time after an alarm (default 2.5 hours, kept within 30 to 60 steps)",
    )
    parser.add_argument(
        "--warmup-points",
        type=int,
        default=defaults.warmup_points,
        metavar="N",
        help=f"points before scoring starts (default {defaults.warmup_points})",
    )
    parser.add_argument(
        "--alarm-threshold",
        type=_score_level,
        default=defaults.alarm_threshold,
        metavar="S",
        help=f"score of an alarm (default {defaults.alarm_threshold})",
    )


def _duration(text: str) -> float:
    """Seconds, as a number (``300``) or a Prometheus duration (``5m``)."""
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parse_duration(text).total_seconds()
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    if not seconds > 0 or not math.isfinite(seconds):
        raise argparse.ArgumentTypeError(f"expected a duration above 0, got {text!r}")
    return seconds


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _score_level(text: str) -> float:
    """A level on the score's scale: above 0, at most 1 (a score never passes 1)."""
    value = _number(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a score above 0 and at most 1, got {text!r}")
    return value


def _non_negative(text: str) -> float:
    value = _number(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of 0 or more, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ai_sidecar.anomaly.cli``: the group on its own (tests, scripts)."""
    parser = argparse.ArgumentParser(prog="scout-sidecar")
    add_anomaly_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return run_command(args.run, args)


if __name__ == "__main__":
    sys.exit(main())

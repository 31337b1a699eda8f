"""Scoring CSV files offline: what ``scout-sidecar anomaly score`` and ``backtest`` run.

The file formats, flags and exit codes are described in
:mod:`ai_sidecar.anomaly.cli`, which defines the commands without importing
numpy or the detector; this module does the work once one of them runs.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

from ai_sidecar.anomaly.backtest import Truth, event_metrics, nab_score
from ai_sidecar.anomaly.detector import Detector, DetectorParams, default_rest_period
from exporter.common.files import replaced_on_success

EXIT_BAD_INPUT = 2
MILLISECONDS_FROM = 1e11
# Files longer than this show a progress bar (on a terminal only).
PROGRESS_ROWS = 100_000


class InputError(Exception):
    """Input the command cannot use; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class Series:
    """One CSV file as read: the original text of each row, and parsed arrays."""

    timestamp_text: list[str]
    value_text: list[str]
    timestamps: NDArray[np.float64]
    values: NDArray[np.float64]
    labels: NDArray[np.bool_] | None


# -- reading ---------------------------------------------------------------------


def parse_timestamp(text: str) -> float:
    """Unix seconds or ISO 8601 (naive means UTC) -> Unix seconds; ValueError otherwise."""
    stripped = text.strip()
    try:
        seconds = _number_text(stripped)
    except ValueError:
        if "_" in stripped:
            raise
        parsed = datetime.fromisoformat(stripped)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    if not math.isfinite(seconds):
        raise ValueError(text)
    # Seconds beyond 1e11 would be the year 5138: these are milliseconds.
    return seconds / 1000.0 if abs(seconds) >= MILLISECONDS_FROM else seconds


def _parse_value(text: str) -> float:
    stripped = text.strip()
    if not stripped:
        return math.nan
    value = _number_text(stripped)
    return value if math.isfinite(value) else math.nan


def _number_text(text: str) -> float:
    # float() takes Python literals such as "1_000"; a CSV number has no
    # digit separators, and reading one as 1000 would hide a mangled export.
    if "_" in text:
        raise ValueError(text)
    return float(text)


UTF16_MARKS = (b"\xff\xfe", b"\xfe\xff")


def _decoded(name: str, data: bytes) -> str:
    """UTF-8 text (a byte-order mark dropped); an InputError says where it is not."""
    if data.startswith(UTF16_MARKS):
        raise InputError(f"{name}: UTF-16 text (byte-order mark); save it as UTF-8")
    try:
        # utf-8-sig: a byte-order mark (spreadsheet exports) goes before the csv
        # module sees it, or a quoted first title would read as '\ufeff"timestamp"'.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(
            f"{name}: line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x} "
            f"at offset {exc.start})"
        ) from None


def _read_text(name: str) -> str:
    """The whole input as text: the arrays hold every row anyway."""
    if name == "-":
        buffer = getattr(sys.stdin, "buffer", None)
        if buffer is None:  # a text stream with no bytes under it (tests, embedding)
            return sys.stdin.read().removeprefix("\ufeff")
        return _decoded(name, buffer.read())
    try:
        data = Path(name).read_bytes()
    except OSError as exc:
        raise InputError(f"{name}: cannot read: {exc.strerror}") from None
    return _decoded(name, data)


def _header_columns(name: str, header: list[str], needed: list[str]) -> list[int]:
    """The index of each needed column; a missing or repeated title is an InputError."""
    columns: dict[str, int] = {}
    for index, title in enumerate(header):
        key = title.strip().lower()
        if key in columns and key:
            raise InputError(f"{name}: line 1: the header names the column {key!r} twice")
        columns[key] = index
    missing = [column for column in needed if column not in columns]
    if missing:
        hint = " with ',' between columns" if len(header) == 1 and ";" in header[0] else ""
        raise InputError(
            f"{name}: line 1: the header has no {' or '.join(missing)} column "
            f"(expected {','.join(needed)}{hint})"
        )
    return [columns[column] for column in needed]


def read_series(name: str, *, labelled: bool = False) -> Series:
    """Read one CSV; every problem is an :class:`InputError` naming the file and line."""
    needed = ["timestamp", "value"] + (["label"] if labelled else [])
    reader = csv.reader(io.StringIO(_read_text(name), newline=""))
    # reader.line_num is the line a row ends on; a quoted value may span
    # lines, so a row's own line is one after where the previous row ended.
    line = 1
    try:
        header = next(reader, None)
        if header is None:
            raise InputError(f"{name}: empty file, expected a header row {','.join(needed)}")
        at = _header_columns(name, header, needed)
        timestamp_text: list[str] = []
        value_text: list[str] = []
        timestamps: list[float] = []
        values: list[float] = []
        labels: list[bool] = []
        while True:
            line = reader.line_num + 1
            row = next(reader, None)
            if row is None:
                break
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(header):
                raise InputError(
                    f"{name}: line {line}: {len(row)} field{'s' * (len(row) != 1)}, "
                    f"the header has {len(header)}"
                    + (" (a decimal comma? write 1.5, not 1,5)" if len(row) > len(header) else "")
                )
            try:
                timestamps.append(parse_timestamp(row[at[0]]))
            except ValueError:
                raise InputError(
                    f"{name}: line {line}: cannot parse timestamp {row[at[0]]!r} "
                    "(Unix seconds or ISO 8601)"
                ) from None
            try:
                values.append(_parse_value(row[at[1]]))
            except ValueError:
                raise InputError(
                    f"{name}: line {line}: cannot parse value {row[at[1]]!r}"
                ) from None
            if labelled:
                label = row[at[2]].strip()
                if label not in ("0", "1"):
                    raise InputError(f"{name}: line {line}: label must be 0 or 1, not {label!r}")
                labels.append(label == "1")
            timestamp_text.append(row[at[0]])
            value_text.append(row[at[1]])
    except csv.Error as exc:
        raise InputError(f"{name}: line {line}: {exc}") from None
    return Series(
        timestamp_text,
        value_text,
        np.array(timestamps, dtype=np.float64),
        np.array(values, dtype=np.float64),
        np.array(labels, dtype=np.bool_) if labelled else None,
    )


# -- scoring ---------------------------------------------------------------------


def params_for(args: argparse.Namespace, timestamps: NDArray[np.float64]) -> DetectorParams:
    """The detector's parameters: flags, with the step measured over the warm-up rows."""
    step = args.step if args.step is not None else infer_step(timestamps[: args.warmup_points])
    rest = args.rest_period if args.rest_period is not None else default_rest_period(step)
    try:
        return DetectorParams(
            step=step,
            seasonality=args.seasonality,
            transform=args.transform,
            min_deviation=args.min_deviation,
            min_level=args.min_level,
            rest_period=rest,
            warmup_points=args.warmup_points,
            alarm_threshold=args.alarm_threshold,
        )
    except ValueError as exc:
        raise InputError(str(exc)) from None


def infer_step(timestamps: NDArray[np.float64]) -> float:
    """The median positive spacing; 60 s when there is none to measure."""
    gaps = np.diff(timestamps)
    gaps = gaps[gaps > 0]
    return float(np.median(gaps)) if gaps.size else 60.0


def score_rows(
    series: Series, params: DetectorParams, *, progress: bool = False
) -> NDArray[np.float64]:
    """Every row through one :class:`Detector`, in file order; gaps score 0."""
    detector = Detector(params, 1)
    n = series.values.shape[0]
    scores = np.zeros(n)
    column = np.empty(1)
    tick = max(n // 100, 1)
    for index in range(n):
        column[0] = series.values[index]
        score = detector.update(float(series.timestamps[index]), column).score[0]
        scores[index] = 0.0 if math.isnan(score) else score
        if progress and index % tick == 0:
            print(
                f"\rscoring: {100 * index // n:3d}% ({index:,}/{n:,} rows)", end="", file=sys.stderr
            )
    if progress:
        print(f"\rscoring: 100% ({n:,}/{n:,} rows)", file=sys.stderr)
    return scores


def _show_progress(rows: int) -> bool:
    return rows >= PROGRESS_ROWS and sys.stderr.isatty()


@contextlib.contextmanager
def _open_output(name: str) -> Iterator[IO[str]]:
    """Standard output, or a temporary file renamed over ``name`` once complete."""
    if name == "-":
        yield sys.stdout
        return
    try:
        with replaced_on_success(Path(name)) as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
            yield text
            text.flush()
            text.detach()
    except OSError as exc:
        raise InputError(f"{name}: cannot write: {exc.strerror}") from None


def run_score(args: argparse.Namespace) -> int:
    try:
        series = read_series(args.input)
        params = params_for(args, series.timestamps)
        scores = score_rows(series, params, progress=_show_progress(series.values.shape[0]))
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["timestamp", "value", "anomaly_score"])
        for stamp, value, score in zip(
            series.timestamp_text, series.value_text, scores, strict=True
        ):
            writer.writerow([stamp, value, f"{score:.6f}"])
        with _open_output(args.output) as out:
            out.write(buffer.getvalue())
    except InputError as exc:
        print(f"scout-sidecar anomaly score: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def run_backtest(args: argparse.Namespace) -> int:
    truths: list[Truth] = []
    all_scores: list[NDArray[np.float64]] = []
    threshold = args.threshold if args.threshold is not None else args.alarm_threshold
    try:
        for name in args.inputs:
            series = read_series(name, labelled=True)
            params = params_for(args, series.timestamps)
            assert series.labels is not None
            all_scores.append(score_rows(series, params))
            truths.append(Truth.from_labels(series.labels, params.step))
    except InputError as exc:
        print(f"scout-sidecar anomaly backtest: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    metrics = event_metrics(truths, all_scores, threshold)
    report: dict[str, Any] = {
        "files": len(truths),
        "threshold": threshold,
        "events": metrics.events,
        "detected": metrics.detected,
        "false_alarms": metrics.false_alarms,
        "precision": round(metrics.precision, 4),
        "recall": round(metrics.recall, 4),
        "f1": round(metrics.f1, 4),
        "median_delay_points": None if math.isnan(metrics.median_delay) else metrics.median_delay,
        "false_alarms_per_series_day": round(metrics.false_alarms_per_day, 4),
        "nab_standard": _rounded(nab_score(truths, all_scores, threshold)),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        width = max(len(key) for key in report)
        for key, value in report.items():
            print(f"{key:<{width}}  {'-' if value is None else value}")
    return 0


def _rounded(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 2)

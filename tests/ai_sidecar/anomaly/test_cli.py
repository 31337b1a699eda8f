"""``scout-sidecar anomaly score`` and ``backtest``: the CSV contract in DESIGN.md."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from ai_sidecar.cli import main

START = 1_793_577_600


def write_series(path: Path, n: int = 400, *, spike_at: int = 300, fmt: str = "unix") -> Path:
    rng = np.random.default_rng(11)
    values = 20 + rng.normal(0, 1, n)
    values[spike_at] += 25
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "value", "host"])
        for i, value in enumerate(values):
            stamp = START + 300 * i
            text = {
                "unix": str(stamp),
                "iso": datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "space": datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S"),
            }[fmt]
            writer.writerow([text, "" if i == 100 else f"{value:.4f}", "sw-1"])
    return path


def read_output(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("fmt", ["unix", "iso", "space"])
def test_score_writes_every_row_with_a_score_in_0_1(tmp_path: Path, fmt: str) -> None:
    source = write_series(tmp_path / "in.csv", fmt=fmt)
    target = tmp_path / "out.csv"
    assert main(["anomaly", "score", str(source), str(target), "--warmup-points", "50"]) == 0
    rows = read_output(target)
    inputs = read_output(source)
    assert list(rows[0]) == ["timestamp", "value", "anomaly_score"]
    assert len(rows) == len(inputs)
    assert [r["timestamp"] for r in rows] == [r["timestamp"] for r in inputs]
    assert [r["value"] for r in rows] == [r["value"] for r in inputs]
    scores = np.array([float(r["anomaly_score"]) for r in rows])
    assert ((scores >= 0) & (scores <= 1)).all()
    assert rows[100]["value"] == ""
    assert scores[100] == 0
    assert int(np.argmax(scores)) == 300
    assert np.delete(scores, 300).max() < 0.5


def test_score_of_a_row_ignores_the_rows_after_it(tmp_path: Path) -> None:
    full = write_series(tmp_path / "full.csv")
    lines = full.read_text().splitlines()
    cut = tmp_path / "cut.csv"
    cut.write_text("\n".join(lines[:311]) + "\n")  # header + rows 0..309
    main(["anomaly", "score", str(full), str(tmp_path / "a.csv")])
    main(["anomaly", "score", str(cut), str(tmp_path / "b.csv")])
    a = [r["anomaly_score"] for r in read_output(tmp_path / "a.csv")]
    b = [r["anomaly_score"] for r in read_output(tmp_path / "b.csv")]
    assert a[:310] == b
    assert float(a[300]) > 0.5


def test_the_real_entry_point_reads_stdin_and_writes_stdout(tmp_path: Path) -> None:
    source = write_series(tmp_path / "in.csv", n=260, spike_at=250)
    done = subprocess.run(
        [sys.executable, "-m", "ai_sidecar.cli", "anomaly", "score", "-", "-"],
        input=source.read_text(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "timestamp,value,anomaly_score"
    assert len(lines) == 261
    assert float(lines[251].split(",")[2]) > 0.5
    assert done.stderr == ""


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty file, expected a header row timestamp,value"),
        (
            "time,value\n1,2\n",
            "line 1: the header has no timestamp column (expected timestamp,value)",
        ),
        (
            "timestamp,val\n1,2\n",
            "line 1: the header has no value column (expected timestamp,value)",
        ),
        (
            "timestamp,value\n1700000000,1\nyesterday,2\n",
            "line 3: cannot parse timestamp 'yesterday' (Unix seconds or ISO 8601)",
        ),
        ("timestamp,value\n1700000000,1\n1700000060,many\n", "line 3: cannot parse value 'many'"),
        ("timestamp,value\n1700000000\n", "line 2: 1 field, the header has 2"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    source = tmp_path / "bad.csv"
    source.write_text(content)
    assert main(["anomaly", "score", str(source), str(tmp_path / "out.csv")]) == 2
    err = capsys.readouterr().err
    assert err == f"scout-sidecar anomaly score: {source}: {message}\n"
    assert not (tmp_path / "out.csv").exists()


def test_a_missing_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.csv"
    assert main(["anomaly", "score", str(missing), str(tmp_path / "out.csv")]) == 2
    assert capsys.readouterr().err == (
        f"scout-sidecar anomaly score: {missing}: cannot read: No such file or directory\n"
    )


def test_a_bad_option_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["anomaly", "score", "in.csv", "out.csv", "--step", "soon"])
    assert exited.value.code == 2


def write_labelled(path: Path, spike_at: int, n: int = 600) -> Path:
    rng = np.random.default_rng(spike_at)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "value", "label"])
        for i in range(n):
            value = 5 + rng.normal(0, 0.3) + (6 if spike_at <= i < spike_at + 3 else 0)
            writer.writerow([START + 60 * i, f"{value:.3f}", int(spike_at <= i < spike_at + 3)])
    return path


def test_backtest_reports_event_metrics_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [str(write_labelled(tmp_path / f"s{k}.csv", k)) for k in (400, 500)]
    assert main(["anomaly", "backtest", *files, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["files"] == 2
    assert report["events"] == 2
    assert report["detected"] == 2
    assert report["recall"] == 1.0
    assert report["false_alarms"] == 0
    assert report["f1"] == 1.0
    assert report["median_delay_points"] <= 2
    assert report["nab_standard"] > 80


def test_backtest_wants_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_series(tmp_path / "unlabelled.csv", n=10, spike_at=5)
    assert main(["anomaly", "backtest", str(source)]) == 2
    assert "the header has no label column" in capsys.readouterr().err


def test_milliseconds_and_a_byte_order_mark_are_understood(tmp_path: Path) -> None:
    seconds = write_series(tmp_path / "seconds.csv", n=320)
    lines = seconds.read_text().splitlines()
    millis = ["\ufeff" + lines[0]]
    for line in lines[1:]:
        stamp, rest = line.split(",", 1)
        millis.append(f"{int(stamp) * 1000},{rest}")
    source = tmp_path / "millis.csv"
    source.write_text("\n".join(millis) + "\n", encoding="utf-8")
    assert main(["anomaly", "score", str(seconds), str(tmp_path / "a.csv")]) == 0
    assert main(["anomaly", "score", str(source), str(tmp_path / "b.csv")]) == 0
    a = [r["anomaly_score"] for r in read_output(tmp_path / "a.csv")]
    b = [r["anomaly_score"] for r in read_output(tmp_path / "b.csv")]
    assert a == b
    assert max(float(x) for x in a) > 0.5


@pytest.mark.parametrize("stdin", [False, True])
def test_a_byte_order_mark_before_a_quoted_header_is_understood(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], stdin: bool
) -> None:
    # Spreadsheets write a byte-order mark, and some quote every field.
    text = '\ufeff"timestamp","value"\r\n"1700000000","1.5"\r\n"1700000060","2"\r\n'
    source = tmp_path / "quoted.csv"
    source.write_bytes(text.encode("utf-8"))
    if stdin:
        monkeypatch.setattr(sys, "stdin", io.StringIO(text, newline=""))
    target = tmp_path / "out.csv"
    assert main(["anomaly", "score", "-" if stdin else str(source), str(target)]) == 0, (
        capsys.readouterr().err
    )
    rows = read_output(target)
    assert [(r["timestamp"], r["value"]) for r in rows] == [
        ("1700000000", "1.5"),
        ("1700000060", "2"),
    ]


def test_the_output_file_gets_the_mode_of_any_new_file(tmp_path: Path) -> None:
    source = write_series(tmp_path / "in.csv", n=20, spike_at=10)
    target = tmp_path / "out.csv"
    umask = os.umask(0o022)
    try:
        assert main(["anomaly", "score", str(source), str(target)]) == 0
    finally:
        os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_an_output_that_cannot_be_written_is_one_line_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_series(tmp_path / "in.csv", n=20, spike_at=10)
    directory = tmp_path / "a-directory"
    directory.mkdir()
    assert main(["anomaly", "score", str(source), str(directory)]) == 2
    assert capsys.readouterr().err == (
        f"scout-sidecar anomaly score: {directory}: cannot write: Is a directory\n"
    )
    assert set(tmp_path.iterdir()) == {source, directory}  # no temporary file left


@pytest.mark.parametrize("level", ["nan", "0", "1.5", "-1"])
def test_an_alarm_threshold_off_the_score_scale_is_a_usage_error(level: str) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["anomaly", "score", "in.csv", "out.csv", "--alarm-threshold", level])
    assert exited.value.code == 2
    with pytest.raises(SystemExit) as exited:
        main(["anomaly", "backtest", "in.csv", "--threshold", level])
    assert exited.value.code == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # A French decimal comma shifts the columns: never read 1,5 as 1.
        (
            b"timestamp,value\n1700000000,1,5\n",
            "line 2: 3 fields, the header has 2 (a decimal comma? write 1.5, not 1,5)",
        ),
        (
            b"timestamp,value,host\n1700000000,1,a\n1700000060,2\n",
            "line 3: 2 fields, the header has 3",
        ),
        (
            b"timestamp,value,Value\n1700000000,1,2\n",
            "line 1: the header names the column 'value' twice",
        ),
        (
            b"timestamp;value\n1700000000;1,5\n",
            "line 1: the header has no timestamp or value column "
            "(expected timestamp,value with ',' between columns)",
        ),
        (b"timestamp,value\n1700000000,1_000\n", "line 2: cannot parse value '1_000'"),
        (
            b"timestamp,value\n1_700_000_000,1\n",
            "line 2: cannot parse timestamp '1_700_000_000' (Unix seconds or ISO 8601)",
        ),
        (
            b"timestamp,value\n1700000000,1\n1700000060,\xe9\n",
            "line 3: not UTF-8 text (byte 0xe9 at offset 40)",
        ),
        (
            "timestamp,value\n1700000000,1\n".encode("utf-16"),
            "UTF-16 text (byte-order mark); save it as UTF-8",
        ),
        # The row starts on line 2 and its quoted note spans lines 2-3.
        (
            b'timestamp,value,note\n1700000000,x,"two\nlines"\n',
            "line 2: cannot parse value 'x'",
        ),
    ],
)
def test_a_malformed_csv_is_refused_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: bytes, message: str
) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(data)
    target = tmp_path / "out.csv"
    assert main(["anomaly", "score", str(source), str(target)]) == 2
    assert capsys.readouterr().err == f"scout-sidecar anomaly score: {source}: {message}\n"
    assert not target.exists()


def test_standard_input_bytes_are_checked_like_a_file() -> None:
    process = subprocess.run(
        [sys.executable, "-m", "ai_sidecar.cli", "anomaly", "score", "-", "-"],
        input=b"\xef\xbb\xbftimestamp,value\n1700000000,1,5\n",
        capture_output=True,
        check=False,
    )
    assert process.returncode == 2
    assert process.stderr.decode().endswith(
        "-: line 2: 3 fields, the header has 2 (a decimal comma? write 1.5, not 1,5)\n"
    )

"""The size tqdm bars are drawn at, on terminals that report one and on those that do not."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import struct
import sys
import termios
from collections.abc import Callable
from typing import TextIO

import pytest

from ai_sidecar.anomaly.model_commands import _progress_bars
from ai_sidecar.enrichment.llm.commands import PROGRESS_ROWS, _progress
from ai_sidecar.terminal import bar_size


def shown_on_unsized_stderr(monkeypatch: pytest.MonkeyPatch, draw: Callable[[TextIO], None]) -> str:
    """What ``draw`` shows with sys.stderr on a fresh pty, 0 columns by 0 rows (as
    ``script`` or ``docker run -t`` open one). tqdm measures sys.stderr's terminal
    itself, and on this one drew a blank line."""
    leader, follower = pty.openpty()
    assert os.get_terminal_size(follower) == (0, 0)
    stream = os.fdopen(follower, "w")
    monkeypatch.setattr(sys, "stderr", stream)
    try:
        draw(stream)
    finally:
        stream.close()
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the follower side is closed
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    return seen.decode()


def test_a_terminal_that_reports_its_size_is_left_to_tqdm() -> None:
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    with os.fdopen(follower, "w") as stream:
        assert bar_size(stream) == {}
    os.close(leader)


def test_a_terminal_of_no_size_and_no_terminal_get_a_fixed_size() -> None:
    leader, follower = pty.openpty()
    with os.fdopen(follower, "w") as stream:
        assert bar_size(stream) == {"ncols": 80, "nrows": 24}
    os.close(leader)
    assert bar_size(io.StringIO()) == {"ncols": 80, "nrows": 24}


def test_llm_export_draws_its_bar_on_a_terminal_of_no_size(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = list(range(PROGRESS_ROWS))

    def export(stream: TextIO) -> None:
        assert list(_progress(PROGRESS_ROWS)(rows)) == rows  # type: ignore[arg-type]

    shown = shown_on_unsized_stderr(monkeypatch, export)
    assert "100%|\u2588" in shown
    assert f"| {PROGRESS_ROWS}/{PROGRESS_ROWS} [" in shown


def test_anomaly_train_draws_its_bars_on_a_terminal_of_no_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def train(stream: TextIO) -> None:
        with _progress_bars(stream) as for_signal:
            advance = for_signal("load")
            assert advance is not None
            advance(3, 4)

    shown = shown_on_unsized_stderr(monkeypatch, train)
    assert "load:  75%|" in shown
    assert "| 3/4 [" in shown

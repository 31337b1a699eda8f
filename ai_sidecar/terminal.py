"""The size the command-line tools draw their tqdm bars at.

tqdm measures the terminal of ``sys.stderr`` or ``sys.stdout`` itself, and a
terminal that reports 0 columns and 0 rows (a fresh pty, as ``script``,
``docker run -t`` and ``kubectl exec -t`` open before any size is set) makes it
draw nothing but a blank line: a bar no characters wide, on a row past the
last. Such a terminal gets a common terminal's size instead.
"""

from __future__ import annotations

import os
from typing import TextIO, TypedDict

FALLBACK_COLUMNS = 80
FALLBACK_ROWS = 24


class BarSize(TypedDict, total=False):
    """tqdm's keyword arguments for a bar's size."""

    ncols: int
    nrows: int


def bar_size(stream: TextIO) -> BarSize:
    """tqdm's ``ncols`` and ``nrows`` for a bar on ``stream``: only those its terminal
    reports as 0 (or cannot report), so tqdm measures the rest itself."""
    try:
        columns, rows = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError):  # not a terminal, or no file descriptor at all
        columns = rows = 0
    size = BarSize()
    if not columns:
        size["ncols"] = FALLBACK_COLUMNS
    if not rows:
        size["nrows"] = FALLBACK_ROWS
    return size

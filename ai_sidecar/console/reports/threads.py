"""How reports run off the event loop: on worker threads, two at a time at most.

Summarising a period, drawing the chart (matplotlib) and laying out the PDF
(fpdf2) each run in Python for a while. A few viewers downloading reports at
once could otherwise take every thread of the default pool, and the webhook's
parsing of a large delivery, which uses that pool, would wait behind them. At
most ``REPORT_THREADS`` run at once per event loop; more wait their turn.

No pool of their own: its idle threads would outlive the event loop, and a
daemon's exit waits for the threads it knows of (``scout-exporter`` gives up
and exits at once when one is still alive).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import ParamSpec, TypeVar

REPORT_THREADS = 2

_P = ParamSpec("_P")
_R = TypeVar("_R")

_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


async def on_report_thread(function: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
    """``function(*args, **kwargs)`` on a worker thread, once one of the turns is free."""
    loop = asyncio.get_running_loop()
    turns = _turns.get(loop)
    if turns is None:
        turns = _turns[loop] = asyncio.Semaphore(REPORT_THREADS)
    async with turns:
        return await asyncio.to_thread(function, *args, **kwargs)

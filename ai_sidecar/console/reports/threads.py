"""The threads reports are made on: two, of their own.

Summarising a period, drawing the chart (matplotlib) and laying out the PDF
(fpdf2) each run in Python for a while, off the event loop. On the default pool,
a few viewers downloading reports at once could take every thread it has, and
the webhook's parsing of a large delivery, which uses that pool, would wait
behind them. Here at most ``REPORT_THREADS`` run at once; more requests queue.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

REPORT_THREADS = 2
THREAD_NAME_PREFIX = "scout-report"

_P = ParamSpec("_P")
_R = TypeVar("_R")

# Made once per process; its threads start on first use.
_pool = ThreadPoolExecutor(REPORT_THREADS, thread_name_prefix=THREAD_NAME_PREFIX)


async def on_report_thread(function: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
    """``function(*args, **kwargs)`` on one of the report threads."""
    call = functools.partial(function, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_pool, call)

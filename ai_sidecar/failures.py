"""Failures that are retried: logged once per change of state, paced with backoff.

Shared by the worker and the return trip. A store that stays busy for a
minute, retried every second, must give one warning and one "recovered" line,
not sixty tracebacks; a bug still gets its traceback, once.
"""

from __future__ import annotations

import logging
from typing import Literal

from ai_sidecar.store import StoreError

# A store that cannot write is tried again after this many seconds, doubled
# per failure in a row up to the maximum.
STORE_RETRY_FIRST = 1.0
STORE_RETRY_MAX = 60.0

# What was being done when it failed (the stage label of the failures metric):
# the worker's stages, and the return trip's posting round.
Stage = Literal["correlate", "analyse", "return_trip", "save", "post", "relearn"]
# The key FailureLog keeps the store's own outage under (incidents use their id).
STORE_KEY = "store"
# The key learning co-firing edges fails under: optional work, kept apart from
# the store's outage so that correlation's recovery does not hide it.
RELEARN_KEY = "relearn"
_WHAT = {STORE_KEY: "the store", RELEARN_KEY: "learning co-firing edges"}


class FailureLog:
    """Logs each failing thing once when it starts failing and once when it recovers.

    A store that stays busy for a minute, retried every second, must give one
    warning and one "recovered" line, not sixty tracebacks.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        # Key -> failures in a row.
        self._failing: dict[str, int] = {}

    def failed(self, key: str, stage: Stage, exc: BaseException) -> int:
        """Record a failure of ``key``; returns how many in a row (1: it just started)."""
        count = self._failing.get(key, 0) + 1
        self._failing[key] = count
        if count == 1:
            what = f"{_WHAT.get(key, 'an incident')} is failing"
            self._log.warning(
                f"{what}; its work is kept and retried",
                extra={"key": key, "stage": stage, "error": f"{type(exc).__name__}: {exc}"},
                # A bug deserves its traceback (once); a busy or full store does not.
                exc_info=None if isinstance(exc, StoreError) else exc,
            )
        return count

    def recovered(self, key: str) -> None:
        """``key`` worked again; says so if it had been failing."""
        count = self._failing.pop(key, 0)
        if count:
            what = f"{_WHAT.get(key, 'an incident')} works again"
            self._log.info(what, extra={"key": key, "failures": count})

    def forget(self, key: str) -> None:
        """``key`` is gone (an incident dropped from memory): stop tracking it, silently."""
        self._failing.pop(key, None)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is failing now."""
        return key in self._failing


def retry_delay(failures: int) -> float:
    """Seconds before the next try after ``failures`` store failures in a row."""
    return min(STORE_RETRY_MAX, STORE_RETRY_FIRST * (1 << min(failures - 1, 16)))

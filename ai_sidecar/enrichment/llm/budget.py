"""The LLM budget: requests per day and per minute, tokens per minute, cost per month.

The guard (:mod:`ai_sidecar.enrichment.llm.guard`) asks :meth:`LlmBudget.check`
before every attempt, tells :meth:`LlmBudget.request` when one starts and
:meth:`LlmBudget.spend` what an answer cost. A cap of 0 means no cap.

- ``requests_per_day``: attempts since midnight UTC (a retry is a request: the
  vendor counts it);
- ``requests_per_minute``: attempts in the last 60 seconds, a sliding window,
  which is the rate limiter: over it, the call is refused, not delayed (the
  local analysis goes out at once rather than late);
- ``tokens_per_minute``: input and output tokens of the answers of the last 60
  seconds; a reply's size is known only afterwards, so a call is refused once
  the last minute's tokens have reached the cap;
- ``cost_per_month``: the estimated cost (``Pricing.cost``) since the first of
  the month, UTC.

The day's requests and the month's cost survive a restart: they are kept in a
small JSON file (the caller names it, in the data directory), replaced
atomically after every change. A missing or unreadable file starts from zero,
with a warning. The per-minute windows start empty, as a restart takes longer
than the vendors' own per-minute memory matters for.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ai_sidecar.clock import utc_now
from ai_sidecar.config import LlmBudgetConfig

log = logging.getLogger("ai_sidecar.enrichment.llm.budget")

WINDOW = 60.0
BUDGETS = ("requests_per_day", "requests_per_minute", "tokens_per_minute", "cost_per_month")
# The file the sidecar keeps it in, in its data directory.
BUDGET_FILE = "llm_budget.json"
# A clock set back by up to this much (NTP stepping it) goes on counting in the
# day and month it had reached: set back over midnight, it would otherwise
# forgive what was spent since and let the caps be overrun. Set back further,
# the later time was the mistake, and the clock's own periods are taken.
STEP_BACK = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Exhausted:
    """A budget that forbids a call now: its name (one of :data:`BUDGETS`) and why, in words."""

    budget: str
    detail: str


class LlmBudget:
    """What is spent against each cap; ``clock`` (monotonic) for the minute, ``wall`` for dates."""

    def __init__(
        self,
        caps: LlmBudgetConfig,
        *,
        state_file: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = utc_now,
    ) -> None:
        self._caps = caps
        self._state_file = state_file
        self._clock = clock
        self._wall = wall
        self._requests: deque[float] = deque()
        self._tokens: deque[tuple[float, int]] = deque()
        self._day = ""
        self._requests_today = 0
        self._month = ""
        self._cost_this_month = 0.0
        # The latest time the periods were counted at (see STEP_BACK).
        self._latest: datetime | None = None
        self._load()

    def reconfigure(self, caps: LlmBudgetConfig) -> None:
        """New caps (a reload); what was spent stays spent."""
        self._caps = caps

    def check(self) -> Exhausted | None:
        """The first budget that forbids a call now, or None."""
        self._roll()
        caps = self._caps
        if caps.requests_per_day and self._requests_today >= caps.requests_per_day:
            return Exhausted(
                "requests_per_day",
                f"{self._requests_today} of {caps.requests_per_day} requests today (UTC) used",
            )
        if caps.requests_per_minute and len(self._requests) >= caps.requests_per_minute:
            return Exhausted(
                "requests_per_minute",
                f"{len(self._requests)} of {caps.requests_per_minute} requests in the last minute",
            )
        tokens = self._tokens_last_minute()
        if caps.tokens_per_minute and tokens >= caps.tokens_per_minute:
            return Exhausted(
                "tokens_per_minute",
                f"{tokens} of {caps.tokens_per_minute} tokens in the last minute",
            )
        if caps.cost_per_month and self._cost_this_month >= caps.cost_per_month:
            return Exhausted(
                "cost_per_month",
                f"estimated ${self._cost_this_month:.2f} of ${caps.cost_per_month:.2f} "
                "this month (UTC) spent",
            )
        return None

    def request(self) -> None:
        """An attempt starts: it counts against the requests per day and per minute."""
        self._roll()
        self._requests.append(self._clock())
        self._requests_today += 1
        self._save()

    def spend(self, input_tokens: int, output_tokens: int, cost: float) -> None:
        """What an answer used: tokens for the minute, the estimated cost for the month."""
        self._roll()
        self._tokens.append((self._clock(), max(0, input_tokens) + max(0, output_tokens)))
        if cost > 0:
            self._cost_this_month += cost
            self._save()

    def remaining(self) -> dict[str, float]:
        """What is left of each budget (never below 0); -1 for one without a cap."""
        self._roll()
        caps = self._caps
        used = {
            "requests_per_day": float(self._requests_today),
            "requests_per_minute": float(len(self._requests)),
            "tokens_per_minute": float(self._tokens_last_minute()),
            "cost_per_month": self._cost_this_month,
        }
        return {
            name: -1.0 if not getattr(caps, name) else max(0.0, getattr(caps, name) - used[name])
            for name in BUDGETS
        }

    def _tokens_last_minute(self) -> int:
        return sum(tokens for _, tokens in self._tokens)

    def _roll(self) -> None:
        """Forget what left the minute window; start a new day or month at midnight UTC."""
        horizon = self._clock() - WINDOW
        while self._requests and self._requests[0] <= horizon:
            self._requests.popleft()
        while self._tokens and self._tokens[0][0] <= horizon:
            self._tokens.popleft()
        # The file keeps the period it counts, so a stale one is never read back.
        day, month = _periods(self._now())
        if day != self._day:
            self._day, self._requests_today = day, 0
        if month != self._month:
            self._month, self._cost_this_month = month, 0.0

    def _now(self) -> datetime:
        """The wall clock, or the latest time seen if the clock went back less than STEP_BACK."""
        now = self._wall()
        latest = self._latest
        if latest is not None and latest - STEP_BACK <= now < latest:
            return latest
        self._latest = now
        return now

    def _load(self) -> None:
        self._day, self._month = _periods(self._now())
        if self._state_file is None:
            return
        try:
            state = json.loads(self._state_file.read_text(encoding="utf-8"))
            # When it was saved (absent from older files): a clock set back
            # since then counts on in the periods the file holds.
            saved_at = datetime.fromisoformat(state["at"]) if "at" in state else None
            if saved_at is not None and saved_at.tzinfo is None:
                raise ValueError("the time it was saved has no time zone")
            day, requests = state["day"], state["requests"]
            month, cost = state["month"], state["cost"]
            if not (
                isinstance(day, str)
                and isinstance(month, str)
                and isinstance(requests, int)
                and isinstance(cost, int | float)
            ):
                raise TypeError("unexpected types")
            # Python's JSON reads Infinity and NaN, which the file never holds:
            # read back, they would refuse every call until the month ends.
            if not math.isfinite(cost):
                raise ValueError("the cost is not a finite number")
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning(
                "LLM budget file unreadable; counting from zero",
                extra={"file": str(self._state_file), "error": type(exc).__name__},
            )
            return
        if saved_at is not None and self._latest is not None and saved_at > self._latest:
            self._latest = saved_at
            self._day, self._month = _periods(self._now())
        if day == self._day:
            self._requests_today = max(0, requests)
        if month == self._month:
            self._cost_this_month = max(0.0, float(cost))

    def _save(self) -> None:
        if self._state_file is None:
            return
        state = {
            "at": (self._latest or self._wall()).isoformat(),
            "day": self._day,
            "requests": self._requests_today,
            "month": self._month,
            "cost": self._cost_this_month,
        }
        temporary = self._state_file.with_name(self._state_file.name + ".tmp")
        try:
            temporary.write_text(json.dumps(state), encoding="utf-8")
            os.replace(temporary, self._state_file)
        except OSError as exc:
            # The budget still holds in memory; only a restart would forget it.
            log.warning(
                "cannot save the LLM budget",
                extra={"file": str(self._state_file), "error": exc.strerror},
            )


def _periods(now: datetime) -> tuple[str, str]:
    """The UTC day and month ``now`` falls in, as ``2026-12-03`` and ``2026-12``."""
    day = now.astimezone(UTC).date().isoformat()
    return day, day[:7]

"""Clocks for the guard's and the budget's tests: a monotonic and a wall clock moved together."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class Clocks:
    """``monotonic`` and ``wall`` move together with ``advance``; ``sleep`` advances them."""

    def __init__(self, now: datetime = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)) -> None:
        self.seconds = 1000.0
        self.now = now
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.seconds

    def wall(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.seconds += seconds
        self.now += timedelta(seconds=seconds)

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)

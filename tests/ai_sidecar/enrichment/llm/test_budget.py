"""The LLM budget: each cap refuses when reached and frees at the next minute, day or month."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from ai_sidecar.config import LlmBudgetConfig
from ai_sidecar.enrichment.llm.budget import BUDGET_FILE, LlmBudget
from tests.ai_sidecar.enrichment.llm.clocks import Clocks

START = datetime(2026, 12, 31, 23, 58, tzinfo=UTC)


def budget(clocks: Clocks, state_file: Path | None = None, **caps: float) -> LlmBudget:
    config = LlmBudgetConfig(
        requests_per_day=int(caps.get("requests_per_day", 0)),
        requests_per_minute=int(caps.get("requests_per_minute", 0)),
        tokens_per_minute=int(caps.get("tokens_per_minute", 0)),
        cost_per_month=float(caps.get("cost_per_month", 0.0)),
    )
    return LlmBudget(config, state_file=state_file, clock=clocks.monotonic, wall=clocks.wall)


def test_no_caps_never_refuse_and_show_minus_one() -> None:
    clocks = Clocks(START)
    spent = budget(clocks)
    for _ in range(1000):
        spent.request()
        spent.spend(10_000, 10_000, 5.0)
    assert spent.check() is None
    assert set(spent.remaining().values()) == {-1.0}


def test_requests_per_minute_is_a_sliding_window() -> None:
    clocks = Clocks(START)
    spent = budget(clocks, requests_per_minute=2)
    spent.request()
    clocks.advance(30)
    spent.request()
    exhausted = spent.check()
    assert exhausted is not None
    assert exhausted.budget == "requests_per_minute"
    assert "2 of 2" in exhausted.detail
    assert spent.remaining()["requests_per_minute"] == 0
    clocks.advance(30)  # the first request leaves the window
    assert spent.check() is None
    assert spent.remaining()["requests_per_minute"] == 1


def test_tokens_per_minute_refuse_once_reached() -> None:
    clocks = Clocks(START)
    spent = budget(clocks, tokens_per_minute=1000)
    spent.spend(600, 300, 0.0)
    assert spent.check() is None
    assert spent.remaining()["tokens_per_minute"] == 100
    spent.spend(50, 50, 0.0)
    exhausted = spent.check()
    assert exhausted is not None
    assert exhausted.budget == "tokens_per_minute"
    clocks.advance(60.5)
    assert spent.check() is None


def test_requests_per_day_reset_at_midnight_utc() -> None:
    clocks = Clocks(START)
    spent = budget(clocks, requests_per_day=3)
    for _ in range(3):
        spent.request()
    exhausted = spent.check()
    assert exhausted is not None
    assert exhausted.budget == "requests_per_day"
    clocks.advance(60)  # 23:59, still the same day
    assert spent.check() is not None
    clocks.advance(61)  # 00:00:01 the next day
    assert spent.check() is None
    assert spent.remaining()["requests_per_day"] == 3


def test_cost_per_month_reset_on_the_first() -> None:
    clocks = Clocks(START)
    spent = budget(clocks, cost_per_month=1.0)
    spent.spend(100, 100, 0.6)
    assert spent.check() is None
    assert abs(spent.remaining()["cost_per_month"] - 0.4) < 1e-9
    spent.spend(100, 100, 0.5)
    exhausted = spent.check()
    assert exhausted is not None
    assert exhausted.budget == "cost_per_month"
    assert "$1.10 of $1.00" in exhausted.detail
    clocks.advance(3 * 60)  # 2027-01-01 00:01
    assert spent.check() is None


def test_day_and_month_survive_a_restart(tmp_path: Path) -> None:
    clocks = Clocks(datetime(2026, 12, 3, 12, 0, tzinfo=UTC))
    state = tmp_path / BUDGET_FILE
    first = budget(clocks, state, requests_per_day=5, cost_per_month=2.0)
    for _ in range(4):
        first.request()
    first.spend(1000, 1000, 1.5)
    again = budget(clocks, state, requests_per_day=5, cost_per_month=2.0)
    assert again.remaining()["requests_per_day"] == 1
    assert abs(again.remaining()["cost_per_month"] - 0.5) < 1e-9
    # The next day: the requests start again, the month's cost does not.
    clocks.advance(24 * 3600)
    tomorrow = budget(clocks, state, requests_per_day=5, cost_per_month=2.0)
    assert tomorrow.remaining()["requests_per_day"] == 5
    assert abs(tomorrow.remaining()["cost_per_month"] - 0.5) < 1e-9
    assert not list(tmp_path.glob("*.tmp"))


def test_an_unreadable_file_counts_from_zero(tmp_path: Path) -> None:
    state = tmp_path / BUDGET_FILE
    state.write_text("{not json", encoding="utf-8")
    spent = budget(Clocks(START), state, requests_per_day=5)
    assert spent.remaining()["requests_per_day"] == 5
    spent.request()
    assert budget(Clocks(START), state, requests_per_day=5).remaining()["requests_per_day"] == 4


def test_a_corrupt_cost_or_count_counts_from_zero(tmp_path: Path) -> None:
    # JSON that parses (Python reads Infinity and NaN) but no budget file ever holds:
    # read back, it would refuse every call for the rest of the month or day.
    state = tmp_path / BUDGET_FILE
    day, month = START.date().isoformat(), START.date().isoformat()[:7]
    for requests, cost in (("1", "Infinity"), ("1", "NaN"), ("1e999", "0.5"), ("-3", "0.5")):
        state.write_text(
            f'{{"day": "{day}", "requests": {requests}, "month": "{month}", "cost": {cost}}}',
            encoding="utf-8",
        )
        left = budget(Clocks(START), state, requests_per_day=5, cost_per_month=2.0).remaining()
        assert left["cost_per_month"] in (2.0, 1.5), (requests, cost, left)
        assert left["requests_per_day"] in (4, 5), (requests, cost, left)


def test_reconfigure_keeps_what_was_spent() -> None:
    clocks = Clocks(START)
    spent = budget(clocks, requests_per_day=10)
    for _ in range(4):
        spent.request()
    spent.reconfigure(LlmBudgetConfig(requests_per_day=4, requests_per_minute=0))
    exhausted = spent.check()
    assert exhausted is not None
    assert exhausted.budget == "requests_per_day"
    spent.reconfigure(LlmBudgetConfig(requests_per_day=0, requests_per_minute=0))
    assert spent.check() is None


def test_a_clock_set_back_over_midnight_frees_no_budget(tmp_path: Path) -> None:
    clocks = Clocks(datetime(2027, 1, 1, 0, 1, tzinfo=UTC))
    state = tmp_path / BUDGET_FILE
    spent = budget(clocks, state, requests_per_day=3, cost_per_month=1.0)
    for _ in range(3):
        spent.request()
    spent.spend(100, 100, 1.0)
    # NTP steps the clock back to the last day of the old month: nothing spent
    # since midnight is forgiven, before or after a restart.
    clocks.now = datetime(2026, 12, 31, 23, 55, tzinfo=UTC)
    assert spent.remaining()["requests_per_day"] == 0
    assert spent.remaining()["cost_per_month"] == 0
    assert spent.check() is not None
    restarted = budget(clocks, state, requests_per_day=3, cost_per_month=1.0)
    assert restarted.remaining()["requests_per_day"] == 0
    assert restarted.remaining()["cost_per_month"] == 0
    # The day it counts comes again: it goes on counting, then starts afresh the day after.
    clocks.now = datetime(2027, 1, 1, 0, 10, tzinfo=UTC)
    assert spent.remaining()["requests_per_day"] == 0
    clocks.now = datetime(2027, 1, 2, 0, 0, tzinfo=UTC)
    assert spent.remaining()["requests_per_day"] == 3


def test_a_clock_that_was_days_ahead_is_taken_back_at_its_word() -> None:
    # Days ahead, the later time was the mistake: counting into that day would
    # hold the daily budget spent until it comes.
    clocks = Clocks(datetime(2027, 3, 1, 12, 0, tzinfo=UTC))
    spent = budget(clocks, requests_per_day=3)
    for _ in range(3):
        spent.request()
    clocks.now = datetime(2027, 2, 26, 12, 0, tzinfo=UTC)
    assert spent.remaining()["requests_per_day"] == 3

"""The guard: what it lets through, how it retries, what it counts and keeps."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from ai_sidecar.config import (
    CircuitConfig,
    LlmBudgetConfig,
    LlmConfig,
    LlmPrice,
)
from ai_sidecar.enrichment.base import AnalystDeclined
from ai_sidecar.enrichment.llm.base import (
    LlmExchange,
    LlmRateLimited,
    LlmRejected,
    LlmReply,
    LlmRequest,
    LlmTimedOut,
    LlmUnavailable,
)
from ai_sidecar.enrichment.llm.guard import LlmGuard
from ai_sidecar.enrichment.llm.metrics import create_llm_metrics
from tests.ai_sidecar.enrichment.llm.clocks import Clocks

REQUEST = LlmRequest(system="You explain incidents.", user="<alert>host-3 down</alert>", schema={})
NO_CAPS = LlmBudgetConfig(
    requests_per_day=0, requests_per_minute=0, tokens_per_minute=0, cost_per_month=0
)

Step = LlmReply | Exception | Callable[[], Any]


def answer(text: str = '{"summary": "ok"}', tokens: tuple[int, int] = (1000, 200)) -> LlmReply:
    return LlmReply(text, "gemini", "gemini-2.5-flash", tokens[0], tokens[1], "STOP")


class ScriptedProvider:
    """An LlmProvider that answers or fails as scripted, one step per attempt."""

    name = "gemini"
    local = False

    def __init__(self, *steps: Step, model: str = "gemini-2.5-flash") -> None:
        self.model = model
        self.steps = list(steps)
        self.calls = 0

    async def complete(self, request: LlmRequest) -> LlmReply:
        self.calls += 1
        step = self.steps.pop(0) if self.steps else answer()
        if callable(step) and not isinstance(step, LlmReply):
            step = step()
            if asyncio.iscoroutine(step):
                step = await step
        if isinstance(step, Exception):
            raise step
        assert isinstance(step, LlmReply)
        return step

    async def close(self) -> None:
        pass


@dataclass
class Audit:
    exchanges: list[LlmExchange] = field(default_factory=list)
    fail: bool = False

    async def record(self, exchange: LlmExchange) -> None:
        if self.fail:
            raise RuntimeError("database is locked")
        self.exchanges.append(exchange)


@dataclass
class Rig:
    guard: LlmGuard
    registry: CollectorRegistry
    audit: Audit
    clocks: Clocks

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def requests(self, outcome: str) -> float:
        return self.sample(
            "scout_llm_requests_total",
            provider="gemini",
            model="gemini-2.5-flash",
            outcome=outcome,
        )

    def fallbacks(self, reason: str) -> float:
        return self.sample("scout_llm_fallbacks_total", reason=reason)


def llm_config(**changes: Any) -> LlmConfig:
    values: dict[str, Any] = {
        "provider": "gemini",
        "model": "gemini-2.5-flash",
        "budget": NO_CAPS,
        "retries": 2,
        "timeout": timedelta(seconds=20),
        "price": LlmPrice(input_per_million=0.30, output_per_million=2.50),
    }
    values.update(changes)
    return LlmConfig(**values)


def rig(audit: Audit | None = None, **changes: Any) -> Rig:
    registry = CollectorRegistry()
    clocks = Clocks()
    audit = audit or Audit()
    guard = LlmGuard(
        llm_config(**changes),
        create_llm_metrics(registry),
        audit,
        clock=clocks.monotonic,
        wall=clocks.wall,
        sleep=clocks.sleep,
        jitter=lambda: 0.5,
    )
    return Rig(guard, registry, audit, clocks)


async def declined(r: Rig, provider: ScriptedProvider) -> AnalystDeclined:
    with pytest.raises(AnalystDeclined) as caught:
        await r.guard.call(provider, REQUEST, incident_id="inc-1")
    return caught.value


async def test_an_answer_is_returned_counted_and_audited() -> None:
    r = rig()
    reply = await r.guard.call(ScriptedProvider(answer()), REQUEST, incident_id="inc-1")
    assert reply.text == '{"summary": "ok"}'
    assert r.requests("ok") == 1
    labels = {"provider": "gemini", "model": "gemini-2.5-flash"}
    assert r.sample("scout_llm_input_tokens_total", **labels) == 1000
    assert r.sample("scout_llm_output_tokens_total", **labels) == 200
    cost = (1000 * 0.30 + 200 * 2.50) / 1e6
    assert r.sample("scout_llm_cost_dollars_total", **labels) == pytest.approx(cost)
    assert r.sample("scout_llm_request_duration_seconds_count", **labels) == 1
    [exchange] = r.audit.exchanges
    assert exchange.incident_id == "inc-1"
    assert exchange.outcome == "ok"
    assert exchange.prompt == "You explain incidents.\n\n<alert>host-3 down</alert>"
    assert exchange.answer == '{"summary": "ok"}'
    assert (exchange.input_tokens, exchange.output_tokens) == (1000, 200)
    assert exchange.cost == pytest.approx(cost)
    assert exchange.at == r.clocks.now


async def test_an_answer_the_callers_check_refuses_is_audited_as_invalid() -> None:
    r = rig()

    def check(reply: LlmReply) -> None:
        raise ValueError("missing field: root_cause")

    reply = await r.guard.call(
        ScriptedProvider(answer()), REQUEST, incident_id="inc-1", check=check
    )
    # Still returned: the caller acts on its own verdict (a retry, a fallback).
    assert reply.text == '{"summary": "ok"}'
    [exchange] = r.audit.exchanges
    assert exchange.outcome == "invalid"
    assert exchange.answer == '{"summary": "ok"}'
    # The metric keeps its documented meaning: counted ok on arrival, invalid when reported.
    assert (r.requests("ok"), r.requests("invalid")) == (1, 0)
    await r.guard.call(
        ScriptedProvider(answer()), REQUEST, incident_id="inc-2", check=lambda reply: None
    )
    assert [e.outcome for e in r.audit.exchanges] == ["invalid", "ok"]


async def test_kill_switch_declines_without_calling() -> None:
    r = rig(enabled=False)
    provider = ScriptedProvider()
    refusal = await declined(r, provider)
    assert refusal.reason == "disabled"
    assert provider.calls == 0
    # The analyst counts every decline it passes on; counted here too, it would count twice.
    assert r.fallbacks("disabled") == 0
    assert not r.audit.exchanges


async def test_allow_list() -> None:
    r = rig(allowed_models=["gemini-2.5-flash", "gemini-2.5-pro"])
    assert await r.guard.call(ScriptedProvider(model="gemini-2.5-pro"), REQUEST, incident_id="i")
    provider = ScriptedProvider(model="gemini-1.0-ultra")
    refusal = await declined(r, provider)
    assert refusal.reason == "model_not_allowed"
    assert "gemini-1.0-ultra" in refusal.detail
    assert provider.calls == 0
    # Without a list, only the configured model.
    plain = rig()
    assert (await declined(plain, ScriptedProvider(model="gemini-2.5-pro"))).reason == (
        "model_not_allowed"
    )


@pytest.mark.parametrize(
    ("caps", "use", "wait", "budget"),
    [
        (
            LlmBudgetConfig(requests_per_day=2, requests_per_minute=0, tokens_per_minute=0),
            2,
            24 * 3600,
            "requests_per_day",
        ),
        (
            LlmBudgetConfig(requests_per_day=0, requests_per_minute=2, tokens_per_minute=0),
            2,
            61,
            "requests_per_minute",
        ),
        (
            LlmBudgetConfig(requests_per_day=0, requests_per_minute=0, tokens_per_minute=2000),
            2,
            61,
            "tokens_per_minute",
        ),
        (
            LlmBudgetConfig(
                requests_per_day=0, requests_per_minute=0, tokens_per_minute=0, cost_per_month=0.001
            ),
            2,
            31 * 24 * 3600,
            "cost_per_month",
        ),
    ],
)
async def test_each_budget_declines_when_spent_and_frees_later(
    caps: LlmBudgetConfig, use: int, wait: float, budget: str
) -> None:
    r = rig(budget=caps)
    provider = ScriptedProvider()
    for _ in range(use):
        await r.guard.call(provider, REQUEST, incident_id="inc-1")
    refusal = await declined(r, provider)
    assert refusal.reason == "budget"
    assert refusal.detail.startswith(budget)
    assert provider.calls == use
    assert r.sample("scout_llm_budget_remaining", budget=budget) == 0
    r.clocks.advance(wait)
    assert await r.guard.call(provider, REQUEST, incident_id="inc-1")
    assert provider.calls == use + 1


async def test_budget_gauge_shows_minus_one_without_a_cap() -> None:
    r = rig(budget=LlmBudgetConfig(requests_per_day=10, requests_per_minute=0))
    await r.guard.call(ScriptedProvider(), REQUEST, incident_id="inc-1")
    assert r.sample("scout_llm_budget_remaining", budget="requests_per_day") == 9
    assert r.sample("scout_llm_budget_remaining", budget="requests_per_minute") == -1


async def test_429_waits_as_long_as_asked_then_answers() -> None:
    r = rig()
    provider = ScriptedProvider(LlmRateLimited("429 Too Many Requests", retry_after=7), answer())
    reply = await r.guard.call(provider, REQUEST, incident_id="inc-1")
    assert reply.text
    assert r.clocks.slept == [7]
    assert r.requests("rate_limited") == 1
    assert r.requests("ok") == 1
    assert [e.outcome for e in r.audit.exchanges] == ["rate_limited", "ok"]


async def test_500_twice_then_ok_with_growing_jittered_backoff() -> None:
    r = rig(retries=2)
    provider = ScriptedProvider(LlmUnavailable("503"), LlmUnavailable("503"), answer())
    assert await r.guard.call(provider, REQUEST, incident_id="inc-1")
    # Full jitter at 0.5 of 1 s, then of 2 s.
    assert r.clocks.slept == [0.5, 1.0]
    assert r.requests("unavailable") == 2
    assert r.requests("ok") == 1
    assert len(r.audit.exchanges) == 3


async def test_retries_exhausted() -> None:
    r = rig(retries=1)
    provider = ScriptedProvider(LlmUnavailable("502"), LlmUnavailable("502"), answer())
    refusal = await declined(r, provider)
    assert refusal.reason == "unavailable"
    assert "2 attempts" in refusal.detail
    assert provider.calls == 2


async def test_a_wait_past_the_time_box_gives_up_at_once() -> None:
    r = rig(timeout=timedelta(seconds=20))
    provider = ScriptedProvider(LlmRateLimited("429", retry_after=60), answer())
    refusal = await declined(r, provider)
    assert refusal.reason == "rate_limited"
    assert provider.calls == 1
    assert r.clocks.slept == []


async def test_the_time_box_covers_the_retries() -> None:
    r = rig(timeout=timedelta(seconds=20), retries=10)

    def slow_failure() -> Exception:
        r.clocks.advance(6)  # each attempt takes 6 s
        return LlmUnavailable("503")

    provider = ScriptedProvider(*[slow_failure] * 10)
    refusal = await declined(r, provider)
    assert refusal.reason == "timeout"
    assert provider.calls < 4
    assert r.clocks.seconds - 1000 <= 20


async def test_an_attempt_that_hangs_ends_at_the_time_box() -> None:
    r = rig(timeout=timedelta(milliseconds=100))

    async def hang() -> LlmReply:
        await asyncio.sleep(30)
        return answer()

    refusal = await declined(r, ScriptedProvider(hang))
    assert refusal.reason == "timeout"
    assert [e.outcome for e in r.audit.exchanges] == ["timeout"]


async def test_provider_timeout_and_rejection_are_not_retried() -> None:
    r = rig()
    provider = ScriptedProvider(LlmTimedOut("read timeout"), answer())
    assert (await declined(r, provider)).reason == "timeout"
    provider = ScriptedProvider(LlmRejected("400 bad request: prompt too long"), answer())
    refusal = await declined(r, provider)
    assert refusal.reason == "rejected"
    assert refusal.detail == "400 bad request: prompt too long"
    assert provider.calls == 1


async def test_an_unexpected_error_shows_its_class_only() -> None:
    r = rig()
    secret = ValueError("https://api.example/v1?key=AIzaSECRET")
    refusal = await declined(r, ScriptedProvider(secret))
    assert refusal.reason == "error"
    assert "AIzaSECRET" not in refusal.detail
    assert "ValueError" in refusal.detail
    assert r.requests("error") == 1


async def test_circuit_opens_refuses_without_calling_and_tries_once_when_half_open() -> None:
    r = rig(retries=0, circuit=CircuitConfig(failures=2, reset=timedelta(seconds=60)))
    provider = ScriptedProvider(LlmUnavailable("503"), LlmUnavailable("503"))
    for _ in range(2):
        assert (await declined(r, provider)).reason == "unavailable"
    assert r.sample("scout_llm_circuit_state", provider="gemini") == 2
    refusal = await declined(r, provider)
    assert refusal.reason == "circuit"
    assert provider.calls == 2
    r.clocks.advance(60)
    # The trial fails: open again, without a second call.
    provider.steps = [LlmUnavailable("503")]
    assert (await declined(r, provider)).reason == "unavailable"
    assert (await declined(r, provider)).reason == "circuit"
    assert provider.calls == 3
    r.clocks.advance(60)
    assert await r.guard.call(provider, REQUEST, incident_id="inc-1")
    assert r.sample("scout_llm_circuit_state", provider="gemini") == 0


async def test_rejections_do_not_open_the_circuit() -> None:
    r = rig(circuit=CircuitConfig(failures=1, reset=timedelta(seconds=60)))
    provider = ScriptedProvider(LlmRejected("413"), LlmRejected("413"))
    for _ in range(2):
        assert (await declined(r, provider)).reason == "rejected"
    assert await r.guard.call(provider, REQUEST, incident_id="inc-1")


async def test_a_failing_audit_never_fails_the_call(caplog: pytest.LogCaptureFixture) -> None:
    r = rig(audit=Audit(fail=True))
    for _ in range(3):
        assert await r.guard.call(ScriptedProvider(), REQUEST, incident_id="inc-1")
    assert r.requests("ok") == 3
    logged = [rec for rec in caplog.records if "audit" in rec.getMessage()]
    assert len(logged) == 1
    assert "locked" not in logged[0].getMessage()


async def test_invalid_answers_are_counted_apart_from_ok() -> None:
    r = rig()
    provider = ScriptedProvider()
    await r.guard.call(provider, REQUEST, incident_id="inc-1")
    r.guard.invalid_answer(provider, "inc-1")
    assert r.requests("invalid") == 1
    assert r.requests("ok") == 1


async def test_reconfigure_flips_the_kill_switch_and_keeps_the_spend() -> None:
    r = rig(budget=LlmBudgetConfig(requests_per_day=3, requests_per_minute=0))
    provider = ScriptedProvider()
    await r.guard.call(provider, REQUEST, incident_id="inc-1")
    r.guard.reconfigure(llm_config(enabled=False, budget=LlmBudgetConfig(requests_per_day=3)))
    assert (await declined(r, provider)).reason == "disabled"
    r.guard.reconfigure(llm_config(budget=LlmBudgetConfig(requests_per_day=1)))
    refusal = await declined(r, provider)
    assert refusal.reason == "budget"
    assert provider.calls == 1

"""The guard around every LLM call: may it go, how often to try, what it cost, what to keep.

:class:`LlmGuard` implements :class:`~ai_sidecar.enrichment.llm.base.LlmCaller`.
Before a call, in this order:

1. the kill switch: ``llm.enabled`` false (or ``provider: none`` after a
   reload) -> declined ``disabled``;
2. the allow-list: the provider's model must be in ``llm.allowed_models``
   (or be ``llm.model`` when that list is empty) -> ``model_not_allowed``;
3. the budget (:mod:`~ai_sidecar.enrichment.llm.budget`) -> ``budget``;
4. the circuit breaker (:mod:`~ai_sidecar.enrichment.llm.circuit`) -> ``circuit``.

Then attempts, within one time box of ``llm.timeout`` for the whole call:

- an answer is returned as it came (validation is the analyst's);
- a 429 (:class:`LlmRateLimited`) or a 5xx or connection failure
  (:class:`LlmUnavailable`) is tried again, up to ``llm.retries`` times, after
  the wait the provider asked for (``Retry-After``) or else an exponential
  backoff with full jitter; a wait that would end past the time box ends the
  call at once (``rate_limited`` when the provider named the wait, else
  ``timeout``); retries exhausted -> ``rate_limited`` or ``unavailable``;
- the time box running out during an attempt, or the provider's own timeout
  (:class:`LlmTimedOut`) -> ``timeout``; a 4xx (:class:`LlmRejected`) ->
  ``rejected``, both at once; any other exception -> ``error``, whose detail
  names the exception's class only (its text may hold a URL or a key).

Every attempt, answered or not, is one :class:`LlmExchange` in the audit (an
answer the caller's ``check`` refuses is kept as ``invalid``) and one
``scout_llm_requests_total`` sample, with its latency, tokens and estimated
cost. An audit that fails is logged (once, until it works again) and never
fails the call. Declines are not counted here: the analyst counts each one it
passes on in ``scout_llm_fallbacks_total``.

``invalid_answer`` counts an answer the analyst found invalid as
``outcome="invalid"``. That answer was already counted ``ok`` (a counter cannot
go down, and the guard cannot know at the time): ``invalid`` is a subset of
``ok``, and the requests sent are the sum of the other outcomes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

from ai_sidecar.clock import utc_now
from ai_sidecar.config import LlmConfig
from ai_sidecar.enrichment.base import AnalystDeclined
from ai_sidecar.enrichment.llm.base import (
    LlmAudit,
    LlmError,
    LlmExchange,
    LlmProvider,
    LlmRateLimited,
    LlmRejected,
    LlmReply,
    LlmRequest,
    LlmTimedOut,
    LlmUnavailable,
    Outcome,
    Pricing,
)
from ai_sidecar.enrichment.llm.budget import LlmBudget
from ai_sidecar.enrichment.llm.circuit import CircuitBreaker
from ai_sidecar.enrichment.llm.metrics import LlmMetrics

log = logging.getLogger("ai_sidecar.enrichment.llm.guard")

# The first retry waits up to this long (full jitter), doubling each time up to the cap.
BACKOFF_BASE = 1.0
BACKOFF_CAP = 30.0
# Declines that say the provider is unwell: they count against the circuit.
CIRCUIT_FAILURES = frozenset({"timeout", "rate_limited", "unavailable", "error"})
MAX_DETAIL = 200
# How the audit shows the prompt: the instructions, then the incident, as sent.
PROMPT_SEPARATOR = "\n\n"


class _NoAnswer(Exception):
    """One attempt gave no answer: its outcome, and whether another may follow."""

    def __init__(self, outcome: Outcome, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.outcome in ("rate_limited", "unavailable")


class LlmGuard:
    """Kill switch, allow-list, budget, retries, circuit breaker, time box and audit.

    ``clock`` (monotonic seconds) times the minute windows, the circuit, the
    time box and latencies; ``wall`` dates the audit and the day and month of
    the budget; ``sleep`` waits between attempts and ``jitter`` (0 to 1) spreads
    the backoff: tests give their own. ``state_file`` keeps the day's requests
    and the month's cost across restarts (None: in memory only).
    """

    def __init__(
        self,
        config: LlmConfig,
        metrics: LlmMetrics,
        audit: LlmAudit | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        state_file: Path | None = None,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._audit = audit
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self._jitter = jitter
        self._budget = LlmBudget(config.budget, state_file=state_file, clock=clock, wall=wall)
        self._circuit = CircuitBreaker(config.circuit, clock=clock)
        self._audit_failing = False
        self._show_budget()

    def reconfigure(self, config: LlmConfig) -> None:
        """Apply a reloaded ``llm`` section; what was spent and the circuits' states stay."""
        self._config = config
        self._budget.reconfigure(config.budget)
        self._circuit.reconfigure(config.circuit)
        self._show_budget()

    async def call(
        self,
        provider: LlmProvider,
        request: LlmRequest,
        *,
        incident_id: str,
        check: Callable[[LlmReply], object] | None = None,
    ) -> LlmReply:
        config = self._config  # one config for the whole call, even if a reload comes
        refusal = _refusal(provider, config)
        if refusal is not None:
            raise self._decline(*refusal)
        exhausted = self._budget.check()
        self._show_budget()
        if exhausted is not None:
            raise self._decline("budget", f"{exhausted.budget}: {exhausted.detail}")
        name = provider.name
        if not self._circuit.allow(name):
            self._show_circuit(name)
            reset = config.circuit.reset.total_seconds()
            raise self._decline(
                "circuit",
                f"{name} failed {config.circuit.failures} calls in a row; "
                f"calls pause for {reset:g}s before a trial",
            )
        settled = False
        try:
            reply = await self._attempts(provider, request, incident_id, config, check)
        except AnalystDeclined as declined:
            if declined.reason in CIRCUIT_FAILURES:
                self._circuit.failed(name)
                settled = True
            elif declined.reason == "rejected":
                self._circuit.succeeded(name)
                settled = True
            raise
        else:
            self._circuit.succeeded(name)
            settled = True
            return reply
        finally:
            if not settled:
                self._circuit.release(name)
            self._show_circuit(name)

    def invalid_answer(self, provider: LlmProvider, incident_id: str) -> None:
        """Count an answer that failed validation (already counted ``ok`` when it came)."""
        self._metrics.requests.labels(provider.name, provider.model, "invalid").inc()
        log.info(
            "LLM answer failed validation",
            extra={"incident": incident_id, "provider": provider.name, "model": provider.model},
        )

    async def _attempts(
        self,
        provider: LlmProvider,
        request: LlmRequest,
        incident_id: str,
        config: LlmConfig,
        check: Callable[[LlmReply], object] | None,
    ) -> LlmReply:
        deadline = self._clock() + config.timeout.total_seconds()
        pricing = Pricing(config.price.input_per_million, config.price.output_per_million)
        retry = 0
        while True:
            try:
                return await self._attempt(provider, request, incident_id, pricing, deadline, check)
            except _NoAnswer as failure:
                if not failure.retryable:
                    raise self._decline(failure.outcome, failure.detail) from None
                if retry >= config.retries:
                    raise self._decline(
                        failure.outcome, f"{failure.detail} (after {retry + 1} attempts)"
                    ) from None
                wait = self._backoff(retry, failure.retry_after)
                if self._clock() + wait >= deadline:
                    raise self._decline(*_beyond_time_box(failure, wait, config)) from None
                await self._sleep(wait)
                retry += 1
            exhausted = self._budget.check()
            self._show_budget()
            if exhausted is not None:
                raise self._decline("budget", f"{exhausted.budget}: {exhausted.detail}")

    async def _attempt(
        self,
        provider: LlmProvider,
        request: LlmRequest,
        incident_id: str,
        pricing: Pricing,
        deadline: float,
        check: Callable[[LlmReply], object] | None,
    ) -> LlmReply:
        """One request to the provider, audited and counted; _NoAnswer when none came."""
        at = self._wall()
        started = self._clock()
        self._budget.request()
        reply: LlmReply | None = None
        failure: _NoAnswer | None = None
        try:
            async with asyncio.timeout(max(0.0, deadline - started)):
                reply = await provider.complete(request)
        except TimeoutError:
            failure = _NoAnswer("timeout", "no answer within the time box")
        except LlmRateLimited as exc:
            failure = _NoAnswer("rate_limited", _words(exc), retry_after=exc.retry_after)
        except LlmUnavailable as exc:
            failure = _NoAnswer("unavailable", _words(exc))
        except LlmTimedOut as exc:
            failure = _NoAnswer("timeout", _words(exc))
        except LlmRejected as exc:
            failure = _NoAnswer("rejected", _words(exc))
        except LlmError as exc:
            failure = _NoAnswer("error", _words(exc))
        except Exception as exc:  # provider boundary: a bug or an SDK surprise, never a crash
            log.warning(
                "LLM provider failed unexpectedly",
                extra={"provider": provider.name, "error": type(exc).__name__},
            )
            failure = _NoAnswer("error", f"unexpected {type(exc).__name__}")
        latency = self._clock() - started
        input_tokens = reply.input_tokens if reply is not None else 0
        output_tokens = reply.output_tokens if reply is not None else 0
        cost = pricing.cost(input_tokens, output_tokens)
        if reply is not None:
            self._budget.spend(input_tokens, output_tokens, cost)
        self._show_budget()
        outcome: Outcome = "ok" if failure is None else failure.outcome
        labels = (provider.name, provider.model)
        self._metrics.requests.labels(*labels, outcome).inc()
        if reply is not None and check is not None and not _passes(check, reply):
            outcome = "invalid"  # counted by invalid_answer when the caller reports it
        self._metrics.latency.labels(*labels).observe(latency)
        if reply is not None:
            self._metrics.input_tokens.labels(*labels).inc(input_tokens)
            self._metrics.output_tokens.labels(*labels).inc(output_tokens)
            self._metrics.cost.labels(*labels).inc(cost)
        await self._record(
            LlmExchange(
                incident_id=incident_id,
                at=at,
                provider=provider.name,
                model=reply.model if reply is not None and reply.model else provider.model,
                prompt=request.system + PROMPT_SEPARATOR + request.user,
                answer=_kept(reply.text, request.answer_limit) if reply is not None else "",
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost=cost,
                latency=latency,
                outcome=outcome,
            )
        )
        if reply is None:
            raise failure or _NoAnswer("error", "no answer")
        return reply

    def _backoff(self, retry: int, retry_after: float | None) -> float:
        if retry_after is not None and retry_after >= 0:
            return retry_after
        return self._jitter() * min(BACKOFF_CAP, BACKOFF_BASE * 2.0**retry)

    async def _record(self, exchange: LlmExchange) -> None:
        if self._audit is None:
            return
        try:
            await self._audit.record(exchange)
        except Exception as exc:  # audit boundary: keeping the record must never cost the answer
            if not self._audit_failing:
                log.error(
                    "cannot keep LLM exchanges in the audit; calls go on without it",
                    extra={"error": type(exc).__name__},
                )
            self._audit_failing = True
        else:
            if self._audit_failing:
                log.info("the LLM audit keeps exchanges again")
            self._audit_failing = False

    def _decline(self, reason: str, detail: str) -> AnalystDeclined:
        # Not counted here: the analyst counts every decline in scout_llm_fallbacks_total,
        # the guard's and its own, once.
        return AnalystDeclined(reason, detail)

    def _show_budget(self) -> None:
        for budget, left in self._budget.remaining().items():
            self._metrics.budget_remaining.labels(budget).set(left)

    def _show_circuit(self, provider: str) -> None:
        self._metrics.circuit_state.labels(provider).set(int(self._circuit.state(provider)))


def _refusal(provider: LlmProvider, config: LlmConfig) -> tuple[str, str] | None:
    """Why the config forbids this call before anything is spent, or None."""
    if not config.enabled:
        return "disabled", "the LLM kill switch is on (llm.enabled: false)"
    if config.provider == "none":
        return "disabled", "no LLM provider is configured (llm.provider: none)"
    allowed = config.allowed_models or [config.model]
    if provider.model not in allowed:
        return (
            "model_not_allowed",
            f"model {provider.model!r} is not allowed (allowed: {', '.join(allowed)})",
        )
    return None


def _beyond_time_box(failure: _NoAnswer, wait: float, config: LlmConfig) -> tuple[str, str]:
    box = config.timeout.total_seconds()
    if failure.retry_after is not None:
        return (
            "rate_limited",
            f"the provider asked to wait {wait:g}s, past the {box:g}s time box",
        )
    return "timeout", f"no answer within the {box:g}s time box ({failure.detail})"


def _passes(check: Callable[[LlmReply], object], reply: LlmReply) -> bool:
    """Whether the caller's validation takes ``reply`` (it raises when it does not)."""
    try:
        check(reply)
    except Exception:  # the caller's verdict, whatever its error class; it acts on it itself
        return False
    return True


def _kept(answer: str, limit: int) -> str:
    """What the audit keeps of ``answer``: all of any answer a model could give,
    the start of a longer one (which the analyst refuses unread)."""
    if len(answer) <= limit:
        return answer
    return f"{answer[:limit]}… [{len(answer) - limit} more characters not kept]"


def _words(error: LlmError) -> str:
    """An LlmError's message (safe by contract), bounded, or its class when it has none."""
    return str(error)[:MAX_DETAIL] or type(error).__name__

"""The LLM analyst: the local draft, improved by a model when the policy says it pays.

For each incident it asks, in order:

1. the local analyst, for a draft (always: the model improves it, and the
   fallback is never worse-informed than the model);
2. the gate (the hybrid policy): nothing material changed since its last
   answer (reuse it), a similar incident was answered within the TTL (restore
   that answer with this incident's pseudonyms), or not worth a call
   (decline, and the local analysis goes out labelled with the reason);
3. the caller (the guard), with the redacted, fenced prompt. No answer: the
   guard declines, and the reason is counted here. An answer that fails
   validation is sent back once with the error; a second failure declines
   with ``invalid``.

The answer is mapped back from pseudonyms (credentials stay ``[redacted]``),
sanitised for Slack and email, and remembered by the gate.

The call runs in the background: the analyst declines at once with
``pending`` (the local analysis goes out, so the page is never held for the
model) and asks the worker to come back; then it gives the model's answer
(or the decline the call ended in). Alertmanager holds an incident's first
notification for the enriched route's ``group_wait`` (10 s as shipped), and
an answer that arrives meanwhile replaces the local one in that notification.

It depends only on the seams of :mod:`ai_sidecar.enrichment.llm.base`: any
provider, caller and gate will do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, replace
from typing import NoReturn

from ai_sidecar.config import LlmConfig
from ai_sidecar.enrichment.base import PENDING, Analyst, AnalystDeclined, IncidentContext
from ai_sidecar.enrichment.llm.answer import InvalidAnswer, answer_json, parse_answer
from ai_sidecar.enrichment.llm.base import LlmCaller, LlmGate, LlmProvider, LlmReply, LlmRequest
from ai_sidecar.enrichment.llm.metrics import LlmMetrics
from ai_sidecar.enrichment.llm.prompt import Prompt, build_prompt, must_redact, retry_request
from ai_sidecar.enrichment.llm.redact import Redactor
from ai_sidecar.models import Analysis, Incident
from ai_sidecar.sanitize import sanitize_analysis

log = logging.getLogger("ai_sidecar.llm")

# Seconds after which the worker asks again about a call still in flight (its
# own pace between two analyses of an incident comes on top).
PENDING_POLL = 0.5


@dataclass(frozen=True, slots=True)
class _Call:
    """A call in the background, and the incident version it is about."""

    version: int
    task: asyncio.Task[Analysis]


class LlmAnalyst:
    """Explains incidents with ``provider``, through ``guard`` and as ``policy`` allows."""

    def __init__(
        self,
        local: Analyst,
        provider: LlmProvider,
        guard: LlmCaller,
        policy: LlmGate,
        config: LlmConfig,
        metrics: LlmMetrics,
    ) -> None:
        self.name = provider.name
        self._local = local
        self._provider = provider
        self._guard = guard
        self._policy = policy
        self._config = config
        self._metrics = metrics
        # Calls in flight or answered and not yet collected, by incident.
        self._calls: dict[str, _Call] = {}
        self._redact = must_redact(config, provider)
        if not config.redact and self._redact:
            log.warning(
                "llm.redact is false, but provider %s is not local: redacting anyway",
                provider.name,
            )

    async def analyse(self, incident: Incident, context: IncidentContext) -> Analysis:
        running = self._calls.get(incident.id)
        if running is not None:
            if not running.task.done():
                raise AnalystDeclined(
                    PENDING, f"{self.name} is answering", retry_after=PENDING_POLL
                )
            del self._calls[incident.id]
            if running.version == incident.version:
                return running.task.result()  # or the decline the call ended in
            # About an older version: the gate, which remembered the answer,
            # decides whether it still holds (repeat) or the change needs a call.
        draft = await self._local.analyse(incident, context)
        decision = self._policy.decide(incident, context, self.name)
        if decision.previous is not None:
            self._metrics.cache_hits.labels("previous").inc()
            return decision.previous
        if decision.cached_answer is None and not decision.call:
            self._decline(decision.reason, decision.detail, retry_after=decision.retry_after)
        # Built for a cached answer too: its pseudonyms are this incident's names.
        prompt = build_prompt(incident, context, draft, self._config, redact=self._redact)
        if decision.cached_answer is not None:
            return self._from_cache(
                decision.cached_answer, incident, prompt.redactor, context.language
            )
        for kind, count in prompt.redactor.counts.items():
            self._metrics.redactions.labels(kind).inc(count)
        task = asyncio.create_task(self._explain(incident, prompt, context.language))
        # Retrieved at once: a call nobody collects (its version superseded, the
        # pipeline stopped) must not be logged as a task exception never retrieved.
        task.add_done_callback(_retrieve)
        self._calls[incident.id] = _Call(incident.version, task)
        raise AnalystDeclined(PENDING, f"{self.name} is answering", retry_after=0.0)

    async def close(self) -> None:
        """Cancel the calls in flight (the pipeline stops), then close the provider."""
        calls = [call.task for call in self._calls.values()]
        self._calls.clear()
        for call in calls:
            call.cancel()
        for call in calls:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await call
        await self._provider.close()

    async def _explain(self, incident: Incident, prompt: Prompt, language: str) -> Analysis:
        redacted = await self._answer(incident, prompt, language)
        analysis = _restored(redacted, prompt.redactor)
        # Kept capped, in pseudonyms: a similar incident restores it with its own.
        kept = json.dumps(answer_json(sanitize_analysis(redacted)), ensure_ascii=False)
        self._policy.remember(incident, analysis, kept, language)
        return analysis

    def _from_cache(
        self, answer: str, incident: Incident, redactor: Redactor, language: str
    ) -> Analysis:
        """A similar incident's answer, in this incident's names."""
        try:
            redacted = parse_answer(answer, incident, language)
        except InvalidAnswer as exc:
            self._decline("invalid", f"the cached answer of a similar incident is invalid: {exc}")
        self._metrics.cache_hits.labels("similar").inc()
        return _restored(redacted, redactor)

    async def _answer(self, incident: Incident, prompt: Prompt, language: str) -> Analysis:
        """The model's valid answer, in ``language`` and still in pseudonyms; one retry
        with the error (a wrong language is an error like any other)."""
        request = prompt.request
        limit = request.answer_limit
        reply = await self._call(request, incident, language)
        try:
            return parse_answer(reply.text, incident, language, limit=limit)
        except InvalidAnswer as first:
            self._guard.invalid_answer(self._provider, incident.id)
            log.info("incident %s: invalid answer from %s: %s", incident.id, self.name, first)
            reply = await self._call(retry_request(request, first.reason), incident, language)
        try:
            return parse_answer(reply.text, incident, language, limit=limit)
        except InvalidAnswer as second:
            self._guard.invalid_answer(self._provider, incident.id)
            self._decline("invalid", f"the answer failed validation twice: {second}")

    async def _call(self, request: LlmRequest, incident: Incident, language: str) -> LlmReply:
        try:
            return await self._guard.call(
                self._provider,
                request,
                incident_id=incident.id,
                # So the audit keeps an answer that fails validation as "invalid".
                check=lambda reply: parse_answer(
                    reply.text, incident, language, limit=request.answer_limit
                ),
            )
        except AnalystDeclined as declined:
            self._metrics.fallbacks.labels(declined.reason).inc()
            raise

    def _decline(self, reason: str, detail: str, *, retry_after: float | None = None) -> NoReturn:
        self._metrics.fallbacks.labels(reason).inc()
        raise AnalystDeclined(reason, detail, retry_after=retry_after)


def _retrieve(task: asyncio.Task[Analysis]) -> None:
    """Mark the outcome of ``task`` as seen (``result()`` still raises it later)."""
    if not task.cancelled():
        task.exception()


def _restored(analysis: Analysis, redactor: Redactor) -> Analysis:
    """``analysis`` in real names (credentials ``[redacted]``), safe for Slack and email."""
    restore = redactor.restore
    return sanitize_analysis(
        replace(
            analysis,
            summary=restore(analysis.summary),
            root_cause=restore(analysis.root_cause),
            impact=restore(analysis.impact),
            actions=tuple(restore(action) for action in analysis.actions),
        )
    )

"""In-test stand-ins for the analyst's seams: a provider that records, a caller, a gate.

They implement the Protocols of :mod:`ai_sidecar.enrichment.llm.base` in the
simplest way, so the analyst's tests depend on neither the guard nor the
policy (other modules, tested against the same Protocols on their own).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from prometheus_client import CollectorRegistry

from ai_sidecar.enrichment.base import AnalystDeclined, IncidentContext
from ai_sidecar.enrichment.llm.base import LlmProvider, LlmReply, LlmRequest, PolicyDecision
from ai_sidecar.enrichment.llm.metrics import LlmMetrics, create_llm_metrics
from ai_sidecar.models import Analysis, Incident

Answer = str | Callable[[LlmRequest], str]


def valid_answer(**fields: Any) -> str:
    """A schema-valid answer, with ``fields`` overriding the defaults."""
    answer: dict[str, Any] = {
        "summary": "The uplink failed.",
        "root_cause": "The uplink failed.",
        "impact": "One site is offline.",
        "actions": ["Check the optic."],
        "confidence": 0.8,
        "false_positive_likelihood": 0.1,
        "evidence": [],
        "false_positives": [],
    }
    answer.update(fields)
    return json.dumps(answer)


class RecordingProvider:
    """Answers from a script, one entry per call (the last repeats); records every request."""

    def __init__(
        self, *answers: Answer, name: str = "gemini", model: str = "m", local: bool = False
    ) -> None:
        self.name = name
        self.model = model
        self.local = local
        self.requests: list[LlmRequest] = []
        self._answers = answers or (valid_answer(),)

    async def complete(self, request: LlmRequest) -> LlmReply:
        self.requests.append(request)
        answer = self._answers[min(len(self.requests), len(self._answers)) - 1]
        text = answer(request) if callable(answer) else answer
        return LlmReply(text, self.name, self.model, input_tokens=10, output_tokens=5)

    async def close(self) -> None:
        return None

    def sent(self) -> str:
        """Everything the provider was given, system and user, as one text."""
        return "\n".join(f"{r.system}\n{r.user}" for r in self.requests)


class PassingCaller:
    """A guard that always calls through, or declines with ``decline`` (reason, detail)."""

    def __init__(self, decline: tuple[str, str] | None = None) -> None:
        self.invalid: list[str] = []
        self._decline = decline

    async def call(
        self,
        provider: LlmProvider,
        request: LlmRequest,
        *,
        incident_id: str,
        check: Callable[[LlmReply], object] | None = None,
    ) -> LlmReply:
        if self._decline is not None:
            raise AnalystDeclined(*self._decline)
        return await provider.complete(request)

    def invalid_answer(self, provider: LlmProvider, incident_id: str) -> None:
        self.invalid.append(incident_id)


class FixedGate:
    """A policy that always decides ``decision``; records what it is asked to remember."""

    def __init__(self, decision: PolicyDecision | None = None) -> None:
        self.decision = decision or PolicyDecision(True, "new_p1", "new at P1")
        self.remembered: list[tuple[Incident, Analysis, str]] = []

    def decide(self, incident: Incident, context: IncidentContext, analyst: str) -> PolicyDecision:
        return self.decision

    def remember(
        self, incident: Incident, analysis: Analysis, redacted_answer: str, language: str = "en"
    ) -> None:
        self.remembered.append((incident, analysis, redacted_answer))


class DraftAnalyst:
    """A local analyst with a fixed draft."""

    name = "local"

    def __init__(self, draft: Analysis) -> None:
        self.draft = draft
        self.asked = 0

    async def analyse(self, incident: Incident, context: IncidentContext) -> Analysis:
        self.asked += 1
        return replace(self.draft)


def llm_metrics() -> tuple[LlmMetrics, CollectorRegistry]:
    registry = CollectorRegistry()
    return create_llm_metrics(registry), registry


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A counter's value, 0 when the series does not exist yet."""
    return registry.get_sample_value(name, labels) or 0.0

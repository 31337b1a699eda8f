"""The LLM provider seam: one request in, one reply out, whichever vendor answers.

A provider (``gemini.py``, ``anthropic.py``, ``openai.py`` beside this file)
turns an :class:`LlmRequest` into its vendor's REST call through the vendor's
SDK, and the answer back into an :class:`LlmReply`. Everything around the call
is provider-independent and lives elsewhere in this package: the prompt and its
redaction, the guard (kill switch, allow-list, budget, rate limit, retries,
circuit breaker, time box, audit), validation of the answer against the schema,
and the policy that decides whether to call at all.

Providers translate their SDK's failures into the errors below, so the guard
retries and counts them the same way for every vendor. An error's text never
holds the API key or the request URL's query (SDK errors can quote either).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from ai_sidecar.enrichment.base import IncidentContext
from ai_sidecar.models import Analysis, Incident

# See LlmRequest.answer_limit.
CHARS_PER_TOKEN = 32


@dataclass(frozen=True, slots=True)
class LlmRequest:
    """What is sent: the instructions, the (already redacted and fenced) incident, the schema.

    ``system`` holds the instructions the model must follow; ``user`` the
    incident as data. ``schema`` is the JSON schema the answer must match
    (providers send it as structured output where the vendor supports it).
    """

    system: str
    user: str
    schema: Mapping[str, Any]
    max_output_tokens: int = 1024

    @property
    def answer_limit(self) -> int:
        """The most characters an answer to this request may hold.

        Eight times a tokenizer's usual four characters per token of
        ``max_output_tokens``, so no answer a model wrote within its limit is
        refused (pretty-printed JSON, long names). A longer one came from no
        model that kept the limit (a proxy, a broken or hostile endpoint): it
        is refused unread, since reading megabytes of it (the JSON, then the
        language check) holds the worker's event loop for seconds, and the
        audit keeps only this much of it.
        """
        return self.max_output_tokens * CHARS_PER_TOKEN


@dataclass(frozen=True, slots=True)
class LlmReply:
    """What came back: the answer's text (JSON expected) and what it cost in tokens."""

    text: str
    provider: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    # The vendor's own reason the answer ended (``STOP``, ``end_turn``, ``length``...).
    finish_reason: str = ""


class LlmProvider(Protocol):
    """One vendor's model behind its SDK.

    ``name`` is the provider (``gemini``, ``anthropic``, ``openai``) and
    ``model`` the configured model; both label metrics and audit records.
    ``complete`` makes exactly one attempt (retries belong to the guard) and
    raises one of the errors below on failure; a reply whose text is not the
    schema's JSON is returned as it is, for validation to judge.
    ``local`` is True for a provider whose server the operator runs (Ollama,
    vLLM on a private address): only then may redaction be turned off.
    """

    name: str
    model: str
    local: bool

    async def complete(self, request: LlmRequest) -> LlmReply: ...

    async def close(self) -> None: ...


class LlmError(Exception):
    """A call that gave no answer. The message is safe to log and to show."""


class LlmRateLimited(LlmError):
    """The vendor answered 429; ``retry_after`` in seconds when it said how long to wait."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LlmUnavailable(LlmError):
    """A 5xx answer, a refused or reset connection: worth retrying later."""


class LlmTimedOut(LlmError):
    """No answer within the provider's time box."""


class LlmRejected(LlmError):
    """A 4xx other than 429 (bad key, unknown model, request too large): retrying will not help."""


@dataclass(frozen=True, slots=True)
class Pricing:
    """Estimated cost in US dollars per million tokens, from the config."""

    input_per_million: float = 0.0
    output_per_million: float = 0.0

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (
            input_tokens * self.input_per_million + output_tokens * self.output_per_million
        ) / 1_000_000


Outcome = Literal[
    "ok",
    "invalid",
    "rate_limited",
    "unavailable",
    "timeout",
    "rejected",
    "error",
]


@dataclass(frozen=True, slots=True)
class LlmExchange:
    """One call as the audit keeps it: what was sent (redacted), what came back, what it cost.

    ``prompt`` is the system and user text exactly as sent, after redaction;
    ``answer`` the reply's text ("" when none came). ``outcome`` is ``ok`` for
    an answer that passed validation, ``invalid`` for one that did not, else
    the error class. ``cost`` is the estimate from the configured price.
    """

    incident_id: str
    at: datetime
    provider: str
    model: str
    prompt: str
    answer: str
    input_tokens: int
    output_tokens: int
    cost: float
    latency: float
    outcome: Outcome


class LlmAudit(Protocol):
    """Where exchanges are kept (the store) for ``llm.audit_retention``."""

    async def record(self, exchange: LlmExchange) -> None: ...


class LlmCaller(Protocol):
    """The guard around every call (``guard.py``): the only way an analyst reaches a provider.

    ``call`` applies the kill switch, the model allow-list, the budget, the
    rate limit, retries and the circuit breaker within the configured time
    box, records each attempt in the audit, and raises
    :class:`~ai_sidecar.enrichment.base.AnalystDeclined` when no answer came.
    ``check`` is the caller's validation of an answer: one it raises on is
    kept in the audit as ``invalid`` (and still returned, for the caller to
    act on). ``invalid_answer`` is told when an answer failed validation.
    """

    async def call(
        self,
        provider: LlmProvider,
        request: LlmRequest,
        *,
        incident_id: str,
        check: Callable[[LlmReply], object] | None = None,
    ) -> LlmReply: ...

    def invalid_answer(self, provider: LlmProvider, incident_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """Whether an incident is worth a call, and what answers it if not.

    ``call`` True: ask the LLM. Otherwise ``previous`` (the incident's own
    last LLM analysis: nothing material changed) or ``cached_answer`` (a
    similar incident's answer, still redacted: restore it with this incident's
    pseudonyms) answers; with neither, the analyst declines with ``reason``
    (a short token: ``low_priority``, ``repeat``...) and ``detail`` (words).
    """

    call: bool
    reason: str
    detail: str
    previous: Analysis | None = None
    cached_answer: str | None = None
    # A call deferred, not refused: ask again after this many seconds.
    retry_after: float | None = None


class LlmGate(Protocol):
    """The hybrid policy (``policy.py``): which incidents are worth a call."""

    def decide(
        self, incident: Incident, context: IncidentContext, analyst: str
    ) -> PolicyDecision: ...

    def remember(
        self, incident: Incident, analysis: Analysis, redacted_answer: str, language: str = ...
    ) -> None:
        """Keep the answer (in ``language``) for repeats and similar incidents."""

"""LLM analysts: providers behind one seam, and what keeps their use safe and cheap.

See :mod:`ai_sidecar.enrichment.llm.base` for the provider seam. The rest of
the package (prompt, redaction, validation, guard, policy, audit) builds on it.
"""

from ai_sidecar.enrichment.llm.base import (
    LlmAudit,
    LlmCaller,
    LlmError,
    LlmExchange,
    LlmGate,
    LlmProvider,
    LlmRateLimited,
    LlmRejected,
    LlmReply,
    LlmRequest,
    LlmTimedOut,
    LlmUnavailable,
    PolicyDecision,
    Pricing,
)

__all__ = [
    "LlmAudit",
    "LlmCaller",
    "LlmError",
    "LlmExchange",
    "LlmGate",
    "LlmProvider",
    "LlmRateLimited",
    "LlmRejected",
    "LlmReply",
    "LlmRequest",
    "LlmTimedOut",
    "LlmUnavailable",
    "PolicyDecision",
    "Pricing",
]

"""LLM analysts: providers behind one seam, and what keeps their use safe and cheap.

See :mod:`ai_sidecar.enrichment.llm.base` for the provider seam. The rest of
the package (prompt, redaction, validation, guard, policy, audit) builds on it.
"""

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
    Pricing,
)

__all__ = [
    "LlmAudit",
    "LlmError",
    "LlmExchange",
    "LlmProvider",
    "LlmRateLimited",
    "LlmRejected",
    "LlmReply",
    "LlmRequest",
    "LlmTimedOut",
    "LlmUnavailable",
    "Pricing",
]

"""The console's marker for messages defined in one place and translated where shown."""

from __future__ import annotations


def N_(message: str) -> str:
    """``message`` unchanged: marks it for the "console" catalogue (ai_sidecar.i18n)."""
    return message


# Role names as the header shows them.
ROLE_NAMES = (N_("viewer"), N_("operator"))

# Why an analyst did not answer (models.SkipReason), as the incident page says it.
SKIP_REASONS = {
    "error": N_("error"),
    "timeout": N_("timeout"),
    "declined": N_("declined"),
    "pending": N_("pending"),
}

"""The console's marker for messages defined in one place and translated where shown."""

from __future__ import annotations


def N_(message: str) -> str:
    """``message`` unchanged: marks it for the "console" catalogue (ai_sidecar.i18n)."""
    return message


# Role names as the header shows them.
ROLE_NAMES = (N_("viewer"), N_("operator"))

# What an error page says of aiohttp's own refusals (an unknown address, a method a
# route does not take, a body over the limit), whose texts are English and for
# developers ("404: Not Found", "Maximum request body size 16384 exceeded.").
REFUSALS = {
    400: N_("the request could not be understood"),
    403: N_("this page is not open to you"),
    404: N_("there is no page at this address"),
    405: N_("this address does not answer that kind of request"),
    413: N_("the request is larger than this page accepts"),
}
REFUSED = N_("the request was refused")

# Why an analyst did not answer (models.SkipReason), as the incident page says it.
SKIP_REASONS = {
    "error": N_("error"),
    "timeout": N_("timeout"),
    "declined": N_("declined"),
    "pending": N_("pending"),
}

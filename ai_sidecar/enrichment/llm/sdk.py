"""What the three SDK-backed providers share: one time-boxed attempt, failures in the seam's terms.

Each provider (``gemini.py``, ``anthropic.py``, ``openai.py``) is an
:class:`SdkProvider` that describes its SDK's failures once
(:class:`SdkFailures`: the HTTP error class and how to read its status, words
and requested wait; the timeout and connection classes) and makes every call
inside :meth:`SdkProvider.attempt`. So a 429 is :class:`LlmRateLimited` (with
the wait the vendor asked for), a 5xx or a failed connection
:class:`LlmUnavailable`, no answer in time :class:`LlmTimedOut` and any other
4xx :class:`LlmRejected`, whichever SDK raised it. Vendor messages pass
through :func:`scrub` first: a vendor may quote the key it refused, and the
message is logged, counted and stored in the audit.

The SDK exceptions themselves are never chained (``raise ... from None``):
their text and attributes hold request objects, headers and bodies."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import ModuleType
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from ai_sidecar.enrichment.llm.base import (
    LlmError,
    LlmRateLimited,
    LlmRejected,
    LlmReply,
    LlmTimedOut,
    LlmUnavailable,
)

T = TypeVar("T")

# Vendor messages are shown to operators; a page of HTML from a proxy is not.
MAX_MESSAGE = 300
# Shaped like an OpenAI or Anthropic key (sk-, sk-ant-) or a Google key or token:
# hidden whether or not it is ours.
_TOKEN_LIKE = re.compile(r"\b(?:sk-|AIza|ya29\.)[A-Za-z0-9_\-.]{8,}")


def scrub(text: str, secret: str) -> str:
    """``text`` without ``secret`` (nor anything shaped like a vendor key), one line, capped."""
    if secret:
        text = text.replace(secret, "<secret>")
    text = _TOKEN_LIKE.sub("<secret>", text)
    text = " ".join(text.split())
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 1] + "…"
    return text


def retry_after_seconds(
    headers: Mapping[str, str] | None, *, now: datetime | None = None
) -> float | None:
    """The wait a ``Retry-After`` header asks for: delay-seconds or an HTTP date (RFC 9110)."""
    if not headers:
        return None
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


def status_error(
    provider: str,
    status: int,
    message: str,
    *,
    secret: str,
    retry_after: float | None = None,
) -> LlmError:
    """The seam's error for an HTTP failure ``status`` (the vendor's ``message`` scrubbed)."""
    text = f"{provider}: HTTP {status}: {scrub(message, secret) or 'no message'}"
    if status == 429:
        return LlmRateLimited(text, retry_after)
    if status >= 500:
        return LlmUnavailable(text)
    return LlmRejected(text)


def unreachable(provider: str, base_url: str, exc: BaseException) -> LlmUnavailable:
    """A refused, reset or failed connection, named by host (never the full URL)."""
    host = urlsplit(base_url).netloc or base_url
    return LlmUnavailable(f"{provider}: cannot reach {host}: {type(exc).__name__}")


def timed_out(provider: str, seconds: float) -> LlmTimedOut:
    return LlmTimedOut(f"{provider}: no answer within {seconds:g}s")


@dataclass(frozen=True, slots=True)
class HttpFailure:
    """An error answer as the seam needs it: status, the vendor's words, the wait it asked for."""

    status: int
    message: str
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class SdkFailures:
    """How one SDK reports failures: the class of an HTTP error answer and how to read it,
    and its timeout and connection exception classes."""

    http: type[Exception]
    describe: Callable[[Any], HttpFailure]
    timeouts: tuple[type[BaseException], ...] = ()
    connection: tuple[type[BaseException], ...] = ()

    @property
    def timeout_errors(self) -> tuple[type[BaseException], ...]:
        # TimeoutError: the time box, and SDKs (aiohttp) that raise the builtin.
        return (TimeoutError, *self.timeouts)


@asynccontextmanager
async def one_attempt(
    provider: str, failures: SdkFailures, *, seconds: float, secret: str, base_url: str
) -> AsyncIterator[None]:
    """Run one SDK call within ``seconds`` and turn its failures into the seam's errors.

    The time box holds even where an SDK's own timeout does not reach (a
    connection that accepts and never answers).
    """
    try:
        async with asyncio.timeout(seconds):
            yield
    except failures.http as exc:
        failure = failures.describe(exc)
        raise status_error(
            provider,
            failure.status,
            failure.message,
            secret=secret,
            retry_after=failure.retry_after,
        ) from None
    except failures.timeout_errors:
        raise timed_out(provider, seconds) from None
    except failures.connection as exc:
        raise unreachable(provider, base_url, exc) from None


def stainless_failure(exc: Any) -> HttpFailure:
    """An ``APIStatusError`` of the ``anthropic`` or ``openai`` SDK (both generated alike).

    The vendor's words are ``error.message`` in the body; the SDK's own text
    would quote the whole body.
    """
    body = getattr(exc, "body", None)
    error = body.get("error", body) if isinstance(body, Mapping) else None
    message = error.get("message") if isinstance(error, Mapping) else None
    response = getattr(exc, "response", None)
    return HttpFailure(
        status=int(exc.status_code),
        message=str(message) if message else str(getattr(exc, "message", "")),
        retry_after=retry_after_seconds(getattr(response, "headers", None)),
    )


def stainless_failures(sdk: ModuleType) -> SdkFailures:
    """How the ``anthropic`` and ``openai`` SDKs (generated alike) report failures."""
    return SdkFailures(
        http=sdk.APIStatusError,
        describe=stainless_failure,
        timeouts=(sdk.APITimeoutError,),
        connection=(sdk.APIConnectionError,),
    )


class StructuredOutput:
    """Whether a server takes the vendor's structured-output parameter, learned from its 400.

    Older OpenAI-compatible servers (and older Claude models) refuse the
    parameter outright; the provider then asks once more without it, with the
    schema in the instructions, and does so from then on. ``markers`` are
    words the refusal names (``response_format``).
    """

    def __init__(self, bad_request: type[Exception], *markers: str) -> None:
        self.supported = True
        self._bad_request = bad_request
        self._markers = tuple(marker.lower() for marker in markers)

    async def create(self, make: Callable[[bool], Awaitable[T]]) -> T:
        """``make(structured)``, and once more unstructured when the server refuses."""
        structured = self.supported
        try:
            return await make(structured)
        except self._bad_request as exc:
            if not (structured and self.refused(stainless_failure(exc))):
                raise
        return await make(False)

    def refused(self, failure: HttpFailure) -> bool:
        """True (once) when ``failure`` is the server refusing the parameter."""
        if not self.supported or failure.status not in (400, 422):
            return False
        if not any(marker in failure.message.lower() for marker in self._markers):
            return False
        self.supported = False
        return True


class SdkProvider:
    """What the three providers hold alike; each adds its SDK client and ``complete``.

    ``base_url`` None means the vendor's own API (``default_base_url``).
    """

    # An instance attribute for the LlmProvider protocol; subclasses set it once.
    name: str
    default_base_url: ClassVar[str]
    failures: ClassVar[SdkFailures]

    def __init__(
        self, *, api_key: str, model: str, timeout: float, base_url: str | None = None
    ) -> None:
        self.model = model
        # Cloud vendors are never local, whatever proxy base_url names.
        self.local = False
        self._key = api_key
        self._timeout = timeout
        self._configured_url = base_url
        self._base_url = base_url or self.default_base_url

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self._base_url!r})"

    def attempt(self) -> AbstractAsyncContextManager[None]:
        """The time box and error translation around one SDK call."""
        return one_attempt(
            self.name,
            self.failures,
            seconds=self._timeout,
            secret=self._key,
            base_url=self._base_url,
        )

    def reply(self, text: str, input_tokens: int, output_tokens: int, finish: str) -> LlmReply:
        return LlmReply(
            text=text,
            provider=self.name,
            model=self.model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            finish_reason=finish,
        )


def json_instruction(schema: Mapping[str, Any]) -> str:
    """The words that ask for the schema's JSON where the API cannot enforce it."""
    return (
        "Answer with one JSON object and nothing else: no prose, no Markdown code fence. "
        "It must match this JSON schema:\n" + json.dumps(schema, sort_keys=True)
    )


def is_private_url(base_url: str | None) -> bool:
    """Whether ``base_url`` names a loopback or private address (a server the operator runs).

    Host names other than ``localhost`` count as remote: resolving them here
    would make the answer depend on DNS at start-up, and a wrong "local" turns
    redaction off.
    """
    if not base_url:
        return False
    host = urlsplit(base_url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private

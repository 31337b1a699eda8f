"""Gemini through ``google-genai``: structured output against the request's JSON schema.

The answer's shape is enforced by the API (``responseMimeType`` JSON with
``responseJsonSchema``); the instructions go in ``systemInstruction``. The SDK
makes exactly one attempt: its retry options are set to a single attempt,
which also turns off its silent reconnect after a failed connection (the
guard owns retries, so it can count them and honour the budget).

A 429 carries the wait either in a ``Retry-After`` header or, as Google APIs
do, in a ``google.rpc.RetryInfo`` detail of the error body (``"retryDelay":
"17s"``); both are read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import aiohttp
from google import genai
from google.genai import errors, types

from ai_sidecar.enrichment.llm.base import LlmReply, LlmRequest
from ai_sidecar.enrichment.llm.sdk import (
    HttpFailure,
    SdkFailures,
    SdkProvider,
    retry_after_seconds,
)

_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def _failure(exc: errors.APIError) -> HttpFailure:
    retry_after = retry_after_seconds(getattr(exc.response, "headers", None))
    if retry_after is None:
        retry_after = retry_delay(exc.details)
    message = f"{exc.status or ''} {exc.message or ''}".strip()
    return HttpFailure(exc.code, message, retry_after)


FAILURES = SdkFailures(
    http=errors.APIError, describe=_failure, connection=(aiohttp.ClientError, OSError)
)


def retry_delay(body: Any) -> float | None:
    """The ``retryDelay`` of a ``google.rpc.RetryInfo`` detail in an error body, in seconds."""
    if isinstance(body, Mapping):
        body = body.get("error", body)
    details = body.get("details") if isinstance(body, Mapping) else None
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, Mapping) and detail.get("@type") == _RETRY_INFO:
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


class GeminiProvider(SdkProvider):
    """Google's Gemini models (``gemini-2.5-flash`` fits the free tier)."""

    name = "gemini"
    default_base_url = "https://generativelanguage.googleapis.com"
    failures = FAILURES

    def __init__(
        self, *, api_key: str, model: str, timeout: float, base_url: str | None = None
    ) -> None:
        super().__init__(api_key=api_key, model=model, timeout=timeout, base_url=base_url)
        self._session: aiohttp.ClientSession | None = None
        self._client: genai.Client | None = None

    async def complete(self, request: LlmRequest) -> LlmReply:
        config = types.GenerateContentConfig(
            system_instruction=request.system,
            response_mime_type="application/json",
            response_json_schema=dict(request.schema),
            max_output_tokens=request.max_output_tokens,
        )
        async with self.attempt():
            response = await self._connected().aio.models.generate_content(
                model=self.model, contents=request.user, config=config
            )
        return self._reply(response)

    async def close(self) -> None:
        client, session = self._client, self._session
        self._client = self._session = None
        if client is not None:
            await client.aio.aclose()
            client.close()
        if session is not None:
            await session.close()

    def _connected(self) -> genai.Client:
        """The SDK client, made on first use inside the event loop that uses it.

        It gets our own aiohttp session: left to itself the SDK makes one from
        a ClientSession subclass, which aiohttp deprecates with a warning.
        """
        if self._client is None:
            self._session = aiohttp.ClientSession()
            options = types.HttpOptions(
                timeout=max(1, round(self._timeout * 1000)),
                retry_options=types.HttpRetryOptions(attempts=1),
                aiohttp_client=self._session,
            )
            if self._configured_url:
                options.base_url = self._configured_url
            self._client = genai.Client(api_key=self._key, http_options=options)
        return self._client

    def _reply(self, response: types.GenerateContentResponse) -> LlmReply:
        text = ""
        finish = ""
        if response.candidates:
            candidate = response.candidates[0]
            parts = candidate.content.parts if candidate.content else None
            # Thought summaries are not the answer.
            text = "".join(p.text for p in parts or () if p.text and not p.thought)
            finish = candidate.finish_reason.value if candidate.finish_reason else ""
        elif response.prompt_feedback and response.prompt_feedback.block_reason:
            finish = response.prompt_feedback.block_reason.value
        usage = response.usage_metadata
        input_tokens = (usage.prompt_token_count or 0) if usage else 0
        # Thinking tokens are billed as output.
        output_tokens = (
            (usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0) if usage else 0
        )
        return self.reply(text, input_tokens, output_tokens, finish)

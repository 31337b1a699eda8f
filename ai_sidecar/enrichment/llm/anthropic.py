"""Claude through the ``anthropic`` SDK: the Messages API, JSON back for the caller to validate.

The schema is in the system prompt with a JSON-only instruction, and also
sent as structured output (``output_config.format``, in the strict subset
the API accepts: the SDK's ``transform_schema`` moves unsupported constraints
into descriptions). A model that refuses structured output with a 400 is
asked again without it, and never with it again. No assistant prefill: the
newer models refuse it, and structured output makes it unnecessary.
"""

from __future__ import annotations

import anthropic
from anthropic import Omit
from anthropic.types import Message, OutputConfigParam

from ai_sidecar.enrichment.llm.base import LlmReply, LlmRequest
from ai_sidecar.enrichment.llm.sdk import (
    SdkFailures,
    StructuredOutput,
    json_instruction,
    one_attempt,
    stainless_failure,
)

NAME = "anthropic"
DEFAULT_BASE_URL = "https://api.anthropic.com"
FAILURES = SdkFailures(
    http=anthropic.APIStatusError,
    describe=stainless_failure,
    timeouts=(anthropic.APITimeoutError,),
    connection=(anthropic.APIConnectionError,),
)


class AnthropicProvider:
    """Anthropic's Claude models."""

    name = NAME
    local = False

    def __init__(
        self, *, api_key: str, model: str, timeout: float, base_url: str | None = None
    ) -> None:
        self.model = model
        self._key = api_key
        self._timeout = timeout
        self._base_url = base_url or DEFAULT_BASE_URL
        self._structured = StructuredOutput("output_config", "output_format", "structured output")
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=self._base_url, max_retries=0, timeout=timeout
        )

    def __repr__(self) -> str:
        return f"AnthropicProvider(model={self.model!r}, base_url={self._base_url!r})"

    async def complete(self, request: LlmRequest) -> LlmReply:
        structured = self._structured.supported
        async with one_attempt(
            NAME, FAILURES, seconds=self._timeout, secret=self._key, base_url=self._base_url
        ):
            try:
                message = await self._create(request, structured=structured)
            except anthropic.BadRequestError as exc:
                if not (structured and self._structured.refused(stainless_failure(exc))):
                    raise
                message = await self._create(request, structured=False)
        text = "".join(block.text for block in message.content if block.type == "text")
        return LlmReply(
            text=text,
            provider=NAME,
            model=self.model,
            input_tokens=message.usage.input_tokens,
            output_tokens=message.usage.output_tokens,
            finish_reason=message.stop_reason or "",
        )

    async def close(self) -> None:
        await self._client.close()

    async def _create(self, request: LlmRequest, *, structured: bool) -> Message:
        output: OutputConfigParam | Omit = anthropic.omit
        if structured:
            schema = anthropic.transform_schema(dict(request.schema))
            output = {"format": {"type": "json_schema", "schema": schema}}
        return await self._client.messages.create(
            model=self.model,
            max_tokens=request.max_output_tokens,
            system=f"{request.system}\n\n{json_instruction(request.schema)}",
            messages=[{"role": "user", "content": request.user}],
            output_config=output,
        )

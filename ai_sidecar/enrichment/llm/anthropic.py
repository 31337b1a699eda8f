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
    SdkProvider,
    StructuredOutput,
    json_instruction,
    stainless_failures,
)


class AnthropicProvider(SdkProvider):
    """Anthropic's Claude models."""

    name = "anthropic"
    default_base_url = "https://api.anthropic.com"
    failures = stainless_failures(anthropic)

    def __init__(
        self, *, api_key: str, model: str, timeout: float, base_url: str | None = None
    ) -> None:
        super().__init__(api_key=api_key, model=model, timeout=timeout, base_url=base_url)
        self._structured = StructuredOutput(
            anthropic.BadRequestError, "output_config", "output_format", "structured output"
        )
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=self._base_url, max_retries=0, timeout=timeout
        )

    async def complete(self, request: LlmRequest) -> LlmReply:
        async def create(structured: bool) -> Message:
            return await self._create(request, structured=structured)

        async with self.attempt():
            message = await self._structured.create(create)
        text = "".join(block.text for block in message.content if block.type == "text")
        usage = message.usage
        return self.reply(text, usage.input_tokens, usage.output_tokens, message.stop_reason or "")

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

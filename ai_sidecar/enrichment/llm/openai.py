"""OpenAI-compatible chat completions through the ``openai`` SDK: OpenAI, Ollama, vLLM, LM Studio.

The answer's shape is asked for with ``response_format`` ``json_schema``. A
server that refuses it with a 400 naming ``response_format`` (older Ollama
and vLLM builds) is asked again in JSON mode (``json_object``) with the schema
in the instructions, and from then on only in JSON mode.

A server on a loopback or private address is one the operator runs, so the
provider is ``local`` (redaction may be turned off for it) and needs no key.
"""

from __future__ import annotations

import openai
from openai import Omit
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
from openai.types.chat.completion_create_params import ResponseFormat

from ai_sidecar.enrichment.llm.base import LlmReply, LlmRequest
from ai_sidecar.enrichment.llm.sdk import (
    SdkProvider,
    StructuredOutput,
    is_private_url,
    json_instruction,
    stainless_failures,
)

SCHEMA_NAME = "analysis"
# What Ollama's own documentation passes as the key it does not check.
NO_KEY = "ollama"


class OpenAIProvider(SdkProvider):
    """OpenAI's models, or any server that speaks its Chat Completions API."""

    name = "openai"
    default_base_url = "https://api.openai.com/v1"
    failures = stainless_failures(openai)

    def __init__(
        self, *, api_key: str, model: str, timeout: float, base_url: str | None = None
    ) -> None:
        super().__init__(api_key=api_key, model=model, timeout=timeout, base_url=base_url)
        self.local = is_private_url(base_url)
        # OpenAI's own newer models take only max_completion_tokens; compatible
        # servers have long known max_tokens and not always the newer name.
        self._openai_itself = base_url is None
        self._structured = StructuredOutput(
            openai.BadRequestError, "response_format", "json_schema"
        )
        self._client = openai.AsyncOpenAI(
            # The SDK insists on a key; a keyless local server ignores this one.
            api_key=api_key or NO_KEY,
            base_url=self._base_url,
            max_retries=0,
            timeout=timeout,
        )

    async def complete(self, request: LlmRequest) -> LlmReply:
        async def create(structured: bool) -> ChatCompletion:
            return await self._create(request, structured=structured)

        async with self.attempt():
            completion = await self._structured.create(create)
        text, finish = "", ""
        if completion.choices:
            choice = completion.choices[0]
            text = choice.message.content or ""
            finish = choice.finish_reason or ""
        usage = completion.usage
        if usage is None:
            return self.reply(text, 0, 0, finish)
        return self.reply(text, usage.prompt_tokens, usage.completion_tokens, finish)

    async def close(self) -> None:
        await self._client.close()

    async def _create(self, request: LlmRequest, *, structured: bool) -> ChatCompletion:
        system = request.system
        response_format: ResponseFormat
        if structured:
            response_format = {
                "type": "json_schema",
                "json_schema": {
                    "name": SCHEMA_NAME,
                    "schema": dict(request.schema),
                    # A schema outside the strict subset is refused with a 400
                    # naming response_format: JSON mode then takes over.
                    "strict": True,
                },
            }
        else:
            # JSON mode only promises JSON; the schema has to be in the words
            # (and OpenAI refuses JSON mode unless the messages say "JSON").
            system = f"{system}\n\n{json_instruction(request.schema)}"
            response_format = {"type": "json_object"}
        messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": system},
            {"role": "user", "content": request.user},
        ]
        limit: int | Omit = request.max_output_tokens
        return await self._client.chat.completions.create(
            model=self.model,
            messages=messages,
            response_format=response_format,
            max_completion_tokens=limit if self._openai_itself else openai.omit,
            max_tokens=openai.omit if self._openai_itself else limit,
        )

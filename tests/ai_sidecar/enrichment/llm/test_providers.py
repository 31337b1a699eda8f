"""The three providers through their real SDKs, against local servers that speak each vendor's API.

Every failure a vendor can answer with must come out as the seam's error (the
guard retries and counts by class), and the API key must travel only in the
header the vendor reads: never in the URL, the body, an error or a repr.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from google.genai import types

from ai_sidecar.config import LlmConfig
from ai_sidecar.enrichment.llm.anthropic import AnthropicProvider
from ai_sidecar.enrichment.llm.base import (
    LlmError,
    LlmProvider,
    LlmRateLimited,
    LlmRejected,
    LlmRequest,
    LlmTimedOut,
    LlmUnavailable,
)
from ai_sidecar.enrichment.llm.gemini import GeminiProvider, retry_delay
from ai_sidecar.enrichment.llm.openai import OpenAIProvider
from ai_sidecar.enrichment.llm.providers import build_provider
from ai_sidecar.enrichment.llm.sdk import is_private_url, retry_after_seconds, scrub
from ai_sidecar.errors import ConfigError
from scripts.localstack import free_port
from tests.peers.llm import (
    Answer,
    FakeAnthropic,
    FakeGemini,
    FakeLlmServer,
    FakeOpenAI,
    Hang,
    InvalidJson,
    RateLimited,
    Received,
    Rejected,
    ServerError,
    thinking_budget,
)

# Shaped like no vendor's key, so only the exact-match scrub can hide it.
KEY = "canary-key-0b7e5d1f"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"summary": {"type": "string"}, "confidence": {"type": "number"}},
    "required": ["summary", "confidence"],
}
ANSWER = '{"summary": "core-sw1 uplink down", "confidence": 0.8}'
REQUEST = LlmRequest(
    system="You explain network incidents.",
    user="<incident>LinkDown on host-3</incident>",
    schema=SCHEMA,
    max_output_tokens=777,
)


@dataclass(frozen=True, slots=True)
class Vendor:
    name: str
    fake: type[FakeLlmServer]
    provider: Callable[..., LlmProvider]
    model: str
    # Where the key goes, as the fake records it.
    key_header: str
    finish_reason: str
    # The schema as the request carried it.
    sent_schema: Callable[[Any], Any]
    sent_limit: Callable[[Any], Any]


VENDORS = [
    Vendor(
        "gemini",
        FakeGemini,
        GeminiProvider,
        "gemini-2.5-flash",
        "x-goog-api-key",
        "STOP",
        lambda body: body["generationConfig"]["responseJsonSchema"],
        # The answer's share: thinking has a budget of its own on top.
        lambda body: body["generationConfig"]["maxOutputTokens"] - (thinking_budget(body) or 0),
    ),
    Vendor(
        "anthropic",
        FakeAnthropic,
        AnthropicProvider,
        "claude-sonnet-4-5",
        "authorization",
        "end_turn",
        lambda body: body["output_config"]["format"]["schema"],
        lambda body: body["max_tokens"],
    ),
    Vendor(
        "openai",
        FakeOpenAI,
        OpenAIProvider,
        "gpt-4o-mini",
        "authorization",
        "stop",
        lambda body: body["response_format"]["json_schema"]["schema"],
        lambda body: body["max_tokens"],
    ),
]


@dataclass
class Setup:
    vendor: Vendor
    fake: FakeLlmServer
    provider: LlmProvider

    def only_request(self) -> Received:
        assert len(self.fake.requests) == 1, self.fake.requests
        return self.fake.requests[0]


@pytest.fixture(params=VENDORS, ids=lambda vendor: vendor.name)
async def setup(request: pytest.FixtureRequest) -> AsyncIterator[Setup]:
    vendor: Vendor = request.param
    async with vendor.fake() as fake:
        provider = vendor.provider(
            api_key=KEY, model=vendor.model, timeout=5.0, base_url=fake.base_url
        )
        try:
            yield Setup(vendor, fake, provider)
        finally:
            await provider.close()


async def failure(setup: Setup) -> LlmError:
    with pytest.raises(LlmError) as caught:
        await setup.provider.complete(REQUEST)
    return caught.value


def assert_keyless(error: BaseException) -> None:
    for text in (str(error), repr(error), "".join(traceback.format_exception(error))):
        assert KEY not in text


# -- answers ---------------------------------------------------------------------------


async def test_a_valid_answer_comes_back_with_its_tokens(setup: Setup) -> None:
    setup.fake.script(Answer(ANSWER, input_tokens=321, output_tokens=54))

    reply = await setup.provider.complete(REQUEST)

    assert reply.text == ANSWER
    assert (reply.input_tokens, reply.output_tokens) == (321, 54)
    assert (reply.provider, reply.model) == (setup.vendor.name, setup.vendor.model)
    assert reply.finish_reason == setup.vendor.finish_reason
    sent = setup.only_request()
    assert sent.model == setup.vendor.model
    assert REQUEST.system in sent.prompt
    assert REQUEST.user in sent.prompt
    assert setup.vendor.sent_limit(sent.body) == 777
    # The API enforces the schema (Anthropic's in its strict subset).
    sent_schema = setup.vendor.sent_schema(sent.body)
    assert sent_schema["required"] == SCHEMA["required"]
    assert sent_schema["properties"].keys() == SCHEMA["properties"].keys()


async def test_invalid_json_is_returned_as_text_for_validation_to_judge(setup: Setup) -> None:
    setup.fake.script(InvalidJson())

    reply = await setup.provider.complete(REQUEST)

    assert reply.text == InvalidJson().text


async def test_the_key_travels_only_in_the_header_the_vendor_reads(setup: Setup) -> None:
    setup.fake.script(Answer(ANSWER))

    await setup.provider.complete(REQUEST)

    sent = setup.only_request()
    assert sent.where(KEY) == [f"header {setup.vendor.key_header}"]
    assert setup.fake.credential(sent) == KEY
    assert KEY not in repr(setup.provider)


# -- failures ----------------------------------------------------------------------------


async def test_429_is_rate_limited_with_the_wait_the_vendor_asked_for(setup: Setup) -> None:
    setup.fake.script(RateLimited(retry_after=2.5))

    error = await failure(setup)

    assert isinstance(error, LlmRateLimited)
    assert error.retry_after == 2.5
    assert "429" in str(error)


async def test_429_without_a_hint_leaves_the_wait_to_the_guard(setup: Setup) -> None:
    setup.fake.script(RateLimited(retry_after=None))

    error = await failure(setup)

    assert isinstance(error, LlmRateLimited)
    assert error.retry_after is None


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_unavailable(setup: Setup, status: int) -> None:
    setup.fake.script(ServerError(status))

    error = await failure(setup)

    assert isinstance(error, LlmUnavailable)
    assert f"HTTP {status}" in str(error)
    assert len(setup.fake.requests) == 1  # no SDK retry: the guard owns retries


async def test_a_hung_request_times_out_within_the_time_box() -> None:
    for vendor in VENDORS:
        async with vendor.fake() as fake:
            fake.script(Hang(120))
            # Long enough for the request to reach the fake on a loaded machine.
            provider = vendor.provider(
                api_key=KEY, model=vendor.model, timeout=3, base_url=fake.base_url
            )
            started = time.monotonic()
            with pytest.raises(LlmTimedOut, match=r"within 3(\.0)?s"):
                await provider.complete(REQUEST)
            await provider.close()
            # Given up at the time box: not before it, and long before the fake answers.
            assert 3 - 0.05 <= time.monotonic() - started < 15, vendor.name
            assert len(fake.requests) == 1, vendor.name


async def test_401_is_rejected_and_the_quoted_key_is_scrubbed(setup: Setup) -> None:
    # The fake's 401 quotes the key it was given, as some vendors do.
    setup.fake.script(Rejected(401))

    error = await failure(setup)

    assert isinstance(error, LlmRejected)
    assert "<secret>" in str(error)
    assert_keyless(error)
    assert error.__cause__ is None
    assert error.__suppress_context__


@pytest.mark.parametrize("status", [400, 403, 404])
async def test_other_client_errors_are_rejected(setup: Setup, status: int) -> None:
    setup.fake.script(Rejected(status, message=f"refused with key {KEY}"))

    error = await failure(setup)

    assert isinstance(error, LlmRejected)
    assert f"HTTP {status}" in str(error)
    assert_keyless(error)


async def test_a_closed_port_is_unavailable_and_named_by_host_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    # Connects to the closed port, counted where every SDK's transport makes them:
    # a retry shows here whatever its backoff, which no clock bound could tell
    # apart from a loaded machine's pauses.
    attempts: list[Any] = []
    connect = socket.socket.connect

    def counted(sock: socket.socket, address: Any) -> None:
        if isinstance(address, tuple) and address[:2] == ("127.0.0.1", port):
            attempts.append(address)
        connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", counted)
    for vendor in VENDORS:
        attempts.clear()
        provider = vendor.provider(
            api_key=KEY, model=vendor.model, timeout=5.0, base_url=f"http://127.0.0.1:{port}"
        )
        with pytest.raises(LlmUnavailable, match=f"cannot reach 127.0.0.1:{port}") as caught:
            await provider.complete(REQUEST)
        await provider.close()
        assert len(attempts) == 1, f"{vendor.name} retried the connection"
        assert_keyless(caught.value)
        assert caught.value.__cause__ is None
        assert caught.value.__suppress_context__


async def test_a_dropped_connection_is_unavailable_and_not_retried() -> None:
    connections = 0

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.read(1)
        writer.close()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        for vendor in VENDORS:
            connections = 0
            provider = vendor.provider(
                api_key=KEY, model=vendor.model, timeout=5.0, base_url=f"http://127.0.0.1:{port}"
            )
            with pytest.raises(LlmUnavailable, match=f"cannot reach 127.0.0.1:{port}"):
                await provider.complete(REQUEST)
            await provider.close()
            assert connections == 1, vendor.name
    finally:
        server.close()
        await server.wait_closed()


# -- structured output fallbacks ---------------------------------------------------------


async def test_openai_server_refusing_json_schema_gets_json_mode_from_then_on() -> None:
    async with FakeOpenAI(structured_output=False) as fake:
        fake.script(Answer('{"a": 1}'), Answer('{"a": 2}'))
        provider = OpenAIProvider(api_key="", model="llama3.1", timeout=5.0, base_url=fake.base_url)

        first = await provider.complete(REQUEST)
        second = await provider.complete(REQUEST)
        await provider.close()

    assert (first.text, second.text) == ('{"a": 1}', '{"a": 2}')
    formats = [request.body["response_format"]["type"] for request in fake.requests]
    assert formats == ["json_schema", "json_object", "json_object"]
    # JSON mode enforces no schema, so the instructions carry it.
    assert '"required": ["summary", "confidence"]' in fake.requests[1].prompt
    assert '"required"' not in fake.requests[0].prompt


async def test_openai_400_about_something_else_is_not_retried_in_json_mode() -> None:
    async with FakeOpenAI() as fake:
        fake.script(Rejected(400, "The model `llama9` does not exist."), Answer(ANSWER))
        provider = OpenAIProvider(api_key=KEY, model="llama9", timeout=5.0, base_url=fake.base_url)

        with pytest.raises(LlmRejected, match="does not exist"):
            await provider.complete(REQUEST)
        await provider.complete(REQUEST)
        await provider.close()

    assert [r.body["response_format"]["type"] for r in fake.requests] == ["json_schema"] * 2


async def test_claude_model_refusing_structured_output_is_asked_without_it() -> None:
    async with FakeAnthropic(structured_output=False) as fake:
        fake.script(Answer('{"a": 1}'), Answer('{"a": 2}'))
        provider = AnthropicProvider(
            api_key=KEY, model="claude-3-haiku", timeout=5.0, base_url=fake.base_url
        )

        await provider.complete(REQUEST)
        reply = await provider.complete(REQUEST)
        await provider.close()

    assert reply.text == '{"a": 2}'
    assert ["output_config" in r.body for r in fake.requests] == [True, False, False]
    # Without structured output the schema is in the system prompt (it is there anyway).
    assert all('"required": ["summary", "confidence"]' in r.prompt for r in fake.requests)


# -- details -----------------------------------------------------------------------------


class GeminiBehindAProxy(FakeGemini):
    """A front end that says how long to wait in a Retry-After header, not in the body."""

    retry_after_header = True

    def error_body(self, status: int, message: str, retry_after: float | None) -> dict[str, Any]:
        return super().error_body(status, message, None)


async def test_gemini_honours_a_retry_after_header_too() -> None:
    async with GeminiBehindAProxy() as fake:
        fake.script(RateLimited(retry_after=4))
        provider = GeminiProvider(api_key=KEY, model="m", timeout=5.0, base_url=fake.base_url)
        with pytest.raises(LlmRateLimited) as caught:
            await provider.complete(REQUEST)
        await provider.close()
    assert caught.value.retry_after == 4.0


def test_gemini_reads_the_retry_delay_google_puts_in_the_error_body() -> None:
    body = {
        "error": {
            "code": 429,
            "details": [
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure"},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17.5s"},
            ],
        }
    }
    assert retry_delay(body) == 17.5
    assert retry_delay({"error": {"code": 429}}) is None
    assert retry_delay("not a body") is None


def test_retry_after_takes_seconds_or_an_http_date() -> None:
    now = datetime(2026, 12, 3, 14, 0, 0, tzinfo=UTC)
    assert retry_after_seconds({"Retry-After": "7"}) == 7.0
    assert retry_after_seconds({"retry-after": "Thu, 03 Dec 2026 14:00:30 GMT"}, now=now) == 30.0
    assert retry_after_seconds({"retry-after": "Thu, 03 Dec 2026 13:00:00 GMT"}, now=now) == 0.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_gemini_answer_leaves_out_thoughts_and_bills_them_as_output() -> None:
    provider = GeminiProvider(api_key=KEY, model="gemini-2.5-flash", timeout=5.0)
    response = types.GenerateContentResponse(
        candidates=[
            types.Candidate(
                content=types.Content(
                    parts=[types.Part(text="Let me think", thought=True), types.Part(text=ANSWER)]
                ),
                finish_reason=types.FinishReason.MAX_TOKENS,
            )
        ],
        usage_metadata=types.GenerateContentResponseUsageMetadata(
            prompt_token_count=100, candidates_token_count=20, thoughts_token_count=30
        ),
    )

    reply = provider._reply(response)

    assert (reply.text, reply.finish_reason) == (ANSWER, "MAX_TOKENS")
    assert (reply.input_tokens, reply.output_tokens) == (100, 50)


async def test_gemini_thinking_gets_a_budget_of_its_own_so_the_answer_is_not_starved() -> None:
    # A 2.5 model left to decide thinks past the answer's limit and answers nothing.
    async with FakeGemini(default=Answer(ANSWER, 100, 20), thinking_tokens=5000) as fake:
        provider = GeminiProvider(
            api_key=KEY, model="gemini-2.5-flash", timeout=5.0, base_url=fake.base_url
        )
        try:
            reply = await provider.complete(REQUEST)
        finally:
            await provider.close()
    assert (reply.text, reply.finish_reason) == (ANSWER, "STOP")
    generation = fake.requests[0].body["generationConfig"]
    assert thinking_budget(fake.requests[0].body) == 777
    assert generation["maxOutputTokens"] == 777 + 777
    # Thoughts are billed as output.
    assert (reply.input_tokens, reply.output_tokens) == (100, 20 + 777)


async def test_gemini_model_that_does_not_think_is_asked_without_a_budget_from_then_on() -> None:
    async with FakeGemini(default=Answer(ANSWER), thinking=False) as fake:
        provider = GeminiProvider(
            api_key=KEY, model="gemini-2.0-flash", timeout=5.0, base_url=fake.base_url
        )
        try:
            first = await provider.complete(REQUEST)
            second = await provider.complete(REQUEST)
        finally:
            await provider.close()
    assert first.text == second.text == ANSWER
    sent = [r.body["generationConfig"] for r in fake.requests]
    assert ["thinkingConfig" in g for g in sent] == [True, False, False]
    assert [g["maxOutputTokens"] for g in sent[1:]] == [777, 777]


def test_scrub_hides_the_key_and_anything_shaped_like_a_vendor_key() -> None:
    text = scrub(f"bad key {KEY} (also sk-proj-abcdef123456 and AIzaSyA1234567890)", KEY)
    assert KEY not in text
    assert "sk-proj" not in text
    assert "AIza" not in text
    assert text.count("<secret>") == 3
    assert len(scrub("x" * 5000, KEY)) <= 300


@pytest.mark.parametrize(
    ("base_url", "local"),
    [
        ("http://127.0.0.1:11434/v1", True),
        ("http://localhost:11434/v1", True),
        ("http://[::1]:8000/v1", True),
        ("http://10.1.2.3:8000/v1", True),
        ("http://192.168.1.20:1234/v1", True),
        ("https://api.openai.com/v1", False),
        ("http://8.8.8.8/v1", False),
        ("http://ollama.example.org/v1", False),
        (None, False),
    ],
)
def test_openai_compatible_server_on_a_private_address_is_local(
    base_url: str | None, local: bool
) -> None:
    assert is_private_url(base_url) is local
    assert OpenAIProvider(api_key=KEY, model="m", timeout=1.0, base_url=base_url).local is local


def test_cloud_vendors_are_never_local_even_behind_a_loopback_proxy() -> None:
    for provider in (GeminiProvider, AnthropicProvider):
        assert not provider(
            api_key=KEY, model="m", timeout=1.0, base_url="http://127.0.0.1:1"
        ).local


# -- build_provider ----------------------------------------------------------------------


def llm(**fields: Any) -> LlmConfig:
    return LlmConfig.model_validate({"provider": "gemini", **fields})


async def test_build_provider_reads_the_key_from_the_environment() -> None:
    async with FakeGemini(default=Answer(ANSWER)) as fake:
        provider = build_provider(
            llm(base_url=fake.base_url, timeout="3s"), environ={"GEMINI_API_KEY": KEY}
        )
        assert isinstance(provider, GeminiProvider)
        assert provider.model == "gemini-2.5-flash"
        await provider.complete(REQUEST)
        await provider.close()
    assert fake.requests[0].header("x-goog-api-key") == KEY
    assert fake.requests[0].header("x-server-timeout") == "3"


async def test_build_provider_reads_the_key_from_the_file_named_by_the_file_variable(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "key"
    secret.write_text(KEY + "\n")
    async with FakeAnthropic(default=Answer(ANSWER)) as fake:
        config = llm(provider="anthropic", model="claude-haiku-4-5", base_url=fake.base_url)
        provider = build_provider(config, environ={"ANTHROPIC_API_KEY_FILE": str(secret)})
        assert isinstance(provider, AnthropicProvider)
        await provider.complete(REQUEST)
        await provider.close()
    assert fake.credential(fake.requests[0]) == KEY


def test_build_provider_honours_a_custom_key_variable() -> None:
    config = llm(provider="openai", model="gpt-4o-mini", api_key_env="SCOUT_LLM_KEY")
    provider = build_provider(config, environ={"SCOUT_LLM_KEY": KEY})
    assert isinstance(provider, OpenAIProvider)
    assert not provider.local
    with pytest.raises(ConfigError, match="SCOUT_LLM_KEY is not set"):
        build_provider(config, environ={"OPENAI_API_KEY": KEY})


def test_build_provider_gives_none_when_the_llm_is_off() -> None:
    assert build_provider(llm(provider="none"), environ={"GEMINI_API_KEY": KEY}) is None
    assert build_provider(llm(enabled=False), environ={"GEMINI_API_KEY": KEY}) is None
    # Off means off: no key needed, no error.
    assert build_provider(llm(enabled=False), environ={}) is None


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "GEMINI_API_KEY is not set: set it, or GEMINI_API_KEY_FILE"),
        ({"GEMINI_API_KEY": "  \n"}, "GEMINI_API_KEY is not set"),
        (
            {"GEMINI_API_KEY": KEY, "GEMINI_API_KEY_FILE": "/run/secrets/gemini"},
            "set GEMINI_API_KEY or GEMINI_API_KEY_FILE, not both",
        ),
        ({"GEMINI_API_KEY_FILE": "/nonexistent/gemini"}, "GEMINI_API_KEY_FILE: cannot read"),
    ],
)
def test_a_missing_key_is_a_config_error_naming_the_variable_only(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        build_provider(llm(), environ=environ)
    assert message in str(caught.value)
    assert_keyless(caught.value)


def test_an_empty_key_file_is_a_config_error(tmp_path: Path) -> None:
    empty = tmp_path / "key"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match=r"GEMINI_API_KEY_FILE: .* is empty"):
        build_provider(llm(), environ={"GEMINI_API_KEY_FILE": str(empty)})


@pytest.mark.parametrize(
    "content", [f"{KEY}\n# rotated 2026-11\n", f"{KEY} old-{KEY}", f"{KEY}\x00"]
)
def test_a_key_no_header_can_carry_is_refused_at_start(tmp_path: Path, content: str) -> None:
    # Sent as it is, httpcore's debug log would quote the refused header, key and all.
    key_file = tmp_path / "key"
    key_file.write_text(content)
    with pytest.raises(ConfigError, match="line breaks") as caught:
        build_provider(llm(), environ={"GEMINI_API_KEY_FILE": str(key_file)})
    assert_keyless(caught.value)


async def test_a_local_openai_compatible_server_needs_no_key() -> None:
    async with FakeOpenAI(default=Answer(ANSWER)) as fake:
        config = llm(provider="openai", model="llama3.1", base_url=fake.base_url, redact=False)
        provider = build_provider(config, environ={})
        assert isinstance(provider, OpenAIProvider)
        assert provider.local
        reply = await provider.complete(REQUEST)
        await provider.close()
    assert reply.text == ANSWER
    # Without a base URL it is OpenAI itself, which needs one.
    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
        build_provider(llm(provider="openai", model="gpt-4o-mini"), environ={})


def test_importing_the_builder_loads_no_vendor_sdk() -> None:
    # Each SDK takes seconds to import; only the configured one may load.
    code = (
        "import sys, ai_sidecar.enrichment.llm.providers\n"
        "print(sorted({'google.genai', 'anthropic', 'openai'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


async def test_debug_logs_of_every_library_never_show_the_key(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    # --log.level=debug sets the root logger: the SDKs' and httpx's own debug
    # records (request options, headers) are emitted then.
    setup.fake.script(Answer(ANSWER), Rejected(401), ServerError(500))
    with caplog.at_level(logging.DEBUG):
        await setup.provider.complete(REQUEST)
        for _ in range(2):
            with pytest.raises(LlmError):
                await setup.provider.complete(REQUEST)
    assert caplog.records
    for record in caplog.records:
        text = logging.Formatter().format(record)
        assert KEY not in text, record.name
        assert KEY not in repr(record.__dict__), record.name

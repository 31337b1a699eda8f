"""Fake LLM vendors: servers on 127.0.0.1 that speak Gemini's, Anthropic's and OpenAI's REST APIs.

The real SDKs talk to them (each SDK takes a base URL), and they answer with
the vendors' real response shapes, so a test exercises the whole client path:
request building, authentication headers, response parsing, error mapping.

* :class:`FakeGemini`: ``POST /v1beta/models/{model}:generateContent`` (and ``/v1/...``)
* :class:`FakeAnthropic`: ``POST /v1/messages``
* :class:`FakeOpenAI`: ``POST /v1/chat/completions`` (OpenAI, Ollama, vLLM, LM Studio)

Each request takes the next scripted behaviour (or ``default`` once the script
is used up; with neither, a 500 that says so):

* :class:`Answer` ``(text, input_tokens, output_tokens, delay)``: a normal answer
  whose text is ``text`` (any text: valid, schema-invalid or hostile JSON);
  :class:`InvalidJson` is an answer whose text is cut off mid-object;
* :class:`RateLimited` ``(retry_after)``: 429 in the vendor's shape, with
  ``Retry-After`` (Gemini: a ``RetryInfo`` ``retryDelay`` in the body instead);
* :class:`ServerError` ``(status)``: 500, 503 (Anthropic also has 529 overloaded);
* :class:`Rejected` ``(status)``: another 4xx; a 401 quotes the credential it got,
  a worst case for checking that clients keep keys out of their errors;
* :class:`Hang` ``(seconds)``: no answer until the client gives up (or the fake stops);
* :class:`Computed` ``(respond)``: the behaviour ``respond(received)`` returns,
  for answers that depend on the prompt (pseudonyms, canaries).

Every request is recorded as a :class:`Received` (headers, parsed body, raw
text and the prompt text the dialect found in it), so a test can assert what
left the process. The server runs on its own thread, so synchronous tests,
asyncio tests and subprocesses (a sidecar pointed at ``base_url``) use it alike::

    async with FakeGemini() as fake:      # or: with FakeGemini() as fake:
        fake.script(RateLimited(2.0), Answer(json_text))
        provider = GeminiProvider(api_key="k", model="m", timeout=5, base_url=fake.base_url)
        ...
        assert all(CANARY not in request for request in fake.requests)

``base_url`` is what goes into ``llm.base_url`` (for OpenAI it ends in ``/v1``).
``FakeOpenAI(structured_output=False)`` and ``FakeAnthropic(structured_output=False)``
refuse their vendor's structured-output parameter with a 400, as older servers
and models do.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from tests.peers.notify import _Recorder

# -- what a request gets ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """A normal answer whose text is ``text``, after ``delay`` seconds."""

    text: str
    input_tokens: int = 420
    output_tokens: int = 96
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class InvalidJson(Answer):
    """An answer whose JSON stops mid-object (what a length cut-off looks like)."""

    text: str = '{"summary": "Uplink down on the core swi'


@dataclass(frozen=True, slots=True)
class RateLimited:
    """429, asking the client to wait ``retry_after`` seconds (None: no hint)."""

    retry_after: float | None = 1.0


@dataclass(frozen=True, slots=True)
class ServerError:
    status: int = 500


@dataclass(frozen=True, slots=True)
class Rejected:
    """A 4xx other than 429; ``message`` replaces the vendor's usual text."""

    status: int = 401
    message: str = ""


@dataclass(frozen=True, slots=True)
class Hang:
    """Accept the request and answer nothing for ``seconds`` (released when the fake stops)."""

    seconds: float = 60.0


@dataclass(frozen=True, slots=True)
class Computed:
    """Whatever ``respond`` makes of the request."""

    respond: Callable[[Received], Behaviour]


Behaviour = Answer | RateLimited | ServerError | Rejected | Hang | Computed


@dataclass(frozen=True, slots=True)
class Received:
    """One request as the fake got it. ``needle in received`` searches all of it."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: Any
    raw: str
    # The system and user text the dialect found in the body, joined by newlines.
    prompt: str
    model: str

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)

    def where(self, needle: str) -> list[str]:
        """Where ``needle`` occurs: ``path``, ``query``, ``body``, ``header <lower-case name>``."""
        places = [
            name for name, text in (("path", self.path), ("query", self.query)) if needle in text
        ]
        places += [
            f"header {k.lower()}" for k, v in self.headers.items() if needle in k or needle in v
        ]
        if needle in self.raw:
            places.append("body")
        return places

    def __contains__(self, needle: object) -> bool:
        return isinstance(needle, str) and bool(self.where(needle))


# -- the server, once --------------------------------------------------------------


class FakeLlmServer:
    """What every dialect shares: the thread, the script, the record. Subclasses speak."""

    # Paths the dialect serves (aiohttp route patterns, POST).
    routes: tuple[str, ...] = ()
    # Appended to the server's address to make ``base_url``.
    base_path = ""
    # Whether a 429 carries Retry-After as a header (Gemini puts it in the body).
    retry_after_header = True

    def __init__(self, *, default: Behaviour | None = None, structured_output: bool = True) -> None:
        self.default = default
        self.structured_output = structured_output
        self._script: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self._received: _Recorder[Received] = _Recorder()
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=type(self).__name__, daemon=True)

    # The test's side.

    @property
    def base_url(self) -> str:
        host, port = self._socket.getsockname()[:2]
        return f"http://{host}:{port}{self.base_path}"

    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours, one per request, after those already queued."""
        with self._lock:
            self._script.extend(behaviours)

    @property
    def pending(self) -> int:
        """Scripted behaviours no request has taken yet."""
        with self._lock:
            return len(self._script)

    @property
    def requests(self) -> list[Received]:
        return self._received.items()

    def clear(self) -> None:
        self._received.clear()

    def wait_for(
        self, match: Callable[[Received], bool] = lambda _: True, timeout: float = 30.0
    ) -> Received:
        return self._received.wait_for(match, timeout, "request")

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"{type(self).__name__} did not start")

    def stop(self) -> None:
        if self._thread.ident is None:  # never started: only the socket to release
            self._socket.close()
            return
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and self._thread.is_alive():
            loop.call_soon_threadsafe(stopping.set)
        self._thread.join(timeout=15)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    # The server's side (its own thread and event loop).

    def _serve(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        app = web.Application()
        for route in self.routes:
            app.router.add_post(route, self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.SockSite(runner, self._socket).start()
            self._ready.set()
            await self._stopping.wait()
        finally:
            await runner.cleanup()
            self._socket.close()

    def _next(self) -> Behaviour:
        with self._lock:
            if self._script:
                return self._script.popleft()
        if self.default is not None:
            return self.default
        return Rejected(500, "fake: no behaviour scripted for this request")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = (await request.read()).decode("utf-8", errors="replace")
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        received = Received(
            method=request.method,
            path=request.path,
            query=request.query_string,
            headers=dict(request.headers),
            body=body,
            raw=raw,
            prompt=self.prompt_of(body) if isinstance(body, dict) else "",
            model=request.match_info.get("model")
            or (str(body.get("model", "")) if isinstance(body, dict) else ""),
        )
        self._received.add(received)
        refusal = self.refusal(body) if isinstance(body, dict) else ""
        if refusal:
            return self._error(400, refusal)
        behaviour = self._next()
        while isinstance(behaviour, Computed):
            behaviour = behaviour.respond(received)
        return await self._perform(behaviour, received)

    async def _perform(self, behaviour: Behaviour, received: Received) -> web.StreamResponse:
        if isinstance(behaviour, Answer):
            if behaviour.delay and await self._stopped_within(behaviour.delay):
                return self._error(503, "fake stopped")
            return web.json_response(self.answer_body(behaviour, received))
        if isinstance(behaviour, RateLimited):
            return self._error(429, self.rate_limit_message, behaviour.retry_after)
        if isinstance(behaviour, ServerError):
            return self._error(behaviour.status, "The server had an error; please retry.")
        if isinstance(behaviour, Rejected):
            message = behaviour.message or self.rejection_message(behaviour.status, received)
            return self._error(behaviour.status, message)
        if isinstance(behaviour, Hang):
            await self._stopped_within(behaviour.seconds)
            return self._error(504, "fake: hung request released")
        raise AssertionError(f"unknown behaviour {behaviour!r}")

    async def _stopped_within(self, seconds: float) -> bool:
        assert self._stopping is not None
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def _error(self, status: int, message: str, retry_after: float | None = None) -> web.Response:
        headers: dict[str, str] = {}
        if retry_after is not None and self.retry_after_header:
            headers["Retry-After"] = f"{retry_after:g}"
        return web.json_response(
            self.error_body(status, message, retry_after), status=status, headers=headers
        )

    def rejection_message(self, status: int, received: Received) -> str:
        if status == 401:
            return f"Incorrect API key provided: {self.credential(received)}"
        return f"The request was refused ({status})."

    # What each dialect says differently.

    rate_limit_message = "Rate limit exceeded; please retry later."

    def prompt_of(self, body: dict[str, Any]) -> str:
        raise NotImplementedError

    def credential(self, received: Received) -> str:
        raise NotImplementedError

    def answer_body(self, answer: Answer, received: Received) -> dict[str, Any]:
        raise NotImplementedError

    def error_body(self, status: int, message: str, retry_after: float | None) -> dict[str, Any]:
        raise NotImplementedError

    def refuse_structured_output(self, body: dict[str, Any]) -> str:
        """The 400 message for a body that asks for structured output, "" to accept it."""
        return ""

    def refusal(self, body: dict[str, Any]) -> str:
        """The 400 message for a body this server refuses, "" to accept it."""
        return "" if self.structured_output else self.refuse_structured_output(body)


def _texts(items: Any, key: str = "text") -> list[str]:
    """The ``key`` strings of a list of parts or blocks (a bare string counts as one)."""
    if isinstance(items, str):
        return [items]
    if not isinstance(items, list):
        return []
    return [str(item[key]) for item in items if isinstance(item, dict) and key in item]


def _ident(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


# -- the dialects ---------------------------------------------------------------------


def thinking_budget(body: Any) -> int | None:
    """The ``thinkingBudget`` of a Gemini request (proto JSON: either spelling), or None."""
    generation = body.get("generationConfig") or {} if isinstance(body, dict) else {}
    thinking = generation.get("thinkingConfig") or {}
    budget = thinking.get("thinkingBudget", thinking.get("thinking_budget"))
    return None if budget is None else int(budget)


_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class FakeGemini(FakeLlmServer):
    """The Gemini API (``generativelanguage.googleapis.com``); the key is ``x-goog-api-key``.

    ``thinking_tokens``: a thinking model (Gemini 2.5): it thinks that many
    tokens (at most the request's ``thinkingBudget``) before it answers, and the
    thoughts count against ``maxOutputTokens``; when they use it all up, the
    answer has no text and ends ``MAX_TOKENS``. ``thinking=False``: a model
    that does not think (Gemini 2.0) refuses a ``thinkingConfig`` with a 400.
    """

    routes = (r"/{version:v1|v1beta}/models/{model:[^/:]+}:generateContent",)
    retry_after_header = False
    rate_limit_message = "You exceeded your current quota, please check your plan and billing."

    def __init__(
        self,
        *,
        default: Behaviour | None = None,
        thinking_tokens: int = 0,
        thinking: bool = True,
    ) -> None:
        super().__init__(default=default)
        self.thinking_tokens = thinking_tokens
        self.thinking = thinking

    def refusal(self, body: dict[str, Any]) -> str:
        if not self.thinking and "thinkingConfig" in (body.get("generationConfig") or {}):
            return "thinking_config is not supported."
        return super().refusal(body)

    def prompt_of(self, body: dict[str, Any]) -> str:
        system = body.get("systemInstruction") or body.get("system_instruction") or {}
        texts = _texts(system.get("parts") if isinstance(system, dict) else system)
        for content in body.get("contents") or []:
            texts += _texts(content.get("parts") if isinstance(content, dict) else content)
        return "\n".join(texts)

    def credential(self, received: Received) -> str:
        return received.header("x-goog-api-key") or ""

    def answer_body(self, answer: Answer, received: Received) -> dict[str, Any]:
        generation = received.body.get("generationConfig") or {}
        limit = int(generation.get("maxOutputTokens") or 65_536)
        budget = thinking_budget(received.body)
        thoughts = self.thinking_tokens if budget is None else min(self.thinking_tokens, budget)
        candidate: dict[str, Any] = {
            "content": {"parts": [{"text": answer.text}], "role": "model"},
            "finishReason": "STOP",
            "index": 0,
        }
        output = answer.output_tokens
        if thoughts >= limit:  # thought to the limit: no answer at all
            thoughts, output = limit, 0
            candidate = {"content": {"role": "model"}, "finishReason": "MAX_TOKENS", "index": 0}
        usage: dict[str, Any] = {
            "promptTokenCount": answer.input_tokens,
            "candidatesTokenCount": output,
            "totalTokenCount": answer.input_tokens + output + thoughts,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": answer.input_tokens}],
        }
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        return {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": received.model,
            "responseId": _ident(""),
        }

    def error_body(self, status: int, message: str, retry_after: float | None) -> dict[str, Any]:
        error: dict[str, Any] = {
            "code": status,
            "message": message,
            "status": _GOOGLE_STATUS.get(status, "UNKNOWN"),
        }
        if retry_after is not None:
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": f"{retry_after:g}s",
                }
            ]
        return {"error": error}


_ANTHROPIC_ERROR_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


class FakeAnthropic(FakeLlmServer):
    """The Claude Messages API; the key is ``x-api-key`` or a bearer token."""

    routes = ("/v1/messages",)

    def prompt_of(self, body: dict[str, Any]) -> str:
        texts = _texts(body.get("system"))
        for message in body.get("messages") or []:
            if isinstance(message, dict):
                texts += _texts(message.get("content"))
        return "\n".join(texts)

    def credential(self, received: Received) -> str:
        # The API takes either header; SDK 2.x sends the key as a bearer token.
        bearer = (received.header("authorization") or "").removeprefix("Bearer ")
        return received.header("x-api-key") or bearer

    def answer_body(self, answer: Answer, received: Received) -> dict[str, Any]:
        return {
            "id": _ident("msg_"),
            "type": "message",
            "role": "assistant",
            "model": received.model,
            "content": [{"type": "text", "text": answer.text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": answer.input_tokens,
                "output_tokens": answer.output_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }

    def error_body(self, status: int, message: str, retry_after: float | None) -> dict[str, Any]:
        kind = _ANTHROPIC_ERROR_TYPE.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
        return {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": _ident("req_"),
        }

    def refuse_structured_output(self, body: dict[str, Any]) -> str:
        if "output_config" in body or "output_format" in body:
            return "output_config.format: structured outputs are not supported for this model"
        return ""


class FakeOpenAI(FakeLlmServer):
    """The OpenAI Chat Completions API (and what Ollama, vLLM serve under ``/v1``)."""

    routes = ("/v1/chat/completions",)
    base_path = "/v1"

    def prompt_of(self, body: dict[str, Any]) -> str:
        texts: list[str] = []
        for message in body.get("messages") or []:
            if isinstance(message, dict):
                texts += _texts(message.get("content"))
        return "\n".join(texts)

    def credential(self, received: Received) -> str:
        return (received.header("authorization") or "").removeprefix("Bearer ")

    def answer_body(self, answer: Answer, received: Received) -> dict[str, Any]:
        return {
            "id": _ident("chatcmpl-"),
            "object": "chat.completion",
            "created": 1_780_000_000,
            "model": received.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": answer.input_tokens,
                "completion_tokens": answer.output_tokens,
                "total_tokens": answer.input_tokens + answer.output_tokens,
            },
            "system_fingerprint": "fp_fake",
        }

    def error_body(self, status: int, message: str, retry_after: float | None) -> dict[str, Any]:
        kind, code = {
            401: ("invalid_request_error", "invalid_api_key"),
            429: ("requests", "rate_limit_exceeded"),
        }.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}

    def refuse_structured_output(self, body: dict[str, Any]) -> str:
        response_format = body.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
            return "Invalid value for 'response_format.type': 'json_schema' is not supported."
        return ""


__all__ = [
    "Answer",
    "Behaviour",
    "Computed",
    "FakeAnthropic",
    "FakeGemini",
    "FakeLlmServer",
    "FakeOpenAI",
    "Hang",
    "InvalidJson",
    "RateLimited",
    "Received",
    "Rejected",
    "ServerError",
    "thinking_budget",
]


# -- answers in the language asked for -------------------------------------------------

# One analysis as a model writes it, in each language Scout speaks: the prose in
# the language, names (alerts, devices, interfaces) as they are, JSON keys in English.
ANALYSES: dict[str, dict[str, Any]] = {
    "en": {
        "summary": "The uplink of the distribution switch went down and every device "
        "behind it stopped answering.",
        "root_cause": "InterfaceDown on host-1 Gi1/0/24: the link to the core is down, "
        "so the probes behind it fail.",
        "impact": "One site is cut off from the core network until the link comes back.",
        "actions": ["Check the optic and the cable on both ends of the link."],
        "confidence": 0.8,
        "false_positive_likelihood": 0.1,
        "evidence": [],
        "false_positives": [],
    },
    "fr": {
        "summary": "La liaison montante du commutateur de distribution est tombée et tous "
        "les équipements derrière lui ne répondent plus.",
        "root_cause": "InterfaceDown sur host-1 Gi1/0/24 : le lien vers le cœur de réseau est "
        "coupé, donc les sondes situées derrière échouent.",
        "impact": "Un site est coupé du cœur de réseau jusqu\u2019au retour du lien.",
        "actions": ["Vérifiez l\u2019optique et le câble aux deux extrémités du lien."],
        "confidence": 0.8,
        "false_positive_likelihood": 0.1,
        "evidence": [],
        "false_positives": [],
    },
}
# What the prompt says when it asks for French (the analysis catalogue's instruction).
ASKS_FOR_FRENCH = "en français"


def analysis_in(language: str) -> Answer:
    """A valid answer written in ``language``."""
    return Answer(json.dumps(ANALYSES[language], ensure_ascii=False))


def in_the_asked_language(received: Received) -> Answer:
    """Answer as a model that follows the prompt's language instruction does."""
    return analysis_in("fr" if ASKS_FOR_FRENCH in received.prompt else "en")

"""The fake LLM vendors themselves: scripting, defaults, recording, stopping with a hung request."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from tests.peers.llm import (
    Answer,
    Computed,
    FakeGemini,
    FakeOpenAI,
    Hang,
    RateLimited,
    Received,
)


def post(url: str, body: dict[str, Any], timeout: float = 10.0) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer k"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


CHAT = {"model": "llama3.1", "messages": [{"role": "user", "content": "host-3 is down"}]}


def test_behaviours_are_taken_in_order_then_the_default_then_a_clear_500() -> None:
    with FakeOpenAI() as fake:
        url = fake.base_url + "/chat/completions"
        fake.script(RateLimited(3.0), Answer("first"))
        assert fake.pending == 2

        limited = post(url, CHAT)
        answered = post(url, CHAT)
        unscripted = post(url, CHAT)
        fake.default = Answer("default")
        defaulted = post(url, CHAT)

    assert limited[0] == 429
    assert limited[1]["Retry-After"] == "3"
    assert limited[2]["error"]["code"] == "rate_limit_exceeded"
    assert answered[2]["choices"][0]["message"]["content"] == "first"
    assert unscripted[0] == 500
    assert "no behaviour scripted" in unscripted[2]["error"]["message"]
    assert defaulted[2]["choices"][0]["message"]["content"] == "default"
    assert [r.prompt for r in fake.requests] == ["host-3 is down"] * 4
    assert fake.pending == 0


def test_a_computed_answer_sees_the_request() -> None:
    def echo(received: Received) -> Answer:
        return Answer(json.dumps({"summary": received.prompt.upper()}))

    with FakeGemini(default=Computed(echo)) as fake:
        status, _, body = post(
            fake.base_url + "/v1beta/models/gemini-2.5-flash:generateContent",
            {
                "systemInstruction": {"parts": [{"text": "explain"}]},
                "contents": [{"role": "user", "parts": [{"text": "ip-7 unreachable"}]}],
            },
        )

    assert status == 200
    text = body["candidates"][0]["content"]["parts"][0]["text"]
    assert json.loads(text) == {"summary": "EXPLAIN\nIP-7 UNREACHABLE"}
    assert fake.requests[0].model == "gemini-2.5-flash"
    assert fake.requests[0].where("ip-7") == ["body"]


def test_stopping_releases_a_hung_request_at_once() -> None:
    fake = FakeOpenAI(default=Hang(60))
    fake.start()
    results: list[int] = []
    client = threading.Thread(
        target=lambda: results.append(post(fake.base_url + "/chat/completions", CHAT)[0])
    )
    client.start()
    fake.wait_for(timeout=10)
    started = time.monotonic()
    fake.stop()
    client.join(10)
    assert time.monotonic() - started < 5
    assert results == [504]

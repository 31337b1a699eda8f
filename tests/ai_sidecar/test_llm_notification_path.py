"""An LLM's analysis on the whole notification path, with real processes.

Alertmanager 0.25 with the shipped routes and templates, the sidecar as a
process with the Gemini analyst configured, ``google-genai`` talking to a fake
Gemini server on 127.0.0.1, and Slack and SMTP sinks. The alerts carry canary
secrets and names: the fake must never receive them (it sees pseudonyms),
and the notifications must show the real names again (never the secrets).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scripts.localstack import free_port
from tests.ai_sidecar.test_notification_path import SIDECAR_CONFIG, TIMINGS, enriched
from tests.conftest import wait_for
from tests.peers.alertmanager import Alertmanager, postable, render_config
from tests.peers.llm import Answer, Computed, FakeGemini, Received
from tests.peers.notify import SlackSink, SmtpSink, email_body, slack_text
from tests.peers.sidecar import start_sidecar

pytestmark = pytest.mark.peers

KEY = "AIzaSyC4nary-Key-0123456789abcdefghijkl"
HOST = "rtr1.canary-corp.example"
ADDRESS = "10.99.88.77"
PASSWORD = "s3cret-canary-pw"
EMAIL = "noc-canary@corp.example"
CANARIES = (HOST, ADDRESS, PASSWORD, EMAIL)


def llm_answer(received: Received) -> Answer:
    """An answer naming the root host by the pseudonym the prompt gave it, with hostile bits."""
    named = re.search(r"WAN uplink wan0 on (host-\d+) is down", received.prompt)
    host = named.group(1) if named else "the router"
    return Answer(
        json.dumps(
            {
                "summary": f"LLM: WAN uplink of {host} is down <!channel>",
                "root_cause": f"{host} lost its WAN uplink; see <https://evil.example|docs>",
                "impact": "Two services at the site are unreachable",
                "actions": [f"Check the optic on {host}", "Call the carrier"],
                "confidence": 0.8,
                "false_positive_likelihood": 0.05,
                "evidence": [],
                "false_positives": [],
            }
        )
    )


def canary_storm() -> list[dict[str, Any]]:
    common = {"site": "a", "job": "snmp", "severity": "critical"}
    return [
        postable(
            {"alertname": "LinkDown", "instance": HOST, "interface": "wan0", **common},
            {
                "summary": f"WAN uplink wan0 on {HOST} is down",
                "description": f"Status page https://admin:{PASSWORD}@{ADDRESS}/status; "
                f"mail {EMAIL}; key {KEY}",
            },
        ),
        postable(
            {"alertname": "ProbeFailed", "instance": "web1", **common},
            {"summary": "web1 does not answer"},
        ),
        postable(
            {"alertname": "ProbeFailed", "instance": "mail1", **common},
            {"summary": "mail1 does not answer"},
        ),
    ]


@pytest.fixture
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini(default=Computed(llm_answer)) as fake:
        yield fake


@dataclass
class Stack:
    """The sinks, and Alertmanager's config pointing at them and at the sidecar's port."""

    slack: SlackSink
    smtp: SmtpSink
    port: int
    am_config: Path


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    with SlackSink() as slack, SmtpSink() as smtp:
        port = free_port()
        am_config = render_config(
            tmp_path,
            sidecar_url=f"http://127.0.0.1:{port}",
            slack_url=slack.url,
            smtp_smarthost=smtp.smarthost,
            timings=TIMINGS,
        )
        yield Stack(slack, smtp, port, am_config)


def test_the_llm_analysis_reaches_slack_and_email_and_no_canary_reaches_the_llm(
    tmp_path: Path, gemini: FakeGemini, stack: Stack
) -> None:
    slack, smtp = stack.slack, stack.smtp
    sidecar_config = SIDECAR_CONFIG + f"llm:\n  provider: gemini\n  base_url: {gemini.base_url}\n"
    with Alertmanager(tmp_path, stack.am_config) as am:
        sidecar = start_sidecar(tmp_path, stack.port, [am.url], sidecar_config)
        try:
            am.post(canary_storm())
            [incident] = wait_for(
                lambda: [
                    i
                    for i in sidecar.incidents()
                    if i["analyst"] == "gemini" and len(i["members"]) == 3
                ],
                what="one incident of three alerts explained by the LLM",
            )
            message = slack.wait_for(
                lambda m: enriched([m]) != [] and "LLM:" in slack_text(m), timeout=40
            )
            mail = smtp.wait_for(timeout=20)
            detail = sidecar.incident(incident["id"])
        finally:
            sidecar.service.stop(grace=5)

    # The analysis names the real host again; hostile markup is neutralised.
    analysis = incident["analysis"]
    assert analysis["summary"].startswith(f"LLM: WAN uplink of {HOST} is down")
    text = slack_text(message)
    assert f"LLM: WAN uplink of {HOST} is down" in text
    assert "<!channel>" not in text
    assert "<https://evil.example|docs>" not in text
    assert f"Check the optic on {HOST}" in text
    html = email_body(mail, "html")
    assert f"LLM: WAN uplink of {HOST} is down" in html
    # The key travelled only in its header; no canary ever left in a request.
    assert gemini.requests, "the LLM was never asked"
    for request in gemini.requests:
        assert request.where(KEY) == ["header x-goog-api-key"]
        for canary in CANARIES:
            assert canary not in request, (canary, request.where(canary))
        assert "host-" in request.prompt
    # One call for the incident, audited with the redacted prompt as sent.
    assert len(gemini.requests) == 1
    [exchange] = detail["llmExchanges"]
    assert (exchange["provider"], exchange["outcome"]) == ("gemini", "ok")
    assert exchange["prompt"] in gemini.requests[0].prompt or "host-" in exchange["prompt"]
    for canary in (*CANARIES, KEY):
        assert canary not in json.dumps(exchange)
        assert canary not in json.dumps(analysis) or canary == HOST


def test_an_llm_that_fails_leaves_the_local_analysis_labelled_with_why(
    tmp_path: Path, stack: Stack
) -> None:
    slack = stack.slack
    # Nothing listens there: every call fails to connect, and is retried no more than configured.
    dead = f"http://127.0.0.1:{free_port()}"
    sidecar_config = (
        SIDECAR_CONFIG + f"llm:\n  provider: gemini\n  base_url: {dead}\n  retries: 0\n"
    )
    with Alertmanager(tmp_path, stack.am_config) as am:
        sidecar = start_sidecar(tmp_path, stack.port, [am.url], sidecar_config)
        try:
            started = time.monotonic()
            am.post(canary_storm())
            [incident] = wait_for(
                lambda: [
                    i
                    for i in sidecar.incidents()
                    if i["skippedAnalysts"]
                    and not i["skippedAnalysts"][0]["detail"].startswith("pending")
                ],
                what="an incident whose LLM call ended",
            )
            message = slack.wait_for(lambda m: enriched([m]) != [], timeout=40)
            elapsed = time.monotonic() - started
        finally:
            sidecar.service.stop(grace=5)
    assert incident["analyst"] == "local"
    [skipped] = incident["skippedAnalysts"]
    assert skipped["analyst"] == "gemini"
    assert skipped["reason"] == "declined"
    assert skipped["detail"].startswith("unavailable")
    # The call failed before Alertmanager's group_wait was over: the page says why.
    assert "gemini not asked (unavailable" in slack_text(message)
    # The local analysis went out without waiting for a retry of the LLM.
    assert elapsed < 40

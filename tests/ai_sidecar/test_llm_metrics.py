"""Every LLM metric the issue lists, scraped from /metrics after real calls.

The sidecar runs with its real components (the Gemini provider through
``google-genai``, the guard, the policy, the audit) against a fake Gemini
server on 127.0.0.1; the assertions read ``GET /metrics`` as Prometheus would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ai_sidecar.app import create_app
from ai_sidecar.config import SidecarConfig
from ai_sidecar.settings import SidecarSettings
from tests.ai_sidecar.builders import alert, payload
from tests.ai_sidecar.test_app import wait_until
from tests.peers.llm import Answer, Computed, FakeGemini, InvalidJson, Received

TOKEN = "llm-metrics-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MODEL = "gemini-2.5-flash"
VALID = json.dumps(
    {
        "summary": "The core router is down",
        "root_cause": "Power loss at the site",
        "impact": "The site is offline",
        "actions": ["Check the power feed"],
        "confidence": 0.8,
        "false_positive_likelihood": 0.1,
        "evidence": [],
        "false_positives": [],
    }
)


def answer(received: Received) -> Answer:
    """Valid for a DeviceDown incident; cut off mid-object for anything else."""
    return Answer(VALID, 400, 100) if "DeviceDown" in received.prompt else InvalidJson()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    scraped: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


async def test_the_llm_metrics_move_with_real_calls(
    aiohttp_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "fake-gemini-key-0123456789")
    async with FakeGemini(default=Computed(answer)) as fake:
        config = SidecarConfig.model_validate(
            {
                "llm": {
                    "provider": "gemini",
                    "model": MODEL,
                    "base_url": fake.base_url,
                    "timeout": "10s",
                    "price": {"input_per_million": 1.0, "output_per_million": 2.0},
                    "policy": {"min_priority": "P4"},
                }
            }
        )
        settings = SidecarSettings(data_dir=tmp_path / "data", webhook_token=TOKEN)
        client = await aiohttp_client(create_app(settings, config))

        async def analysed(count: int) -> list[dict[str, Any]] | None:
            body = await (await client.get("/api/v1/incidents", headers=AUTH)).json()
            # The LLM answers in the background: the local analysis comes first, "pending".
            done = [
                i
                for i in body
                if i["analysis"]
                and not any(s["detail"].startswith("pending") for s in i["skippedAnalysts"])
            ]
            return done if len(done) >= count else None

        async def post(*alerts: Any) -> None:
            response = await client.post(
                "/api/v1/alertmanager", json=payload(*alerts), headers=AUTH
            )
            assert response.ok

        # One call answered; then the same shape elsewhere (answered from the cache);
        # then another shape whose answers fail validation twice.
        await post(alert("DeviceDown", site="ams", instance="r1"))
        await wait_until(lambda: analysed(1), 30)
        await post(alert("DeviceDown", site="fra", instance="r2"))
        await wait_until(lambda: analysed(2), 30)
        await post(alert("DiskFull", site="lon", instance="s9"))
        done = await wait_until(lambda: analysed(3), 30)
        assert sorted(i["analyst"] for i in done) == ["gemini", "gemini", "local"]
        # The audit keeps what each exchange came to, as the incident API shows it.
        outcomes = {}
        for incident in done:
            url = f"/api/v1/incidents/{incident['id']}"
            shown = await (await client.get(url, headers=AUTH)).json()
            instance = incident["alerts"][0]["labels"]["instance"]
            outcomes[instance] = [e["outcome"] for e in shown["llmExchanges"]]
        # r2 was answered from the cache: no exchange.
        assert outcomes == {"r1": ["ok"], "r2": [], "s9": ["invalid", "invalid"]}

        scraped = samples(await (await client.get("/metrics")).text())
    assert len(fake.requests) == 3
    g = {"provider": "gemini", "model": MODEL}
    assert value(scraped, "scout_llm_requests_total", **g, outcome="ok") == 3
    assert value(scraped, "scout_llm_requests_total", **g, outcome="invalid") == 2
    assert value(scraped, "scout_llm_input_tokens_total", **g) == 400 + 2 * 420
    assert value(scraped, "scout_llm_output_tokens_total", **g) == 100 + 2 * 96
    expected_cost = ((400 + 840) * 1.0 + (100 + 192) * 2.0) / 1_000_000
    assert value(scraped, "scout_llm_cost_dollars_total", **g) == pytest.approx(expected_cost)
    assert value(scraped, "scout_llm_request_duration_seconds_count", **g) == 3
    assert value(scraped, "scout_llm_redactions_total", kind="host") >= 1
    # One answer from the cache, counted once.
    cache_hits = {
        dict(labels)["kind"]: v
        for (name, labels), v in scraped.items()
        if name == "scout_llm_cache_hits_total"
    }
    assert cache_hits == {"similar": 1}
    assert value(scraped, "scout_llm_fallbacks_total", reason="invalid") == 1
    assert value(scraped, "scout_llm_budget_remaining", budget="requests_per_day") == 200 - 3
    assert value(scraped, "scout_llm_budget_remaining", budget="cost_per_month") == -1
    assert ("scout_llm_circuit_state", frozenset({("provider", "gemini")})) in scraped
    assert value(scraped, "scout_llm_circuit_state", provider="gemini") == 0

"""The LLM endpoint misbehaving, end to end: the sidecar's real components against a fake Gemini.

Whatever the endpoint answers, the incident gets the local analysis and the
audit stays bounded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ai_sidecar.app import create_app
from ai_sidecar.config import SidecarConfig
from ai_sidecar.enrichment.llm.base import CHARS_PER_TOKEN
from ai_sidecar.settings import SidecarSettings
from tests.ai_sidecar.builders import alert, payload
from tests.ai_sidecar.test_app import wait_until
from tests.peers.llm import Answer, FakeGemini

TOKEN = "llm-faults-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_OUTPUT_TOKENS = 256
LIMIT = MAX_OUTPUT_TOKENS * CHARS_PER_TOKEN


def huge_answer() -> str:
    """Schema-valid JSON, in English, a hundred times longer than any answer within the limit."""
    return json.dumps(
        {
            "summary": "The uplink of the core switch went down again. " * (LIMIT * 100 // 47),
            "root_cause": "Power loss at the site",
            "impact": "The site is offline",
            "actions": ["Check the power feed"],
            "confidence": 0.8,
            "false_positive_likelihood": 0.1,
            "evidence": [],
            "false_positives": [],
        }
    )


async def test_an_answer_longer_than_any_model_could_give_is_refused_and_not_kept(
    aiohttp_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "fake-gemini-key-0123456789")
    text = huge_answer()
    async with FakeGemini(default=Answer(text)) as fake:
        config = SidecarConfig.model_validate(
            {
                "llm": {
                    "provider": "gemini",
                    "model": "gemini-2.5-flash",
                    "base_url": fake.base_url,
                    "timeout": "10s",
                    "max_output_tokens": MAX_OUTPUT_TOKENS,
                    "policy": {"min_priority": "P4"},
                }
            }
        )
        settings = SidecarSettings(data_dir=tmp_path / "data", webhook_token=TOKEN)
        client = await aiohttp_client(create_app(settings, config))
        response = await client.post(
            "/api/v1/alertmanager",
            json=payload(alert("DeviceDown", site="ams", instance="r1")),
            headers=AUTH,
        )
        assert response.ok

        async def settled() -> dict[str, Any] | None:
            listed = await (await client.get("/api/v1/incidents", headers=AUTH)).json()
            if not listed:
                return None
            [incident] = listed
            pending = any(s["detail"].startswith("pending") for s in incident["skippedAnalysts"])
            if incident["analysis"] and not pending:
                url = f"/api/v1/incidents/{incident['id']}"
                shown: dict[str, Any] = await (await client.get(url, headers=AUTH)).json()
                return shown
            return None

        incident = await wait_until(settled, 30)
    # Refused (twice: the retry told the model why), and the local analysis went out.
    assert incident["analyst"] == "local"
    [skipped] = incident["skippedAnalysts"]
    assert skipped["detail"].startswith("invalid: ")
    assert "characters long" in skipped["detail"]
    exchanges = incident["llmExchanges"]
    assert [e["outcome"] for e in exchanges] == ["invalid", "invalid"]
    for exchange in exchanges:
        assert exchange["answer"].startswith(text[:LIMIT])
        assert len(exchange["answer"]) < LIMIT + 100
    assert len(fake.requests) == 2

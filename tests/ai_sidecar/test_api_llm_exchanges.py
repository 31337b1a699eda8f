"""The incident API shows the incident's LLM exchanges; the list stays light."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ai_sidecar.app import create_app
from ai_sidecar.keys import STORE
from tests.ai_sidecar.builders import T0
from tests.ai_sidecar.exchanges import exchange
from tests.ai_sidecar.test_app import AUTH, first_incident_id, settings


async def test_an_incident_shows_its_llm_exchanges_and_the_list_does_not(
    aiohttp_client: Any, tmp_path: Any
) -> None:
    client = await aiohttp_client(create_app(settings(tmp_path)))
    incident_id = await first_incident_id(client)
    store = client.app[STORE]
    await store.record_llm_exchange(
        exchange(incident_id, T0 + timedelta(seconds=2), outcome="invalid", answer="{")
    )
    await store.record_llm_exchange(exchange(incident_id, T0))
    await store.record_llm_exchange(exchange("inc-other", T0))

    detail = await (await client.get(f"/api/v1/incidents/{incident_id}", headers=AUTH)).json()

    assert detail["llmExchanges"] == [
        {
            "at": "2026-11-02T09:00:00Z",
            "provider": "gemini",
            "model": "gemini-2.5-flash",
            "outcome": "ok",
            "inputTokens": 1200,
            "outputTokens": 240,
            "cost": 0.000456,
            "latency": 1.25,
            "prompt": f"system\n---\n<alert>InterfaceDown on host-3 for {incident_id}</alert>",
            "answer": '{"summary": "host-3 lost its uplink"}',
        },
        {
            "at": "2026-11-02T09:00:02Z",
            "provider": "gemini",
            "model": "gemini-2.5-flash",
            "outcome": "invalid",
            "inputTokens": 1200,
            "outputTokens": 240,
            "cost": 0.000456,
            "latency": 1.25,
            "prompt": f"system\n---\n<alert>InterfaceDown on host-3 for {incident_id}</alert>",
            "answer": "{",
        },
    ]
    listing = await (await client.get("/api/v1/incidents", headers=AUTH)).json()
    assert [i["id"] for i in listing] == [incident_id]
    assert "llmExchanges" not in listing[0]
    # Behind the token like the rest of the API.
    assert (await client.get(f"/api/v1/incidents/{incident_id}")).status == 401


async def test_an_incident_without_exchanges_shows_an_empty_list(
    aiohttp_client: Any, tmp_path: Any
) -> None:
    client = await aiohttp_client(create_app(settings(tmp_path)))
    incident_id = await first_incident_id(client)
    detail = await (await client.get(f"/api/v1/incidents/{incident_id}", headers=AUTH)).json()
    assert detail["llmExchanges"] == []

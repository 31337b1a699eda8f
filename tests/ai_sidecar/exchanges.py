"""LLM exchanges (audit records) for the store, API and CLI tests."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from ai_sidecar.enrichment.llm.base import LlmExchange


def exchange(incident_id: str, at: datetime, **fields: object) -> LlmExchange:
    made = LlmExchange(
        incident_id=incident_id,
        at=at,
        provider="gemini",
        model="gemini-2.5-flash",
        prompt=f"system\n---\n<alert>InterfaceDown on host-3 for {incident_id}</alert>",
        answer='{"summary": "host-3 lost its uplink"}',
        input_tokens=1200,
        output_tokens=240,
        cost=0.000456,
        latency=1.25,
        outcome="ok",
    )
    return replace(made, **fields)  # type: ignore[arg-type]

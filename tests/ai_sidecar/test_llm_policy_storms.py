"""The small version of benchmarks/llm_policy.py: replayed storms rarely reach the LLM.

Two storms (a core link cut and a flapping port, each with background faults)
go through the real worker, the production components and ``google-genai``
against the fake Gemini. Every version of every incident is offered to the
analyst, so a policy that called per analysis would make hundreds of calls.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.llm_policy import KEY_ENV, replay_calls
from benchmarks.storms.scenarios import generate


async def test_replayed_storms_call_the_llm_at_most_once_per_incident_and_rarely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "test-key")
    storms = [generate("core_link_cut", 0), generate("flapping_port", 1)]
    counts = await replay_calls(storms, tmp_path)
    assert counts.alerts == sum(len(d.alerts) for s in storms for d in s.deliveries)
    # The peer: one call per analysis. The policy makes a small fraction of it ...
    assert counts.analyses > 10 * max(1, counts.calls)
    # ... at most one call per incident on the whole, never past the cap on one, and
    # at least nine alerts in ten need none (the benchmark's 2,000-alert storms: 95 %).
    assert counts.calls <= counts.incidents
    assert counts.most_calls <= 4
    assert counts.no_call_share >= 0.9
    # Some incident was worth a call (a P1/P2 link cut), and the rest were declined.
    assert counts.calls >= 1
    assert counts.declined["low_priority"] + counts.declined["resolved"] >= 1

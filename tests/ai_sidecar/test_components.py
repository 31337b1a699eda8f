"""The analyst chain build_components makes: local alone, or an LLM analyst in front of it."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from ai_sidecar.components import build_analysts
from ai_sidecar.config import LlmConfig, SidecarConfig
from ai_sidecar.enrichment.llm.analyst import LlmAnalyst
from ai_sidecar.enrichment.local import LocalAnalyst
from ai_sidecar.metrics import create_metrics
from tests.ai_sidecar.enrichment.llm.analyst_fakes import RecordingProvider

STORE = object()  # stands in for the store: the guard only keeps it as its audit


class Seams:
    """Stand-ins for the provider factory, the guard and the policy, recording how they are made."""

    def __init__(self, provider: RecordingProvider | None) -> None:
        self.provider = provider
        self.made: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        seams = self

        def build_provider(config: LlmConfig) -> RecordingProvider | None:
            seams.made["provider"] = ((config,), {})
            return seams.provider

        class LlmGuard:
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                seams.made["guard"] = (args, kwargs)

        class LlmPolicy:
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                seams.made["policy"] = (args, kwargs)

        for name, attribute, value in (
            ("providers", "build_provider", build_provider),
            ("guard", "LlmGuard", LlmGuard),
            ("policy", "LlmPolicy", LlmPolicy),
        ):
            module = types.ModuleType(f"ai_sidecar.enrichment.llm.{name}")
            setattr(module, attribute, value)
            monkeypatch.setitem(sys.modules, module.__name__, module)


def test_without_an_llm_the_local_analyst_speaks_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    seams = Seams(RecordingProvider())
    seams.install(monkeypatch)
    for llm in (LlmConfig(), LlmConfig(provider="gemini", enabled=False)):
        chain = build_analysts(SidecarConfig(llm=llm), db=STORE, metrics=create_metrics())
        assert isinstance(chain.fallback, LocalAnalyst)
        assert chain.preferred == ()
    assert seams.made == {}


def test_an_active_llm_goes_in_front_of_the_local_analyst(monkeypatch: pytest.MonkeyPatch) -> None:
    seams = Seams(RecordingProvider(name="anthropic"))
    seams.install(monkeypatch)
    config = SidecarConfig(llm=LlmConfig(provider="anthropic", model="claude-x"))
    metrics = create_metrics()
    chain = build_analysts(config, db=STORE, metrics=metrics)
    [analyst] = chain.preferred
    assert isinstance(analyst, LlmAnalyst)
    assert analyst.name == "anthropic"
    assert isinstance(chain.fallback, LocalAnalyst)
    assert seams.made["provider"] == ((config.llm,), {})
    assert seams.made["guard"] == ((config.llm, metrics.llm), {"audit": STORE})
    assert seams.made["policy"] == ((config.llm, metrics.llm), {})


def test_no_provider_no_llm_analyst(monkeypatch: pytest.MonkeyPatch) -> None:
    # build_provider gives None without an API key in the environment.
    seams = Seams(None)
    seams.install(monkeypatch)
    config = SidecarConfig(llm=LlmConfig(provider="gemini"))
    chain = build_analysts(config, db=STORE, metrics=create_metrics())
    assert chain.preferred == ()
    assert "guard" not in seams.made

"""The analyst chain build_components makes: local alone, or an LLM analyst in front of it."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

from ai_sidecar.components import build_analysts
from ai_sidecar.config import LlmConfig, SidecarConfig
from ai_sidecar.enrichment.llm.analyst import LlmAnalyst
from ai_sidecar.enrichment.local import LocalAnalyst
from ai_sidecar.metrics import create_metrics
from ai_sidecar.settings import SidecarSettings
from tests.ai_sidecar.enrichment.llm.analyst_fakes import RecordingProvider

STORE = object()  # stands in for the store: the audit adapter only keeps it
SETTINGS = SidecarSettings(data_dir=Path("data-dir"))


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

        class StoreAudit:
            def __init__(self, store: object) -> None:
                self.store = store

        for name, attribute, value in (
            ("providers", "build_provider", build_provider),
            ("guard", "LlmGuard", LlmGuard),
            ("policy", "LlmPolicy", LlmPolicy),
            ("audit", "StoreAudit", StoreAudit),
        ):
            module = types.ModuleType(f"ai_sidecar.enrichment.llm.{name}")
            setattr(module, attribute, value)
            monkeypatch.setitem(sys.modules, module.__name__, module)


def test_without_an_llm_the_local_analyst_speaks_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    seams = Seams(RecordingProvider())
    seams.install(monkeypatch)
    built = build_analysts(SidecarConfig(), SETTINGS, db=STORE, metrics=create_metrics())
    assert isinstance(built.chain.fallback, LocalAnalyst)
    assert built.chain.preferred == ()
    assert (built.reloadable, built.closers) == ((), ())
    assert seams.made == {}


def test_with_the_kill_switch_on_the_llm_analyst_is_built_for_a_reload_to_enable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seams = Seams(RecordingProvider())
    seams.install(monkeypatch)
    config = SidecarConfig(llm=LlmConfig(provider="gemini", enabled=False))
    built = build_analysts(config, SETTINGS, db=STORE, metrics=create_metrics())
    [analyst] = built.chain.preferred
    assert isinstance(analyst, LlmAnalyst)
    # The provider is built as if enabled; the guard (given the real section) declines.
    [(provider_config,), _] = seams.made["provider"]
    assert provider_config.enabled
    assert seams.made["guard"][0][0] is config.llm


def test_an_active_llm_goes_in_front_of_the_local_analyst(monkeypatch: pytest.MonkeyPatch) -> None:
    seams = Seams(RecordingProvider(name="anthropic"))
    seams.install(monkeypatch)
    config = SidecarConfig(llm=LlmConfig(provider="anthropic", model="claude-x"))
    metrics = create_metrics()
    built = build_analysts(config, SETTINGS, db=STORE, metrics=metrics)
    [analyst] = built.chain.preferred
    assert isinstance(analyst, LlmAnalyst)
    assert analyst.name == "anthropic"
    assert isinstance(built.chain.fallback, LocalAnalyst)
    assert seams.made["provider"] == ((config.llm,), {})
    args, kwargs = seams.made["guard"]
    assert args == (config.llm, metrics.llm)
    assert kwargs["audit"].store is STORE
    assert kwargs["state_file"] == Path("data-dir") / "llm_budget.json"
    assert seams.made["policy"] == ((config.llm, metrics.llm), {})
    assert len(built.reloadable) == 2
    assert built.closers == (analyst,)


def test_no_provider_no_llm_analyst(monkeypatch: pytest.MonkeyPatch) -> None:
    # build_provider gives None without an API key in the environment.
    seams = Seams(None)
    seams.install(monkeypatch)
    config = SidecarConfig(llm=LlmConfig(provider="gemini"))
    built = build_analysts(config, SETTINGS, db=STORE, metrics=create_metrics())
    assert built.chain.preferred == ()
    assert "guard" not in seams.made

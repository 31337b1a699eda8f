"""The LLM's answer in the configured language: asked in the prompt, checked on the
answer's prose, a wrong language falling back to the local analysis; each fake
vendor answering in both languages through its real SDK."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from ai_sidecar.config import LlmConfig
from ai_sidecar.enrichment.base import AnalystDeclined, IncidentContext
from ai_sidecar.enrichment.llm.analyst import LlmAnalyst
from ai_sidecar.enrichment.llm.answer import InvalidAnswer, parse_answer
from ai_sidecar.enrichment.llm.anthropic import AnthropicProvider
from ai_sidecar.enrichment.llm.base import LlmProvider
from ai_sidecar.enrichment.llm.cache import shape_key
from ai_sidecar.enrichment.llm.gemini import GeminiProvider
from ai_sidecar.enrichment.llm.language import MIN_JUDGED_WORDS, answer_language, plain_words
from ai_sidecar.enrichment.llm.openai import OpenAIProvider
from ai_sidecar.enrichment.llm.prompt import SYSTEM, build_prompt
from ai_sidecar.enrichment.local import LocalAnalyst
from tests.ai_sidecar.enrichment.llm.analyst_fakes import (
    FixedGate,
    PassingCaller,
    llm_metrics,
    sample,
)
from tests.ai_sidecar.enrichment.llm.test_analyst import DRAFT, answer_of
from tests.ai_sidecar.enrichment.llm.test_prompt import canary_context, canary_incident
from tests.peers.llm import (
    ANALYSES,
    ASKS_FOR_FRENCH,
    Computed,
    FakeAnthropic,
    FakeGemini,
    FakeLlmServer,
    FakeOpenAI,
    analysis_in,
    in_the_asked_language,
)

CONFIG = LlmConfig(provider="gemini")


def answer(language: str, **fields: Any) -> str:
    return json.dumps({**ANALYSES[language], **fields}, ensure_ascii=False)


# -- judging the language ----------------------------------------------------------------


def test_names_are_not_words_of_any_language() -> None:
    text = "InterfaceDown on core-1 Gi1/0/24 (link core-1 - sw-dist-3 eth0), host-2, 10.0.0.1."
    assert plain_words([text]) == ["on", "link"]


def test_prose_is_told_apart_and_a_short_text_is_not_judged() -> None:
    assert answer_language([ANALYSES["en"]["summary"], ANALYSES["en"]["impact"]]) == "en"
    assert answer_language([ANALYSES["fr"]["summary"], ANALYSES["fr"]["impact"]]) == "fr"
    # Fewer plain words than the threshold, however many names: no verdict.
    short = "Lien coupé sur core-1 xe-0/1/7 sw-dist-4 ap-ath-25 ap-ath-26 badge-ath-13 cam-ath-13"
    assert len(plain_words([short])) < MIN_JUDGED_WORDS
    assert answer_language([short]) is None


def test_an_answer_in_another_language_than_asked_is_invalid() -> None:
    incident = canary_incident()
    assert parse_answer(answer("fr"), incident, "fr").summary == ANALYSES["fr"]["summary"]
    assert parse_answer(answer("en"), incident, "en").summary == ANALYSES["en"]["summary"]
    with pytest.raises(InvalidAnswer, match=r"written in 'en'.*in 'fr'"):
        parse_answer(answer("en"), incident, "fr")
    with pytest.raises(InvalidAnswer, match=r"written in 'fr'.*in 'en'"):
        parse_answer(answer("fr"), incident, "en")
    # The language is judged on all the prose at once: one English field among
    # French ones does not tip it.
    mixed = answer("fr", actions=["Check the optic."])
    assert parse_answer(mixed, incident, "fr").actions == ("Check the optic.",)
    # Too short to judge: accepted.
    terse = answer("en", summary="Uplink down.", root_cause="core-1", impact="ath", actions=[])
    assert parse_answer(terse, incident, "fr").summary == "Uplink down."


# -- the prompt and the cache ------------------------------------------------------------


def test_the_prompt_asks_for_french_and_english_prompts_are_unchanged() -> None:
    incident = canary_incident()
    english = build_prompt(incident, canary_context(incident), DRAFT, CONFIG, redact=True)
    assert english.request.system == SYSTEM
    context = IncidentContext(canary_context(incident).members, language="fr")
    french = build_prompt(incident, context, DRAFT, CONFIG, redact=True)
    assert french.request.system.startswith(SYSTEM)
    added = french.request.system.removeprefix(SYSTEM)
    assert ASKS_FOR_FRENCH in added
    assert "summary, root_cause, impact" in added  # the JSON keys, named in English


def test_the_cache_key_holds_the_language() -> None:
    incident = canary_incident()
    assert shape_key(incident, "fr") != shape_key(incident, "en")
    assert shape_key(incident) == shape_key(incident, "en")


# -- each vendor's fake, through its SDK, in both languages --------------------------------

Vendor = tuple[Callable[..., FakeLlmServer], Callable[..., LlmProvider]]
VENDORS: dict[str, Vendor] = {
    "gemini": (FakeGemini, GeminiProvider),
    "anthropic": (FakeAnthropic, AnthropicProvider),
    "openai": (FakeOpenAI, OpenAIProvider),
}


def analyst_for(provider: LlmProvider) -> tuple[LlmAnalyst, PassingCaller, Any]:
    metrics, registry = llm_metrics()
    caller = PassingCaller()
    analyst = LlmAnalyst(LocalAnalyst([]), provider, caller, FixedGate(), CONFIG, metrics)
    return analyst, caller, registry


@pytest.mark.parametrize("vendor", sorted(VENDORS))
@pytest.mark.parametrize("language", ["en", "fr"])
async def test_each_vendor_answers_in_the_language_it_is_asked_for(
    vendor: str, language: str
) -> None:
    fake_class, provider_class = VENDORS[vendor]
    async with fake_class(default=Computed(in_the_asked_language)) as fake:
        provider = provider_class(api_key="k", model="m", timeout=5, base_url=fake.base_url)
        analyst, caller, _ = analyst_for(provider)
        incident = canary_incident()
        analysis = await answer_of(analyst, incident, IncidentContext(language=language))
        await analyst.close()
    assert analysis.summary == ANALYSES[language]["summary"]
    assert caller.invalid == []
    [received] = fake.requests
    assert (ASKS_FOR_FRENCH in received.prompt) == (language == "fr")


@pytest.mark.parametrize("vendor", sorted(VENDORS))
async def test_an_english_answer_to_a_french_config_falls_back_to_the_local_analysis(
    vendor: str,
) -> None:
    fake_class, provider_class = VENDORS[vendor]
    async with fake_class(default=analysis_in("en")) as fake:
        provider = provider_class(api_key="k", model="m", timeout=5, base_url=fake.base_url)
        analyst, caller, registry = analyst_for(provider)
        incident = canary_incident()
        with pytest.raises(AnalystDeclined) as declined:
            await answer_of(analyst, incident, IncidentContext(language="fr"))
        await analyst.close()
    # Asked once, told what was wrong and asked again: two invalid answers, then the
    # local analysis speaks, counted as any invalid output is.
    assert declined.value.reason == "invalid"
    assert "written in 'en'" in declined.value.detail
    assert len(fake.requests) == 2
    assert "written in 'en'" in fake.requests[1].prompt
    assert caller.invalid == [incident.id, incident.id]
    assert sample(registry, "scout_llm_fallbacks_total", reason="invalid") == 1

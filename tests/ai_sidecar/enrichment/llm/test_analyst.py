"""The LLM analyst against in-test seams: what the provider sees, what comes out, what counts."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
from collections.abc import Callable
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry

from ai_sidecar.config import LlmConfig
from ai_sidecar.enrichment.base import PENDING, AnalystDeclined, IncidentContext
from ai_sidecar.enrichment.llm.analyst import LlmAnalyst
from ai_sidecar.enrichment.llm.base import LlmProvider, LlmReply, LlmRequest, PolicyDecision
from ai_sidecar.enrichment.llm.redact import REDACTED
from ai_sidecar.enrichment.local import LocalAnalyst
from ai_sidecar.models import Analysis, Incident
from tests.ai_sidecar.enrichment.llm.analyst_fakes import (
    Answer,
    DraftAnalyst,
    FixedGate,
    PassingCaller,
    RecordingProvider,
    llm_metrics,
    sample,
    valid_answer,
)
from tests.ai_sidecar.enrichment.llm.test_prompt import (
    API_KEY,
    CANARIES,
    canary_context,
    canary_incident,
)

CONFIG = LlmConfig(provider="gemini")
DRAFT = Analysis("local summary", "local root cause", "local impact", ("local step",), 0.5, 0.2)
PSEUDONYM = re.compile(r"\b(?:host|ip|email|secret|mac|pattern)-\d+\b")


async def answer_of(analyst: LlmAnalyst, incident: Incident, context: IncidentContext) -> Analysis:
    """What ``analyst`` gives for ``incident``: the first ask starts the call in the
    background and declines with ``pending``; asking again collects the answer."""
    while True:
        try:
            return await analyst.analyse(incident, context)
        except AnalystDeclined as declined:
            if declined.reason != PENDING:
                raise
            await asyncio.sleep(0.001)


def echo_pseudonyms(request: LlmRequest) -> str:
    """An answer naming every pseudonym the model was shown, as a model would cite them."""
    shown = sorted(set(PSEUDONYM.findall(request.user)))
    return valid_answer(root_cause="Seen: " + ", ".join(shown) + ".")


def make(
    *answers: Answer,
    gate: FixedGate | None = None,
    caller: PassingCaller | None = None,
    config: LlmConfig = CONFIG,
    local: bool = False,
) -> tuple[LlmAnalyst, RecordingProvider, FixedGate, PassingCaller, CollectorRegistry]:
    provider = RecordingProvider(*answers, local=local)
    gate = gate or FixedGate()
    caller = caller or PassingCaller()
    metrics, registry = llm_metrics()
    analyst = LlmAnalyst(DraftAnalyst(DRAFT), provider, caller, gate, config, metrics)
    return analyst, provider, gate, caller, registry


async def test_canaries_never_reach_the_provider_and_the_answer_reads_in_real_names() -> None:
    found = canary_incident()
    analyst, provider, gate, _, registry = make(echo_pseudonyms)
    analysis = await answer_of(analyst, found, canary_context(found))
    sent = provider.sent()
    for canary in CANARIES:
        assert canary not in sent
    assert "canary-core-1" in analysis.root_cause
    assert "10.66.77.88" in analysis.root_cause
    assert "noc@canary.example.com" in analysis.root_cause
    assert "db-7.canary.example.com" in analysis.root_cause
    # Credentials stay redacted, even in the answer.
    assert REDACTED in analysis.root_cause
    assert "hunter2" not in analysis.root_cause
    assert API_KEY not in analysis.root_cause
    # The gate keeps the answer as the model gave it: pseudonyms, no canary.
    [(remembered_incident, remembered, kept)] = gate.remembered
    assert remembered_incident is found
    assert remembered == analysis
    assert "host-1" in kept
    for canary in CANARIES:
        assert canary not in kept
    assert sample(registry, "scout_llm_redactions_total", kind="secret") == 2
    assert sample(registry, "scout_llm_redactions_total", kind="ip") == 1
    assert sample(registry, "scout_llm_redactions_total", kind="email") == 1


async def test_the_local_draft_is_computed_first_and_given_to_the_model() -> None:
    found = canary_incident()
    provider = RecordingProvider()
    metrics, _ = llm_metrics()
    analyst = LlmAnalyst(LocalAnalyst([]), provider, PassingCaller(), FixedGate(), CONFIG, metrics)
    assert analyst.name == "gemini"
    await answer_of(analyst, found, IncidentContext())
    # The local analyst's words, in pseudonyms.
    assert "InterfaceDown on host-1:9100 (link layer) is the probable root cause" in (
        provider.requests[0].user
    )


async def test_the_draft_is_made_even_when_the_gate_declines() -> None:
    gate = FixedGate(PolicyDecision(False, "repeat", "a repeat"))
    provider = RecordingProvider()
    metrics, _ = llm_metrics()
    local = DraftAnalyst(DRAFT)
    analyst = LlmAnalyst(local, provider, PassingCaller(), gate, CONFIG, metrics)
    with pytest.raises(AnalystDeclined):
        await answer_of(analyst, canary_incident(), IncidentContext())
    assert local.asked == 1


HOSTILE = valid_answer(
    summary="<!channel> <@U123> click <https://evil.example/x|the dashboard> <b>now</b>",
    # Far past the field's cap, within what an answer may hold (LlmRequest.answer_limit).
    root_cause="<script>alert(1)</script> " + "x" * 20_000,
    impact="@here everything is fine",
    actions=["<!everyone> run `rm -rf /`"] * 50,
    evidence=["not-a-member"],
)


async def test_hostile_answers_come_out_sanitised() -> None:
    found = canary_incident()
    analyst, *_ = make(HOSTILE)
    analysis = await answer_of(analyst, found, IncidentContext())
    text = " ".join((analysis.summary, analysis.root_cause, analysis.impact, *analysis.actions))
    for markup in ("<!channel>", "<@U123>", "<https://", "<script>", "<b>", "@here", "<!everyone>"):
        assert markup not in text
    assert "the dashboard (https://evil.example/x)" in analysis.summary
    assert len(analysis.root_cause) <= 600
    assert len(analysis.actions) == 8
    assert analysis.evidence == ()


async def test_an_invalid_answer_is_retried_once_with_the_error() -> None:
    found = canary_incident()
    analyst, provider, gate, caller, registry = make(
        "Sure! The uplink failed.", valid_answer(summary="second try")
    )
    analysis = await answer_of(analyst, found, IncidentContext())
    assert analysis.summary == "second try"
    first, second = provider.requests
    assert second.user.startswith(first.user)
    assert "rejected: the answer is not valid JSON" in second.user
    assert caller.invalid == [found.id]
    assert len(gate.remembered) == 1
    assert sample(registry, "scout_llm_fallbacks_total", reason="invalid") == 0


async def test_two_invalid_answers_decline_and_count() -> None:
    found = canary_incident()
    analyst, provider, gate, caller, registry = make(
        "not json", valid_answer(confidence=7), valid_answer()
    )
    with pytest.raises(AnalystDeclined) as declined:
        await answer_of(analyst, found, IncidentContext())
    assert declined.value.reason == "invalid"
    assert "confidence must be a number from 0 to 1" in declined.value.detail
    assert len(provider.requests) == 2
    assert caller.invalid == [found.id, found.id]
    assert gate.remembered == []
    assert sample(registry, "scout_llm_fallbacks_total", reason="invalid") == 1


async def test_a_caller_without_an_answer_declines_with_its_reason_counted() -> None:
    found = canary_incident()
    analyst, _provider, gate, _, registry = make(
        caller=PassingCaller(decline=("budget", "requests_per_day spent"))
    )
    with pytest.raises(AnalystDeclined) as declined:
        await answer_of(analyst, found, IncidentContext())
    assert (declined.value.reason, declined.value.detail) == ("budget", "requests_per_day spent")
    assert sample(registry, "scout_llm_fallbacks_total", reason="budget") == 1
    assert gate.remembered == []


async def test_a_gate_that_says_no_declines_without_a_call() -> None:
    found = canary_incident()
    gate = FixedGate(PolicyDecision(False, "low_priority", "P4 incidents are explained locally"))
    analyst, provider, _, _, registry = make(gate=gate)
    with pytest.raises(AnalystDeclined) as declined:
        await answer_of(analyst, found, IncidentContext())
    assert declined.value.reason == "low_priority"
    assert provider.requests == []
    assert sample(registry, "scout_llm_fallbacks_total", reason="low_priority") == 1
    assert sample(registry, "scout_llm_redactions_total", kind="host") == 0


async def test_the_previous_answer_is_reused_without_a_call() -> None:
    found = canary_incident()
    previous = Analysis("before", "before", "before", (), 0.9, 0.1)
    gate = FixedGate(PolicyDecision(False, "unchanged", "nothing changed", previous=previous))
    analyst, provider, _, _, registry = make(gate=gate)
    assert await answer_of(analyst, found, IncidentContext()) is previous
    assert provider.requests == []
    assert gate.remembered == []
    assert sample(registry, "scout_llm_cache_hits_total", kind="previous") == 1


def renamed(found: Incident, old: str, new: str) -> Incident:
    """``found`` with every ``old`` in labels, annotations and reasons read as ``new``."""
    members = {
        fp: replace(
            m,
            labels={k: v.replace(old, new) for k, v in m.labels.items()},
            annotations={k: v.replace(old, new) for k, v in m.annotations.items()},
        )
        for fp, m in found.members.items()
    }
    return replace(
        found,
        members=members,
        root_cause_reasons=tuple(r.replace(old, new) for r in found.root_cause_reasons),
        priority_reasons=tuple(r.replace(old, new) for r in found.priority_reasons),
    )


async def test_a_similar_incidents_answer_is_restored_in_this_incidents_names() -> None:
    first = canary_incident()
    analyst, _, gate, _, _ = make(echo_pseudonyms)
    await answer_of(analyst, first, IncidentContext())
    [(_, _, kept)] = gate.remembered

    second = renamed(first, "canary", "branch")
    cached = FixedGate(PolicyDecision(False, "cached", "a similar incident", cached_answer=kept))
    analyst, provider, _, _, registry = make(gate=cached)
    analysis = await answer_of(analyst, second, IncidentContext())
    assert provider.requests == []
    assert "branch-core-1" in analysis.root_cause
    assert "canary" not in analysis.root_cause
    assert sample(registry, "scout_llm_cache_hits_total", kind="similar") == 1


async def test_an_invalid_cached_answer_declines() -> None:
    gate = FixedGate(PolicyDecision(False, "cached", "similar", cached_answer='{"summary": 1}'))
    analyst, provider, _, _, registry = make(gate=gate)
    with pytest.raises(AnalystDeclined) as declined:
        await answer_of(analyst, canary_incident(), IncidentContext())
    assert declined.value.reason == "invalid"
    assert provider.requests == []
    assert sample(registry, "scout_llm_fallbacks_total", reason="invalid") == 1


async def test_a_local_provider_may_see_real_names_when_redaction_is_off() -> None:
    found = canary_incident()
    off = LlmConfig(provider="openai", redact=False)
    analyst, provider, *_ = make(config=off, local=True)
    await answer_of(analyst, found, IncidentContext())
    assert "canary-core-1" in provider.sent()


async def test_a_cloud_provider_is_redacted_even_when_redaction_is_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    found = canary_incident()
    off = LlmConfig(provider="gemini", redact=False)
    with caplog.at_level(logging.WARNING, logger="ai_sidecar.llm"):
        analyst, provider, *_ = make(config=off, local=False)
    assert [r.getMessage() for r in caplog.records] == [
        "llm.redact is false, but provider gemini is not local: redacting anyway"
    ]
    await answer_of(analyst, found, IncidentContext())
    for canary in CANARIES:
        assert canary not in provider.sent()


async def test_the_evidence_names_this_incidents_members() -> None:
    found = canary_incident()
    root = found.root_cause or ""
    other = next(fp for fp in found.members if fp != root)
    answer = valid_answer(evidence=[root, "elsewhere"], false_positives=[other])
    analyst, *_ = make(answer)
    analysis = await answer_of(analyst, found, IncidentContext())
    assert (analysis.evidence, analysis.false_positives) == ((root,), (other,))


class HeldCaller(PassingCaller):
    """A guard whose calls wait until the test releases them."""

    def __init__(self, decline: tuple[str, str] | None = None) -> None:
        super().__init__(decline)
        self.release = asyncio.Event()
        self.cancelled = False

    async def call(
        self,
        provider: LlmProvider,
        request: LlmRequest,
        *,
        incident_id: str,
        check: Callable[[LlmReply], object] | None = None,
    ) -> LlmReply:
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return await super().call(provider, request, incident_id=incident_id, check=check)


async def test_the_call_runs_in_the_background_and_the_answer_is_collected_later() -> None:
    caller = HeldCaller()
    analyst, provider, gate, _, _ = make(caller=caller)
    found = canary_incident()
    # The page is never held for the model: pending at once, the local analysis speaks.
    with pytest.raises(AnalystDeclined) as first:
        await analyst.analyse(found, IncidentContext())
    assert (first.value.reason, first.value.retry_after) == (PENDING, 0.0)
    # Asked again while the call is in flight: still pending, come back soon.
    with pytest.raises(AnalystDeclined) as again:
        await analyst.analyse(found, IncidentContext())
    assert again.value.reason == PENDING
    assert (again.value.retry_after or 0) > 0
    caller.release.set()
    analysis = await answer_of(analyst, found, IncidentContext())
    assert analysis.summary
    assert len(provider.requests) == 1
    assert len(gate.remembered) == 1


async def test_a_background_call_that_ends_in_a_decline_gives_that_decline() -> None:
    analyst, provider, _, _, registry = make(caller=PassingCaller(("budget", "cap reached")))
    with pytest.raises(AnalystDeclined) as declined:
        await answer_of(analyst, canary_incident(), IncidentContext())
    assert (declined.value.reason, declined.value.detail) == ("budget", "cap reached")
    assert sample(registry, "scout_llm_fallbacks_total", reason="budget") == 1
    assert provider.requests == []


async def test_closing_cancels_the_calls_in_flight() -> None:
    caller = HeldCaller()
    analyst, _, _, _, _ = make(caller=caller)
    with pytest.raises(AnalystDeclined):
        await analyst.analyse(canary_incident(), IncidentContext())
    await asyncio.sleep(0)  # the call starts waiting
    await analyst.close()
    assert caller.cancelled


class RecordingGate(FixedGate):
    """A fixed gate that records the versions it is asked about."""

    def __init__(self, decision: PolicyDecision | None = None) -> None:
        super().__init__(decision)
        self.versions: list[int] = []

    def decide(self, incident: Incident, context: IncidentContext, analyst: str) -> PolicyDecision:
        self.versions.append(incident.version)
        return super().decide(incident, context, analyst)


async def test_an_answer_for_an_older_version_goes_back_to_the_gate_for_the_newer() -> None:
    caller = HeldCaller()
    gate = RecordingGate()
    analyst, provider, _, _, _ = make(caller=caller, gate=gate)
    found = canary_incident()
    with pytest.raises(AnalystDeclined):
        await analyst.analyse(found, IncidentContext())
    # The incident changes while the model answers about the older version.
    newer = replace(found, version=found.version + 1)
    caller.release.set()
    await asyncio.sleep(0.01)
    # The answer is remembered (the gate weighs it), but the newer version is
    # the gate's to decide on, not served the older version's answer as its own.
    with pytest.raises(AnalystDeclined) as declined:
        await analyst.analyse(newer, IncidentContext())
    assert declined.value.reason == PENDING
    assert gate.versions == [found.version, newer.version]
    assert len(gate.remembered) == 1
    caller.release.set()
    await answer_of(analyst, newer, IncidentContext())
    assert len(provider.requests) == 2


async def test_a_decline_nobody_collects_is_not_reported_as_never_retrieved() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        analyst, _, _, _, _ = make(caller=PassingCaller(("budget", "cap reached")))
        with pytest.raises(AnalystDeclined):
            await analyst.analyse(canary_incident(), IncidentContext())
        for _ in range(3):
            await asyncio.sleep(0)  # the call ends in its decline
        del analyst  # its incident is never asked about again
        gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert reported == []

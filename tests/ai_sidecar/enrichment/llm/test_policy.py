"""The hybrid policy: which incidents are worth an LLM call, and what answers the others."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry

from ai_sidecar.config import LlmConfig, LlmPolicyConfig
from ai_sidecar.enrichment.base import IncidentContext
from ai_sidecar.enrichment.llm.base import LlmGate
from ai_sidecar.enrichment.llm.cache import LruMap, ShapeCache, shape_key
from ai_sidecar.enrichment.llm.metrics import LlmMetrics, create_llm_metrics
from ai_sidecar.enrichment.llm.policy import LlmPolicy
from ai_sidecar.models import Analysis, AnomalyEvidence, Incident, Priority, RootCauseFacts
from tests.ai_sidecar.builders import T0, member

LLM = "gemini"
NO_CONTEXT = IncidentContext()
TTL = timedelta(hours=1)
ANSWER = '{"summary": "host-1 lost its uplink"}'


def analysis(summary: str = "uplink of host-1 is down") -> Analysis:
    return Analysis(summary, "host-1 Gi0/1 lost carrier", "site offline", ("check SFP",), 0.8, 0.1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def config(**policy: object) -> LlmConfig:
    return LlmConfig(
        provider="gemini", policy=LlmPolicyConfig.model_validate({"cache_ttl": TTL, **policy})
    )


def make_incident(
    incident_id: str = "inc-1",
    *,
    priority: Priority = "P1",
    version: int = 1,
    instance: str = "sw-1",
    root: str = "InterfaceDown",
    rule: str = "upstream",
    **labels: str,
) -> Incident:
    """An open incident of an InterfaceDown and a BGPDown on ``instance``; ``root`` is its cause."""
    members = (
        member("InterfaceDown", instance, severity="critical", **labels),
        member("BGPDown", instance, severity="critical"),
    )
    by_name = {m.alertname: m for m in members}
    return Incident(
        id=incident_id,
        status="open",
        group={"site": "hq"},
        members={m.fingerprint: m for m in members},
        created_at=T0,
        updated_at=T0,
        root_cause=by_name[root].fingerprint,
        priority=priority,
        version=version,
        root_cause_facts=RootCauseFacts(rule, "link", 1),  # type: ignore[arg-type]
    )


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> LlmMetrics:
    return create_llm_metrics(registry)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def policy(metrics: LlmMetrics, clock: Clock) -> LlmPolicy:
    return LlmPolicy(config(), metrics, clock=clock)


def cache_hits(registry: CollectorRegistry, kind: str) -> float:
    return registry.get_sample_value("scout_llm_cache_hits_total", {"kind": kind}) or 0.0


def test_the_policy_is_the_gate_the_analyst_depends_on(policy: LlmPolicy) -> None:
    gate: LlmGate = policy
    assert gate.decide(make_incident(), NO_CONTEXT, LLM).call


@pytest.mark.parametrize(("priority", "reason"), [("P1", "new_p1"), ("P2", "new_p2")])
def test_a_new_incident_at_p1_or_p2_calls(
    policy: LlmPolicy, priority: Priority, reason: str
) -> None:
    decision = policy.decide(make_incident(priority=priority), NO_CONTEXT, LLM)
    assert (decision.call, decision.reason) == (True, reason)
    assert decision.previous is None
    assert decision.cached_answer is None


@pytest.mark.parametrize("priority", ["P3", "P4"])
def test_a_low_priority_incident_declines(policy: LlmPolicy, priority: Priority) -> None:
    decision = policy.decide(make_incident(priority=priority), NO_CONTEXT, LLM)
    assert (decision.call, decision.reason) == (False, "low_priority")
    assert decision.previous is None
    assert decision.cached_answer is None
    assert f"{priority} is below P2" in decision.detail


def test_min_priority_is_configurable_and_applies_on_reload(policy: LlmPolicy) -> None:
    p3 = make_incident(priority="P3")
    assert not policy.decide(p3, NO_CONTEXT, LLM).call
    policy.reconfigure(config(min_priority="P3"))
    assert policy.decide(p3, NO_CONTEXT, LLM).reason == "new_p3"
    policy.reconfigure(config(min_priority="P1"))
    assert policy.decide(make_incident("inc-2", priority="P2"), NO_CONTEXT, LLM).reason == (
        "low_priority"
    )


def test_strong_anomaly_evidence_calls_below_the_priority(policy: LlmPolicy) -> None:
    strong = AnomalyEvidence("WAN throughput of fw-1", 0.95)
    weak = AnomalyEvidence("WAN throughput of fw-1", 0.5)
    p4 = make_incident(priority="P4")

    assert policy.decide(p4, IncidentContext(anomaly=(weak,)), LLM).reason == "low_priority"
    from_context = policy.decide(p4, IncidentContext(anomaly=(weak, strong)), LLM)
    assert (from_context.call, from_context.reason) == (True, "anomaly")
    assert "0.95" in from_context.detail
    on_incident = replace(p4, id="inc-2", anomaly_evidence=(strong,))
    assert policy.decide(on_incident, NO_CONTEXT, LLM).reason == "anomaly"
    policy.reconfigure(config(anomaly_score=0.99))
    assert policy.decide(replace(on_incident, id="inc-3"), NO_CONTEXT, LLM).reason == (
        "low_priority"
    )


def test_repeats_and_flaps_of_an_explained_incident_reuse_its_analysis(
    policy: LlmPolicy, registry: CollectorRegistry
) -> None:
    explained = make_incident()
    said = analysis()
    assert policy.decide(explained, NO_CONTEXT, LLM).call
    policy.remember(explained, said, ANSWER)

    same_version = policy.decide(explained, NO_CONTEXT, LLM)
    assert (same_version.call, same_version.reason, same_version.previous) == (
        False,
        "unchanged",
        said,
    )
    flapped = replace(
        explained,
        version=2,
        members={fp: replace(m, flap_count=3) for fp, m in explained.members.items()},
    )
    repeat = policy.decide(flapped, NO_CONTEXT, LLM)
    assert (repeat.call, repeat.reason, repeat.previous) == (False, "repeat", said)
    assert repeat.cached_answer is None
    # A lower priority is no reason to ask again either.
    calmer = policy.decide(replace(flapped, version=3, priority="P3"), NO_CONTEXT, LLM)
    assert (calmer.call, calmer.previous) == (False, said)
    # Counted by the analyst that serves them, once: the policy only decides.
    assert cache_hits(registry, "incident") == cache_hits(registry, "previous") == 0


def test_a_priority_rise_calls_again(policy: LlmPolicy) -> None:
    explained = make_incident(priority="P2")
    policy.remember(explained, analysis(), ANSWER)

    risen = policy.decide(replace(explained, version=2, priority="P1"), NO_CONTEXT, LLM)

    assert (risen.call, risen.reason) == (True, "escalated")
    assert "P2 to P1" in risen.detail


def test_a_new_root_cause_calls_again_if_the_incident_still_passes_the_gate(
    policy: LlmPolicy, clock: Clock
) -> None:
    explained = make_incident()
    policy.remember(explained, analysis(), ANSWER)
    clock.now += 600  # past the reanalysis interval
    moved = make_incident(version=2, root="BGPDown")

    again = policy.decide(moved, NO_CONTEXT, LLM)
    assert (again.call, again.reason) == (True, "root_cause")

    policy.remember(replace(moved, priority="P3"), analysis(), ANSWER)
    low = policy.decide(replace(moved, version=3, priority="P4", root_cause="x"), NO_CONTEXT, LLM)
    # Its old analysis names the old cause: the local analyst speaks instead.
    assert (low.call, low.reason, low.previous) == (False, "low_priority", None)


def test_a_root_cause_that_moves_soon_after_a_call_is_deferred_and_calls_are_capped(
    metrics: LlmMetrics, clock: Clock
) -> None:
    policy = LlmPolicy(config(reanalysis_interval="2m", max_calls=2), metrics, clock=clock)
    policy.remember(make_incident(), analysis(), ANSWER)
    # The storm grows: a new root cause 30 s later is deferred to the interval's end.
    clock.now += 30
    moved = make_incident(version=2, root="BGPDown")
    settling = policy.decide(moved, NO_CONTEXT, LLM)
    assert (settling.call, settling.reason, settling.previous) == (False, "settling", None)
    assert settling.retry_after == 90
    assert settling.detail.endswith("asked again in 1m30s")
    # When it is over, the same version is asked about ...
    clock.now += 90
    assert policy.decide(moved, NO_CONTEXT, LLM).reason == "root_cause"
    policy.remember(moved, analysis(), ANSWER)
    # ... and once the incident had max_calls, never again.
    clock.now += 3600
    moved_back = make_incident(version=3, root="InterfaceDown")
    capped = policy.decide(moved_back, NO_CONTEXT, LLM)
    assert (capped.call, capped.reason, capped.retry_after) == (False, "call_cap", None)
    # Escalation is held back by neither.
    policy.remember(replace(moved, priority="P2"), analysis(), ANSWER)
    risen = replace(moved_back, version=4, priority="P1")
    assert policy.decide(risen, NO_CONTEXT, LLM).reason == "escalated"


def test_an_incident_shaped_like_an_explained_one_gets_its_answer_within_the_ttl(
    policy: LlmPolicy, registry: CollectorRegistry, clock: Clock
) -> None:
    first = make_incident(instance="sw-1")
    policy.remember(first, analysis(), ANSWER)
    # Other label values (another switch), same alertnames, label names and rule.
    twin = make_incident("inc-2", instance="core-7")

    cached = policy.decide(twin, NO_CONTEXT, LLM)
    assert (cached.call, cached.reason, cached.cached_answer) == (False, "cached", ANSWER)
    assert cached.previous is None
    assert cache_hits(registry, "shape") == cache_hits(registry, "similar") == 0

    clock.now += TTL.total_seconds()
    expired = policy.decide(twin, NO_CONTEXT, LLM)
    assert (expired.call, expired.reason, expired.cached_answer) == (True, "new_p1", None)


def test_other_shapes_are_not_answered_from_the_cache(policy: LlmPolicy) -> None:
    policy.remember(make_incident(), analysis(), ANSWER)
    others = {
        "another label name": make_incident("inc-2", ifName="Gi0/1"),
        "another root cause": make_incident("inc-3", root="BGPDown"),
        "another rule": make_incident("inc-4", rule="earliest"),
    }
    for what, other in others.items():
        decision = policy.decide(other, NO_CONTEXT, LLM)
        assert (decision.call, decision.cached_answer) == (True, None), what
    # The gate comes first: a low-priority look-alike is not worth even a cached answer.
    low = policy.decide(make_incident("inc-5", priority="P4"), NO_CONTEXT, LLM)
    assert (low.reason, low.cached_answer) == ("low_priority", None)


def test_a_zero_ttl_turns_the_cache_off_and_a_reload_drops_what_it_kept(
    metrics: LlmMetrics, clock: Clock
) -> None:
    off = LlmPolicy(config(cache_ttl="0"), metrics, clock=clock)
    off.remember(make_incident(), analysis(), ANSWER)
    assert off.decide(make_incident("inc-2", instance="x"), NO_CONTEXT, LLM).call

    on = LlmPolicy(config(), metrics, clock=clock)
    on.remember(make_incident(), analysis(), ANSWER)
    assert on.decide(make_incident("inc-2", instance="x"), NO_CONTEXT, LLM).reason == "cached"
    on.reconfigure(config(cache_ttl="0"))
    assert on.decide(make_incident("inc-3", instance="y"), NO_CONTEXT, LLM).call


def test_after_a_restart_the_stored_llm_analysis_is_reused(
    metrics: LlmMetrics, clock: Clock
) -> None:
    said = analysis("from before the restart")
    stored = replace(
        make_incident(version=5, priority="P2"),
        analysis=said,
        analyst=LLM,
        analysed_version=4,
        analysed_priority="P2",
    )
    fresh = LlmPolicy(config(), metrics, clock=clock)

    reused = fresh.decide(stored, NO_CONTEXT, LLM)
    assert (reused.call, reused.reason, reused.previous) == (False, "repeat", said)
    same = fresh.decide(replace(stored, version=4), NO_CONTEXT, LLM)
    assert (same.reason, same.previous) == ("unchanged", said)

    risen = LlmPolicy(config(), metrics, clock=clock).decide(
        replace(stored, priority="P1"), NO_CONTEXT, LLM
    )
    assert (risen.call, risen.reason) == (True, "escalated")
    # The local analyst spoke last: nothing of the LLM's to reuse.
    local = replace(stored, analyst="local")
    assert LlmPolicy(config(), metrics, clock=clock).decide(local, NO_CONTEXT, LLM).call


def test_an_earlier_local_analysis_at_a_lower_priority_makes_it_an_escalation(
    policy: LlmPolicy,
) -> None:
    was_low = replace(make_incident(version=3), analyst="local", analysed_priority="P3")
    decision = policy.decide(was_low, NO_CONTEXT, LLM)
    assert (decision.call, decision.reason) == (True, "escalated")


def test_at_most_one_call_per_incident_version(policy: LlmPolicy) -> None:
    first = make_incident()
    assert policy.decide(first, NO_CONTEXT, LLM).call
    again = policy.decide(first, NO_CONTEXT, LLM)
    assert (again.call, again.reason) == (False, "asked")
    assert policy.decide(replace(first, version=2), NO_CONTEXT, LLM).call


def test_a_resolved_incident_never_calls(policy: LlmPolicy) -> None:
    never_explained = replace(make_incident(), status="resolved", resolved_at=T0)
    decision = policy.decide(never_explained, NO_CONTEXT, LLM)
    assert (decision.call, decision.reason, decision.previous) == (False, "resolved", None)

    explained = make_incident("inc-2")
    said = analysis()
    policy.remember(explained, said, ANSWER)
    all_resolved = replace(
        explained,
        version=2,
        members={fp: replace(m, status="resolved") for fp, m in explained.members.items()},
    )
    decision = policy.decide(all_resolved, NO_CONTEXT, LLM)
    assert (decision.call, decision.reason, decision.previous) == (False, "resolved", said)


def test_memory_is_bounded(metrics: LlmMetrics, clock: Clock) -> None:
    policy = LlmPolicy(config(cache_ttl="0"), metrics, clock=clock, max_incidents=2)
    incidents = [make_incident(f"inc-{n}") for n in range(3)]
    for item in incidents:
        policy.remember(item, analysis(), ANSWER)

    oldest, _, newest = (policy.decide(replace(i, version=2), NO_CONTEXT, LLM) for i in incidents)

    assert (oldest.call, oldest.reason) == (True, "new_p1")
    assert (newest.call, newest.reason) == (False, "repeat")


def test_the_shape_cache_is_bounded_and_forgets_the_least_recently_used(clock: Clock) -> None:
    cache = ShapeCache(60, max_entries=2, clock=clock)
    cache.put("a", "A")
    cache.put("b", "B")
    assert cache.get("a") == "A"  # now a is the most recently used
    cache.put("c", "C")
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == ("A", None, "C")
    clock.now += 30
    cache.put("d", "D")
    clock.now += 30
    cache.prune()
    assert (len(cache), cache.get("d")) == (1, "D")


def test_lru_map_rejects_a_useless_limit() -> None:
    with pytest.raises(ValueError, match="limit must be >= 1"):
        LruMap[str, int](0)


def test_the_shape_key_ignores_label_values_and_nothing_else(policy: LlmPolicy) -> None:
    base = make_incident()
    assert shape_key(base) == shape_key(make_incident("inc-9", instance="other", version=7))
    assert shape_key(base) != shape_key(make_incident(ifName="Gi0/1"))
    assert shape_key(base) != shape_key(make_incident(root="BGPDown"))
    assert shape_key(base) != shape_key(replace(base, root_cause_facts=None))
    one_member = replace(base, members=dict(list(base.members.items())[:1]))
    assert shape_key(base) != shape_key(one_member)
    assert policy.shape_key(base) == shape_key(base)

"""The LLM analysts' metrics: calls, tokens, cost, latency, cache, redaction, budget, circuit.

They live on the pipeline's registry (the worker process's when it runs apart),
next to the worker's own analysis metrics, which say which analyst spoke.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# An LLM call takes from a fraction of a second (a local model, a cache) to a
# minute (a large prompt on a busy cloud model).
LATENCY_BUCKETS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)


@dataclass(frozen=True, slots=True)
class LlmMetrics:
    requests: Counter
    input_tokens: Counter
    output_tokens: Counter
    cost: Counter
    latency: Histogram
    cache_hits: Counter
    redactions: Counter
    fallbacks: Counter
    budget_remaining: Gauge
    circuit_state: Gauge


def create_llm_metrics(registry: CollectorRegistry) -> LlmMetrics:
    provider_model = ["provider", "model"]
    return LlmMetrics(
        requests=Counter(
            "scout_llm_requests",
            "LLM calls by provider, model and outcome (ok, invalid, rate_limited, "
            "unavailable, timeout, rejected, error); each retry is a call.",
            ["provider", "model", "outcome"],
            registry=registry,
        ),
        input_tokens=Counter(
            "scout_llm_input_tokens",
            "Prompt tokens the provider counted.",
            provider_model,
            registry=registry,
        ),
        output_tokens=Counter(
            "scout_llm_output_tokens",
            "Answer tokens the provider counted.",
            provider_model,
            registry=registry,
        ),
        cost=Counter(
            "scout_llm_cost_dollars",
            "Estimated cost in US dollars, from the configured price per million tokens.",
            provider_model,
            registry=registry,
        ),
        latency=Histogram(
            "scout_llm_request_duration_seconds",
            "Time of one LLM call, answered or not.",
            provider_model,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ),
        cache_hits=Counter(
            "scout_llm_cache_hits",
            "Analyses given without a call, by kind: previous (the incident's own, nothing "
            "material changed) or similar (an incident of the same shape within the TTL).",
            ["kind"],
            registry=registry,
        ),
        redactions=Counter(
            "scout_llm_redactions",
            "Values replaced by pseudonyms before a call, by kind (ip, host, email, mac, "
            "secret, pattern).",
            ["kind"],
            registry=registry,
        ),
        fallbacks=Counter(
            "scout_llm_fallbacks",
            "Incidents the local analysis answered instead of the LLM, by reason (a policy "
            "token such as low_priority or repeat; disabled, budget, circuit, timeout, "
            "invalid...).",
            ["reason"],
            registry=registry,
        ),
        budget_remaining=Gauge(
            "scout_llm_budget_remaining",
            "What is left of each budget (requests_per_day, requests_per_minute, "
            "tokens_per_minute, cost_per_month); -1 for a budget without a cap.",
            ["budget"],
            registry=registry,
        ),
        circuit_state=Gauge(
            "scout_llm_circuit_state",
            "The circuit breaker per provider: 0 closed, 1 half-open (one trial call), 2 open.",
            ["provider"],
            registry=registry,
        ),
    )

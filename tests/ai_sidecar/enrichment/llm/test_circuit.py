"""The circuit breaker: opens after a run of failures, refuses, then lets one trial through."""

from __future__ import annotations

from datetime import timedelta

from ai_sidecar.config import CircuitConfig
from ai_sidecar.enrichment.llm.circuit import CircuitBreaker, CircuitState


class Clock:
    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self) -> float:
        return self.seconds


def breaker(clock: Clock, failures: int = 3, reset: float = 60) -> CircuitBreaker:
    return CircuitBreaker(
        CircuitConfig(failures=failures, reset=timedelta(seconds=reset)), clock=clock
    )


def opened(clock: Clock, reset: float) -> CircuitBreaker:
    """A breaker whose gemini circuit opened at ``clock``'s time after one failure."""
    circuit = breaker(clock, failures=1, reset=reset)
    circuit.failed("gemini")
    return circuit


def test_opens_after_failures_in_a_row_only() -> None:
    clock = Clock()
    circuit = breaker(clock)
    circuit.failed("gemini")
    circuit.failed("gemini")
    circuit.succeeded("gemini")  # the run is broken
    circuit.failed("gemini")
    circuit.failed("gemini")
    assert circuit.state("gemini") is CircuitState.CLOSED
    assert circuit.allow("gemini")
    circuit.failed("gemini")
    assert circuit.state("gemini") is CircuitState.OPEN
    assert not circuit.allow("gemini")
    # Circuits are per provider.
    assert circuit.allow("anthropic")


def test_half_open_lets_one_trial_through_and_success_closes() -> None:
    clock = Clock()
    circuit = opened(clock, reset=60)
    clock.seconds = 59.9
    assert not circuit.allow("gemini")
    clock.seconds = 60
    assert circuit.state("gemini") is CircuitState.HALF_OPEN
    assert circuit.allow("gemini")
    assert not circuit.allow("gemini")  # a second caller waits for the trial's result
    circuit.succeeded("gemini")
    assert circuit.state("gemini") is CircuitState.CLOSED
    assert circuit.allow("gemini")
    assert circuit.allow("gemini")


def test_a_failed_trial_opens_again_for_a_whole_reset() -> None:
    clock = Clock()
    circuit = breaker(clock, failures=3, reset=60)
    for _ in range(3):
        circuit.failed("gemini")
    clock.seconds = 61
    assert circuit.allow("gemini")
    circuit.failed("gemini")  # one failure is enough in half-open
    assert circuit.state("gemini") is CircuitState.OPEN
    clock.seconds = 120
    assert not circuit.allow("gemini")
    clock.seconds = 121
    assert circuit.allow("gemini")


def test_a_released_trial_gives_its_turn_back() -> None:
    clock = Clock()
    circuit = opened(clock, reset=10)
    clock.seconds = 10
    assert circuit.allow("gemini")
    circuit.release("gemini")
    assert circuit.state("gemini") is CircuitState.HALF_OPEN
    assert circuit.allow("gemini")


def test_reconfigure_applies_the_new_reset_to_an_open_circuit() -> None:
    clock = Clock()
    circuit = opened(clock, reset=300)
    clock.seconds = 30
    assert not circuit.allow("gemini")
    circuit.reconfigure(CircuitConfig(failures=1, reset=timedelta(seconds=20)))
    assert circuit.allow("gemini")

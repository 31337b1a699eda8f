"""The circuit breaker: after a run of failed calls, stop calling a provider for a while.

One circuit per provider name. Closed, calls go through; after
``circuit.failures`` failed calls in a row it opens, and for ``circuit.reset``
no call is made (the guard declines with ``circuit`` at once, so incidents do
not wait out a time box each against a provider that is down). Then it is
half-open: one trial call goes through while others are still refused; an
answer closes the circuit, a failure opens it again for another ``reset``.

What counts is a whole call, retries included, as the guard ends it:

- a failure: the provider was unavailable (5xx, connection), timed out, still
  rate-limited after the retries, or failed in an unexpected way;
- a success: an answer came, or the provider refused the request itself
  (:class:`~ai_sidecar.enrichment.llm.base.LlmRejected`, a 4xx other than
  429). A rejection proves the provider is up and answering, and is usually
  about one request (a prompt too large), so it must not cut the others off;
  a bad key rejects every call, but those cost nothing, are bounded by the
  daily request budget and show in ``scout_llm_requests_total{outcome="rejected"}``.

A trial that ends neither way (the worker cancelled the analysis) gives its
turn back with :meth:`CircuitBreaker.release`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from ai_sidecar.config import CircuitConfig


class CircuitState(IntEnum):
    """The states, valued as ``scout_llm_circuit_state`` shows them."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(slots=True)
class _Circuit:
    failures: int = 0
    opened_at: float | None = None
    trial_running: bool = False


class CircuitBreaker:
    """The circuits of every provider the guard has called; ``clock`` is monotonic seconds."""

    def __init__(
        self, config: CircuitConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._config = config
        self._clock = clock
        self._circuits: dict[str, _Circuit] = {}

    def reconfigure(self, config: CircuitConfig) -> None:
        """New thresholds (a reload); open circuits stay open, under the new ``reset``."""
        self._config = config

    def state(self, provider: str) -> CircuitState:
        circuit = self._circuits.get(provider)
        if circuit is None or circuit.opened_at is None:
            return CircuitState.CLOSED
        if self._clock() - circuit.opened_at < self._config.reset.total_seconds():
            return CircuitState.OPEN
        return CircuitState.HALF_OPEN

    def allow(self, provider: str) -> bool:
        """May a call go to ``provider`` now? In half-open, True once: for the trial."""
        state = self.state(provider)
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.OPEN:
            return False
        circuit = self._circuits[provider]
        if circuit.trial_running:
            return False
        circuit.trial_running = True
        return True

    def succeeded(self, provider: str) -> None:
        self._circuits[provider] = _Circuit()

    def failed(self, provider: str) -> None:
        circuit = self._circuits.setdefault(provider, _Circuit())
        circuit.trial_running = False
        circuit.failures += 1
        if circuit.opened_at is not None or circuit.failures >= self._config.failures:
            circuit.opened_at = self._clock()

    def release(self, provider: str) -> None:
        """A call ended with neither an answer nor a failure: a trial gives its turn back."""
        circuit = self._circuits.get(provider)
        if circuit is not None:
            circuit.trial_running = False

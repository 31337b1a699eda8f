"""The hybrid policy: which incidents are worth an LLM call, and what answers the others.

Local rules answer almost every incident; the LLM is asked only where it pays
(docs/llm.md, "When the LLM is called"). :meth:`LlmPolicy.decide` looks at, in
this order:

1. **resolved**: nothing fires any more. The incident's last LLM analysis
   (if any) is kept, else the local analyst speaks.
2. **the incident's own last LLM analysis** (remembered in this process, or,
   after a restart, the one stored with the incident when its ``analyst`` is
   the LLM's): reused as ``previous`` unless something material changed since:
   its priority went up (``escalated``: call) or its root cause changed
   (``root_cause``: call, if the incident still passes the gate). While a
   storm grows its root cause moves from element to element: a root cause
   that changes within ``policy.reanalysis_interval`` of the last call is
   ``settling`` (the call is deferred: the local analysis, which follows the
   current root cause, speaks meanwhile, and the worker comes back when the
   interval is over), and an incident asked ``policy.max_calls`` times is
   ``call_cap``. Repeats,
   flaps, re-fires and new members under the same root cause are ``repeat``;
   the same version asked again is ``unchanged``.
3. **the gate**: new at ``policy.min_priority`` or above (``new_p1``,
   ``new_p2``...; ``escalated`` when an earlier, local analysis was made at a
   lower priority), or anomaly evidence scoring at least
   ``policy.anomaly_score`` (``anomaly``); anything else is ``low_priority``.
4. **the shape cache** (:mod:`~ai_sidecar.enrichment.llm.cache`): an
   incident passing the gate that looks like one explained within
   ``policy.cache_ttl`` gets that answer (``cached``) instead of a call.

At most one call is decided per incident version (``asked``: a second
decision for a version already sent to the LLM declines).

The analyst counts what it serves from ``previous`` and ``cached_answer`` in
``scout_llm_cache_hits_total`` (once: the policy only decides).

Memory is bounded: the incidents remembered (:data:`DEFAULT_MAX_INCIDENTS`,
least recently used leave first) and the shape cache (its TTL and size).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from ai_sidecar.config import LlmConfig
from ai_sidecar.enrichment.base import IncidentContext
from ai_sidecar.enrichment.llm.base import PolicyDecision
from ai_sidecar.enrichment.llm.cache import DEFAULT_MAX_SHAPES, LruMap, ShapeCache
from ai_sidecar.enrichment.llm.cache import shape_key as _shape_key
from ai_sidecar.enrichment.llm.metrics import LlmMetrics
from ai_sidecar.i18n import SOURCE_LANGUAGE
from ai_sidecar.models import PRIORITIES, Analysis, Incident, Priority
from exporter.common.durations import format_duration

# Enough for every incident of a long storm; one entry is a few hundred bytes.
DEFAULT_MAX_INCIDENTS = 10_000

# The decision tokens (PolicyDecision.reason), as docs/llm.md lists them.
NEW = "new_"  # + the priority: new_p1, new_p2
ESCALATED = "escalated"
ANOMALY = "anomaly"
ROOT_CAUSE = "root_cause"
CACHED = "cached"
REPEAT = "repeat"
UNCHANGED = "unchanged"
RESOLVED = "resolved"
LOW_PRIORITY = "low_priority"
ASKED = "asked"
SETTLING = "settling"
CALL_CAP = "call_cap"


def _rank(priority: Priority) -> int:
    """0 for P1 (the highest) up to 3 for P4."""
    return PRIORITIES.index(priority)


@dataclass(frozen=True, slots=True)
class _Explained:
    """What the LLM last said about one incident, and what the incident was then."""

    root_cause: str | None
    priority: Priority
    version: int
    analysis: Analysis
    # When the LLM was asked (the policy's clock), and how many times it has
    # been (a restart forgets both: one call, long ago).
    at: float = -math.inf
    calls: int = 1
    # The language it was written in: after a reload to another, it is not reused.
    language: str = SOURCE_LANGUAGE


class LlmPolicy:
    """The :class:`~ai_sidecar.enrichment.llm.base.LlmGate` of the LLM analyst."""

    def __init__(
        self,
        config: LlmConfig,
        metrics: LlmMetrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_incidents: int = DEFAULT_MAX_INCIDENTS,
        max_shapes: int = DEFAULT_MAX_SHAPES,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._clock = clock
        self._explained: LruMap[str, _Explained] = LruMap(max_incidents)
        # Incident id -> the version last sent to the LLM.
        self._asked: LruMap[str, int] = LruMap(max_incidents)
        self._shapes = ShapeCache(
            config.policy.cache_ttl.total_seconds(), max_entries=max_shapes, clock=clock
        )

    def reconfigure(self, config: LlmConfig) -> None:
        """Apply a reloaded config: thresholds at once, a new cache TTL to kept answers too."""
        self._config = config
        self._shapes.ttl = config.policy.cache_ttl.total_seconds()

    def shape_key(self, incident: Incident, language: str = SOURCE_LANGUAGE) -> str:
        return _shape_key(incident, language)

    def decide(self, incident: Incident, context: IncidentContext, analyst: str) -> PolicyDecision:
        last = self._last_explained(incident, analyst)
        if last is not None and last.language != context.language:
            last = None  # written in another language (a reload changed it): ask again
        if incident.status == "resolved" or not incident.firing:
            return self._reuse(last, RESOLVED, "the incident is resolved")
        if last is not None:
            decision = self._material_change(incident, context, last)
            if decision is None:
                if last.version == incident.version:
                    return self._reuse(last, UNCHANGED, "already explained at this version")
                return self._reuse(
                    last,
                    REPEAT,
                    "nothing material changed since the last LLM analysis "
                    f"(priority {last.priority}, same root cause)",
                )
        else:
            decision = self._gate(incident, context)
        if not decision.call:
            return decision
        # A re-analysis is about this incident's change: only a first one may be cached.
        if (
            last is None
            and (answer := self._shapes.get(_shape_key(incident, context.language))) is not None
        ):
            return PolicyDecision(
                False, CACHED, "answered like a similar incident explained recently", None, answer
            )
        if self._asked.get(incident.id) == incident.version:
            return PolicyDecision(False, ASKED, "the LLM was already asked about this version")
        self._asked.put(incident.id, incident.version)
        return decision

    def remember(
        self,
        incident: Incident,
        analysis: Analysis,
        redacted_answer: str,
        language: str = SOURCE_LANGUAGE,
    ) -> None:
        before = self._explained.get(incident.id)
        self._explained.put(
            incident.id,
            _Explained(
                incident.root_cause,
                incident.priority,
                incident.version,
                analysis,
                at=self._clock(),
                calls=1 if before is None else before.calls + 1,
                language=language,
            ),
        )
        self._shapes.put(_shape_key(incident, language), redacted_answer)

    # --- the steps of decide ------------------------------------------------------

    def _last_explained(self, incident: Incident, analyst: str) -> _Explained | None:
        """The incident's last LLM analysis: remembered, or stored with the incident.

        After a restart the memory is empty; the incident itself says which
        analyst spoke last and at what priority. Its root cause then is not
        known apart from the current one, so a root cause that changed while
        the sidecar was down is not noticed.
        """
        remembered = self._explained.get(incident.id)
        if remembered is not None:
            return remembered
        if incident.analyst != analyst or incident.analysis is None:
            return None
        analysed = incident.analysed_priority
        if analysed is None:
            return None
        restored = _Explained(
            incident.root_cause,
            analysed,
            -1 if incident.analysed_version is None else incident.analysed_version,
            incident.analysis,
        )
        self._explained.put(incident.id, restored)
        return restored

    def _material_change(
        self, incident: Incident, context: IncidentContext, last: _Explained
    ) -> PolicyDecision | None:
        """A call (or a decline) when the incident changed materially since ``last``."""
        if _rank(incident.priority) < _rank(last.priority):
            return PolicyDecision(
                True,
                ESCALATED,
                f"priority went up from {last.priority} to {incident.priority}",
            )
        if incident.root_cause != last.root_cause:
            gate = self._gate(incident, context)
            if not gate.call:
                return gate
            policy = self._config.policy
            if last.calls >= policy.max_calls:
                return PolicyDecision(
                    False, CALL_CAP, f"the LLM was asked {last.calls} times about this incident"
                )
            wait = policy.reanalysis_interval.total_seconds() - (self._clock() - last.at)
            if wait > 0:
                return PolicyDecision(
                    False,
                    SETTLING,
                    "the root cause moved soon after the last LLM analysis; asked again in "
                    f"{format_duration(timedelta(seconds=math.ceil(wait)))}",
                    retry_after=wait,
                )
            return PolicyDecision(True, ROOT_CAUSE, "the root cause changed")
        return None

    def _gate(self, incident: Incident, context: IncidentContext) -> PolicyDecision:
        policy = self._config.policy
        if _rank(incident.priority) <= _rank(policy.min_priority):
            analysed = incident.analysed_priority
            if analysed is not None and _rank(incident.priority) < _rank(analysed):
                return PolicyDecision(
                    True, ESCALATED, f"priority went up from {analysed} to {incident.priority}"
                )
            return PolicyDecision(
                True, NEW + incident.priority.lower(), f"new incident at {incident.priority}"
            )
        score = max((e.score for e in (*context.anomaly, *incident.anomaly_evidence)), default=0.0)
        if score >= policy.anomaly_score:
            return PolicyDecision(
                True, ANOMALY, f"anomaly score {score:.2f} (at least {policy.anomaly_score:g})"
            )
        return PolicyDecision(
            False,
            LOW_PRIORITY,
            f"{incident.priority} is below {policy.min_priority} and no strong anomaly",
        )

    def _reuse(self, last: _Explained | None, reason: str, detail: str) -> PolicyDecision:
        if last is None:
            return PolicyDecision(False, reason, detail)
        return PolicyDecision(False, reason, detail, previous=last.analysis)

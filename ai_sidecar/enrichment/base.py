"""The analyst seam: what every analyst is given and what it must return.

The worker gathers an :class:`IncidentContext` (Prometheus context for a few
members, anomaly evidence) and hands it, with the incident, to an
:class:`Analyst`. Analysts fill the same :class:`~ai_sidecar.models.Analysis`
shape whether they are the local rules or an LLM, so the API, the return trip
and the notifications never care which one spoke.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ai_sidecar.context import MemberContext
from ai_sidecar.i18n import SOURCE_LANGUAGE
from ai_sidecar.models import Analysis, AnomalyEvidence, Incident


@dataclass(frozen=True, slots=True)
class IncidentContext:
    """Evidence beyond the incident itself.

    ``members`` holds Prometheus context by member fingerprint, for the members
    the worker asked about (the root cause first); a member missing here was
    not asked about. ``anomaly`` is the anomaly models' evidence.
    ``language`` is the one the analysis is written in (``config.language``,
    as in force when the worker asked: a reload may change it).
    """

    members: Mapping[str, MemberContext] = field(default_factory=dict)
    anomaly: tuple[AnomalyEvidence, ...] = ()
    language: str = SOURCE_LANGUAGE


class Analyst(Protocol):
    """Explains an incident.

    ``name`` is recorded with each analysis (``Incident.analyst``) and labels
    the analyst's metrics. ``analyse`` may take its time (the worker time-boxes
    it) but must not change the incident; a raised exception leaves the
    incident un-enriched, it is never dropped. :class:`AnalystDeclined` is the
    exception to that: the analyst chose not to speak, the next one in the
    chain does, and the incident is not retried for it.
    """

    name: str

    async def analyse(self, incident: Incident, context: IncidentContext) -> Analysis: ...


# The decline of an analyst whose answer is on its way (an LLM call in flight):
# the next analyst speaks meanwhile, and the worker comes back for the answer.
PENDING = "pending"


class AnalystDeclined(Exception):
    """An analyst chose not to speak; the next in the chain does, with no retry.

    An LLM analyst declines when the hybrid policy says the call does not pay
    (a repeat, a low priority), when the kill switch or the budget forbids it,
    when the circuit is open, or when its answer failed validation twice: the
    local analysis then goes out, labelled with ``reason`` (a short token such
    as ``policy``, ``budget``, ``circuit``, ``disabled``, ``timeout``,
    ``error``, ``invalid``). The message says why in words, safe to show.
    """

    def __init__(self, reason: str, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        # Seconds after which asking again may give another answer (a call the
        # policy only deferred): the worker comes back to the incident then,
        # even if nothing about it changes meanwhile.
        self.retry_after = retry_after

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
from ai_sidecar.models import Analysis, AnomalyEvidence, Incident


@dataclass(frozen=True, slots=True)
class IncidentContext:
    """Evidence beyond the incident itself.

    ``members`` holds Prometheus context by member fingerprint, for the members
    the worker asked about (the root cause first); a member missing here was
    not asked about. ``anomaly`` is the anomaly models' evidence.
    """

    members: Mapping[str, MemberContext] = field(default_factory=dict)
    anomaly: tuple[AnomalyEvidence, ...] = ()


class Analyst(Protocol):
    """Explains an incident.

    ``name`` is recorded with each analysis (``Incident.analyst``) and labels
    the analyst's metrics. ``analyse`` may take its time (the worker time-boxes
    it) but must not change the incident; a raised exception leaves the
    incident un-enriched, it is never dropped.
    """

    name: str

    async def analyse(self, incident: Incident, context: IncidentContext) -> Analysis: ...

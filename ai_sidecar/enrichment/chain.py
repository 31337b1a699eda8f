"""The analyst chain: which analysts explain an incident, in order of preference.

The worker asks each preferred analyst in turn and takes the first analysis it
gets. The chain always ends with a fallback that needs no network and no key
(the local analyst), so an incident never stays without an analysis because an
LLM was slow, down or wrong. Which analysts were skipped, and why, is recorded
with the analysis (``Incident.skipped_analysts``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ai_sidecar.enrichment.base import Analyst


@dataclass(frozen=True, slots=True)
class AnalystChain:
    """``preferred`` analysts first, in order; ``fallback`` when all of them failed."""

    fallback: Analyst
    preferred: tuple[Analyst, ...] = ()

    @property
    def in_order(self) -> tuple[Analyst, ...]:
        return (*self.preferred, self.fallback)

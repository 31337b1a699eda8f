"""The storm replays in French: the same incidents, root causes and scores as in
English, and an analysis whose first sentence names the same root in French."""

from __future__ import annotations

import re

import pytest

from ai_sidecar.correlate.wording import analysis_translator
from ai_sidecar.enrichment.base import IncidentContext
from ai_sidecar.enrichment.llm.language import answer_language
from ai_sidecar.enrichment.local import analyse, root_named
from ai_sidecar.models import Incident
from benchmarks.storm_replay import topology_correlator
from benchmarks.storms.scenarios import generate
from benchmarks.storms.scoring import in_language, preset_config, replay, score

# The small storms: a duplicated delivery path, a dependency chain, a cut core link.
SMALL_STORMS = (("ha_duplicates", 1), ("dns_chain", 1), ("core_link_cut", 0))
# A sentence ends at a full stop before a capital; "3 déc. 2026" does not end one.
_SENTENCE_END = re.compile(r"(?<=\.)\s+(?=[A-ZÀ-Ý])")


def first_sentence(text: str) -> str:
    return _SENTENCE_END.split(text, maxsplit=1)[0]


def analysed(incidents: dict[str, Incident], language: str) -> dict[str, str]:
    return {
        incident_id: analyse(incident, IncidentContext(language=language), ()).summary
        for incident_id, incident in incidents.items()
    }


@pytest.mark.parametrize(("name", "seed"), SMALL_STORMS)
def test_a_french_replay_scores_and_names_its_roots_as_the_english_one(
    name: str, seed: int
) -> None:
    storm = generate(name, seed)
    config = preset_config("network")
    english = replay(storm, config, in_language(topology_correlator, "en")).incidents
    french = replay(storm, config, in_language(topology_correlator, "fr")).incidents
    # Pairwise F1, root-cause accuracy and every other figure: identical.
    assert score(storm, french) == score(storm, english)
    assert english.keys() == french.keys()
    assert {i: english[i].root_cause for i in english} == {i: french[i].root_cause for i in french}
    en_t, fr_t = analysis_translator("en"), analysis_translator("fr")
    en_summaries, fr_summaries = analysed(english, "en"), analysed(french, "fr")
    correlated = [i for i, incident in french.items() if len(incident.members) > 1]
    assert correlated, "the storm has no correlated incident to explain"
    for incident_id in correlated:
        incident = french[incident_id]
        root = incident.members[incident.root_cause or ""]
        en_first = first_sentence(en_summaries[incident_id])
        fr_first = first_sentence(fr_summaries[incident_id])
        en_root = root_named(english[incident_id], root, en_t)
        fr_root = root_named(incident, root, fr_t)
        assert en_root in en_first
        assert fr_root in fr_first
        # The same alert, device and element, the words around them in French.
        assert fr_root == en_root.replace(" on ", " sur ", 1).replace(" (link ", " (lien ")
        assert root.target in fr_first
        facts = incident.root_cause_facts
        assert facts is not None
        if " - " in facts.element:
            assert f"(lien {facts.element})" in fr_first
        assert fr_first.startswith(("Incident en cours pour ", "Incident résolu pour "))
        assert "cause racine" in fr_first
        assert answer_language([fr_summaries[incident_id]]) == "fr"
        assert answer_language([en_summaries[incident_id]]) == "en"
        # The reasons behind the root, in French too.
        assert incident.root_cause_reasons != english[incident_id].root_cause_reasons

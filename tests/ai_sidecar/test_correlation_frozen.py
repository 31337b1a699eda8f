"""The correlator folds the replayed storms exactly as it did when these digests were frozen.

Speed work on the correlator (issue 11's throughput goal) must not change a
single result: every change it returns (kind, incident id and version,
status, members, root cause, reasons and facts, and what it absorbed) for a
storm of every scenario, with the graph and learned co-firing edges and
without them, is hashed and compared with the digest frozen in
``fixtures/storm-correlation.json``.

A deliberate change to the correlation rules changes digests too. Then
regenerate them (``python -m tests.ai_sidecar.test_correlation_frozen``) and
say in the commit which rule changed and what the storm replay's figures did.
A change to the storms themselves (``benchmarks/storms``: a rule's labels or
``for:``) changes them as well; regenerate those with the correlator as it
was before the speed work changed it, not with the one under test.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path

import pytest

from ai_sidecar.config import CorrelationConfig
from ai_sidecar.correlate import CoFiring, TopologySnapshot, learn_with
from ai_sidecar.correlation import Change, Correlator
from ai_sidecar.models import Incident, Member
from benchmarks.storm_replay import topology_correlator
from benchmarks.storms.alertmanager import at_time
from benchmarks.storms.scenarios import SCENARIOS, Storm, generate
from benchmarks.storms.scoring import preset_config, replay, shifted

FROZEN = Path(__file__).parent / "fixtures" / "storm-correlation.json"
SEED = 1
# Earlier storms co-firing edges are learned from (see storm_replay.learned_history).
HISTORY = 1
CASES = [(name, graph) for name in SCENARIOS for graph in ("graph", "no graph")]


def _json_list(items: list[str]) -> str:
    """The JSON list of already encoded items, as ``json.dumps`` writes a list."""
    return "[" + ", ".join(items) + "]"


class _Encoder:
    """The JSON of every change, byte for byte ``json.dumps`` of the documents the
    digests were frozen on, with each member's row encoded once.

    A change carries its incident's every member, so encoding them all again at
    each change grew with the square of an incident's size: a site's power cut
    took a minute of one test worker, nearly all of it here. Members are
    immutable and the log keeps each one alive while its incident is, so a row
    is cached by the member object itself.
    """

    def __init__(self) -> None:
        self._rows: dict[int, tuple[Member, str]] = {}

    def _member(self, fingerprint: str, m: Member) -> str:
        cached = self._rows.get(id(m))
        if cached is not None and cached[0] is m:
            return cached[1]
        row = json.dumps(
            [fingerprint, m.status, str(m.starts_at), str(m.ends_at), m.flap_count, m.duplicates]
        )
        self._rows[id(m)] = (m, row)
        return row

    def incident(self, incident: Incident) -> str:
        facts = incident.root_cause_facts
        fields: list[object] = [
            incident.id,
            incident.version,
            incident.status,
            str(incident.created_at),
            str(incident.updated_at),
            str(incident.resolved_at),
            sorted(incident.group.items()),
        ]
        members = _json_list([self._member(fp, m) for fp, m in incident.members.items()])
        after: list[object] = [
            incident.root_cause,
            list(incident.root_cause_reasons),
            None
            if facts is None
            else [facts.rule, facts.layer, facts.dependents, facts.element, facts.explains],
        ]
        return _json_list(
            [*(json.dumps(f) for f in fields), members, *(json.dumps(f) for f in after)]
        )

    def change(self, change: Change | None) -> str:
        if change is None:
            return json.dumps(None)
        return _json_list(
            [
                json.dumps(change.kind),
                self.incident(change.incident),
                _json_list([self.incident(gone) for gone in change.absorbed]),
            ]
        )


def _learned(name: str, config: CorrelationConfig) -> CoFiring:
    history = []
    for back in range(1, HISTORY + 1):
        found = replay(generate(name, SEED, earlier=back), config, topology_correlator)
        history += [shifted(i, -timedelta(days=back)) for i in found.incidents.values()]
    return learn_with(config.cofiring, history)


def fold(name: str, graph: str) -> dict[str, object]:
    """Every change the correlator returns for the scenario's storm, hashed."""
    config = preset_config("network")
    storm: Storm = generate(name, SEED)
    snapshot: TopologySnapshot | None = None
    cofiring: CoFiring | None = None
    if graph == "graph":
        snapshot = topology_correlator(config, storm.estate.observed()).topology
        cofiring = _learned(name, config)
    correlator = Correlator(config, snapshot, cofiring)
    encoder = _Encoder()
    digest = hashlib.sha256()
    changes = 0
    latest = None
    for delivery in storm.deliveries:
        now = at_time(delivery.at)
        for alert in delivery.alerts:
            change = correlator.apply(alert, now)
            digest.update(encoder.change(change).encode() + b"\n")
            changes += 1
            moment = alert.ends_at or alert.starts_at
            latest = moment if latest is None else max(latest, moment)
        if latest is not None:
            latest = min(latest, now)
            correlator.forget_resolved_before(latest - config.flap_window)
    still_open = [encoder.incident(i) for i in correlator.open_incidents()]
    digest.update(_json_list(still_open).encode())
    return {"changes": changes, "open": len(still_open), "digest": digest.hexdigest()}


@pytest.mark.parametrize(("name", "graph"), CASES)
def test_storm_folds_as_frozen(name: str, graph: str) -> None:
    frozen = json.loads(FROZEN.read_text())
    assert fold(name, graph) == frozen[f"{name} seed {SEED}, {graph}"]


def test_every_scenario_is_frozen() -> None:
    frozen = json.loads(FROZEN.read_text())
    assert sorted(frozen) == sorted(f"{name} seed {SEED}, {graph}" for name, graph in CASES)


if __name__ == "__main__":
    FROZEN.write_text(
        json.dumps(
            {f"{name} seed {SEED}, {graph}": fold(name, graph) for name, graph in CASES},
            indent=1,
            sort_keys=True,
        )
        + "\n"
    )

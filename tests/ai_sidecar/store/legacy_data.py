"""What the schema-version-1 fixture (``fixtures/store-v1.sql``) holds, as values.

The fixture was written by the release before the store protocol (schema
version 1, no migrations), from exactly these values: the first
:data:`PROCESSED` alerts folded into :data:`INCIDENTS`, the rest still pending,
:data:`FEEDBACK` on both incidents, and return-trip rows for both incidents on
:data:`PEERS`. The migration tests read the file with today's store and compare
what comes back with these values. This module uses nothing but the models and
the builders, so the same code could build the fixture with the old release.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from ai_sidecar.models import Alert, Analysis, Incident, Member
from tests.ai_sidecar.builders import member_of

T0 = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)
RECEIVED = T0 + timedelta(seconds=20)
PEERS = ("http://am-a.example:9093", "http://am-b.example:9093")
# Unix seconds the return trip's clock stood at when it scheduled the copies.
SCHEDULED_AT = T0 + timedelta(minutes=10)


def _alert(fingerprint: str, instance: str, status: str = "firing", at: int = 0) -> Alert:
    return Alert(
        fingerprint=fingerprint,
        status="resolved" if status == "resolved" else "firing",
        labels={"alertname": "InterfaceDown", "instance": instance, "site": "hq"},
        annotations={"summary": f"uplink of {instance} is down"},
        starts_at=T0 + timedelta(seconds=at),
        ends_at=T0 + timedelta(minutes=7) if status == "resolved" else None,
        generator_url="http://prometheus.example:9090/graph?g0.expr=up",
    )


ALERTS = (
    _alert("fp-sw1", "sw1"),
    _alert("fp-sw2", "sw2", at=3),
    _alert("fp-fw1", "fw1", at=600),
    _alert("fp-fw1", "fw1", "resolved", at=600),
    _alert("fp-sw3", "sw3", at=900),
    _alert("fp-sw4", "sw4", at=905),
)
# Alerts folded into incidents (the worker's cursor sits on the last of them).
PROCESSED = 4


def _member(item: Alert, *, flaps: int = 0, duplicates: int = 0) -> Member:
    return replace(member_of(item), flap_count=flaps, duplicates=duplicates)


ANALYSIS = Analysis(
    summary="Site hq lost its uplinks",
    root_cause="sw1 lost carrier on its uplink",
    impact="hq is offline",
    actions=("Check the optic on sw1", "Call the carrier"),
    confidence=0.7,
    false_positive_likelihood=0.1,
)

OPEN = Incident(
    id="inc-0000000000a1",
    status="open",
    group={"site": "hq"},
    members={
        "fp-sw1": _member(ALERTS[0]),
        "fp-sw2": _member(ALERTS[1], duplicates=2),
    },
    created_at=T0,
    updated_at=T0 + timedelta(seconds=3),
    root_cause="fp-sw1",
    root_cause_reasons=("lowest layer", "first to fire"),
    priority="P1",
    priority_reasons=("critical site",),
    analysis=ANALYSIS,
    analyst="local",
    version=4,
    peak_priority="P1",
)
RESOLVED = Incident(
    id="inc-0000000000b2",
    status="resolved",
    group={"site": "hq"},
    members={"fp-fw1": _member(ALERTS[3], flaps=1)},
    created_at=T0 + timedelta(minutes=10),
    updated_at=T0 + timedelta(minutes=7),
    root_cause="fp-fw1",
    priority="P3",
    analysis=ANALYSIS,
    analyst="local",
    resolved_at=T0 + timedelta(minutes=7),
    version=2,
)
INCIDENTS = (OPEN, RESOLVED)

FEEDBACK = (
    (OPEN.id, True, "spot on", T0 + timedelta(hours=1)),
    (OPEN.id, False, "the carrier was fine", T0 + timedelta(hours=2)),
    (RESOLVED.id, True, "", T0 + timedelta(hours=3)),
)

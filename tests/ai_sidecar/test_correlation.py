"""Correlation on replayed storms, with a fixed clock: the alerts' own times decide."""

from __future__ import annotations

import random
import re
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from ai_sidecar.config import PRESETS, CorrelationConfig
from ai_sidecar.correlation import Change, group_key, incident_id
from ai_sidecar.models import Alert, Incident, RootCauseFacts, incident_to_json
from tests.ai_sidecar.replay import (
    NOW,
    T0,
    correlator,
    fold,
    make,
    refired,
    resolved,
    storm,
)

FIREWALL_RULES = Path(__file__).resolve().parents[2] / "prometheus" / "rules" / "firewall.rules.yml"
CORRELATION_DOC = Path(__file__).resolve().parents[2] / "docs" / "correlation.md"


def by_name(incident: Incident) -> dict[str, str]:
    """instance/alertname of each member, by fingerprint, for readable assertions."""
    return {fp: f"{m.labels.get('instance')}/{m.alertname}" for fp, m in incident.members.items()}


def root(incident: Incident) -> str:
    return by_name(incident)[incident.root_cause or ""]


def final(changes: list[Change]) -> dict[str, Incident]:
    """Each incident's last value, by id."""
    return {change.incident.id: change.incident for change in changes}


# -- storms --------------------------------------------------------------------


def test_core_link_down_and_its_dependents_are_one_incident():
    changes = fold(correlator(), storm("core-link-down.yml"))
    assert [c.kind for c in changes] == ["created"] + ["joined"] * 8
    [incident] = final(changes).values()
    assert incident.group == {"site": "hq"}
    assert len(incident.members) == 9
    assert root(incident) == "core1/InterfaceDown"
    assert incident.root_cause_reasons == (
        "lowest layer: link (InterfaceDown) below network, host and service",
        "7 alerts on other targets refer to core1",
    )
    assert incident.root_cause_facts == RootCauseFacts(
        rule="layer", layer="link", dependents=7, element="core1 Te1/1/1"
    )
    # The probes saw it first: the incident starts with them, not with the link alert.
    assert incident.created_at == T0
    assert incident.updated_at == T0 + timedelta(seconds=31)
    assert incident.version == 9
    assert incident.status == "open"


def test_two_sites_failing_at_once_stay_two_incidents():
    changes = fold(correlator(), storm("two-sites.yml"))
    incidents = sorted(final(changes).values(), key=lambda i: i.group["site"])
    assert [i.group for i in incidents] == [{"site": "branch"}, {"site": "hq"}]
    branch, hq = incidents
    assert sorted(by_name(branch).values()) == [
        "br-pc1/ProbePacketLoss",
        "br-pos/HttpDown",
        "br-rtr1/DeviceDown",
    ]
    assert sorted(by_name(hq).values()) == [
        "core1/InterfaceDown",
        "srv-app1/ProbePacketLoss",
        "srv-app2/ProbePacketLoss",
        "web1/HttpDown",
    ]
    assert root(branch) == "br-rtr1/DeviceDown"
    assert root(hq) == "core1/InterfaceDown"
    assert branch.id != hq.id


def test_arrival_order_within_the_same_second_does_not_matter():
    # One rule evaluation: every alert starts within the same second.
    alerts = [
        make("InterfaceDown", 0.120, severity="critical", site="hq", instance="core1"),
        make("ProbePacketLoss", 0.250, site="hq", instance="a", upstream="core1"),
        make("ProbePacketLoss", 0.250, site="hq", instance="b", upstream="core1"),
        make("HttpDown", 0.900, severity="critical", site="hq", instance="web", upstream="core1"),
        make("DeviceDown", 0.500, severity="critical", site="branch", instance="br-rtr1"),
        make("ProbePacketLoss", 0.700, site="branch", instance="br-pc", upstream="br-rtr1"),
    ]

    def outcome(order: list[Alert]) -> dict[str, Any]:
        c = correlator()
        fold(c, order)
        return {
            i.id: (
                sorted(i.members),
                i.root_cause,
                i.root_cause_reasons,
                i.created_at,
                i.updated_at,
                i.version,
                dict(i.group),
            )
            for i in c.open_incidents()
        }

    expected = outcome(alerts)
    assert len(expected) == 2
    for seed in range(20):
        shuffled = alerts[:]
        random.Random(seed).shuffle(shuffled)
        assert outcome(shuffled) == expected, seed


def test_replaying_a_storm_gives_identical_incidents_and_ids():
    # Both files hold hq's core1 InterfaceDown: the second copy is a duplicate.
    alerts = storm("core-link-down.yml") + storm("two-sites.yml")
    link = alerts[5]
    history = [
        *alerts,
        alerts[0],  # a repeat delivery
        resolved(link, 120),
        refired(link, 180),  # a flap
        *(resolved(a, 600) for a in alerts if a.fingerprint != link.fingerprint),
        resolved(refired(link, 180), 660),
    ]

    def run() -> list[dict[str, Any]]:
        c = correlator()
        changes = [c.apply(alert, NOW) for alert in history]
        ids = sorted({ch.incident.id for ch in changes if ch is not None})
        return [incident_to_json(c.incident(i) or pytest.fail(i)) for i in ids]

    first, second = run(), run()
    assert first == second
    assert sorted(item["group"]["site"] for item in first) == ["branch", "hq"]
    assert all(item["status"] == "resolved" for item in first)
    hq = next(item for item in first if item["group"] == {"site": "hq"})
    link_json = next(m for m in hq["alerts"] if m["fingerprint"] == link.fingerprint)
    assert (link_json["flapCount"], link_json["duplicates"]) == (1, 1)
    assert all(item["status"] == "resolved" for item in first)
    assert [item["id"] for item in first] == sorted(item["id"] for item in first)


def test_incident_id_comes_from_the_group_key_and_start_second():
    c = correlator()
    change = fold(c, [make("DeviceDown", 7.25, site="hq", instance="sw9")])[0]
    key = (("site", "hq"),)
    assert change.incident.id == incident_id(key, T0 + timedelta(seconds=7))
    assert change.incident.id.startswith("inc-")
    assert len(change.incident.id) == 16


def test_an_id_held_by_a_stored_incident_is_never_reused():
    # After a restart the correlator tracks only recent incidents; an old one
    # with the same key and start second must keep its id (and its history).
    alert = make("DeviceDown", 7.25, site="hq", instance="sw9")
    taken = incident_id((("site", "hq"),), T0 + timedelta(seconds=7))
    c = correlator()
    c.reserve([taken])
    [change] = fold(c, [alert])
    assert change.incident.id != taken
    assert change.incident.id == incident_id(
        (("site", "hq"),), T0 + timedelta(seconds=7), alert.fingerprint
    )


# -- group keys and windows ----------------------------------------------------


def test_group_key_uses_the_first_complete_label_set():
    keys = CorrelationConfig().group_keys()
    assert group_key({"site": "hq", "device": "sw1"}, keys) == (("site", "hq"),)
    # An empty label is an absent label, as in Prometheus.
    assert group_key({"site": "", "device": "sw1"}, keys) == (("device", "sw1"),)
    assert group_key({"instance": "10.0.0.1:161"}, keys) == (("instance", "10.0.0.1:161"),)
    assert group_key({"alertname": "Watchdog"}, keys) == (("alertname", "Watchdog"),)


def test_alerts_without_group_labels_group_by_alertname():
    c = correlator()
    changes = fold(c, [make("Watchdog", 0), make("BackupFailed", 1), make("Watchdog", 2, x="y")])
    groups = sorted(tuple(i.group.items()) for i in c.open_incidents())
    assert groups == [(("alertname", "BackupFailed"),), (("alertname", "Watchdog"),)]
    assert [ch.kind for ch in changes] == ["created", "created", "joined"]


def test_window_is_measured_on_starts_at_around_the_span():
    c = correlator("correlation: {window: 5m}")
    first = fold(c, [make("ProbePacketLoss", 600, site="hq", instance="a")])[0]
    changes = fold(
        c,
        [
            make("ProbePacketLoss", 900, site="hq", instance="b"),  # span end + 5m: joins
            make("ProbePacketLoss", 300, site="hq", instance="c"),  # span start - 5m: joins
            make("ProbePacketLoss", 1201, site="hq", instance="d"),  # 5m1s after 900: new
            make("ProbePacketLoss", -1, site="hq", instance="e"),  # 5m1s before 300: new
        ],
    )
    assert [ch.kind for ch in changes] == ["joined", "joined", "created", "created"]
    assert changes[1].incident.id == first.incident.id
    # A late member that started earlier moves the incident's start back.
    assert changes[1].incident.created_at == T0 + timedelta(seconds=300)


def test_max_span_stops_a_slow_burning_site_from_gathering_everything():
    c = correlator("correlation: {window: 5m, max_span: 30m}")
    # One alert every 4 minutes, for two hours: each within the window of the last.
    changes = fold(
        c, [make("ProbePacketLoss", 240 * i, site="hq", instance=f"h{i}") for i in range(30)]
    )
    sizes = [len(i.members) for i in c.open_incidents()]
    # 0..28 minutes is 8 alerts (a 9th would make the span 32 minutes).
    assert sizes == [8, 8, 8, 6]
    assert [ch.kind for ch in changes].count("created") == 4
    for incident in c.open_incidents():
        starts = [m.starts_at for m in incident.members.values()]
        assert max(starts) - min(starts) <= timedelta(minutes=30)


# -- deduplication, flaps, resolution ------------------------------------------


def test_same_delivery_again_is_a_duplicate_that_changes_no_version():
    c = correlator()
    alert = make("InterfaceDown", 0, site="hq", instance="core1")
    created = fold(c, [alert])[0].incident
    again = fold(c, [alert, alert])
    assert [ch.kind for ch in again] == ["duplicate", "duplicate"]
    incident = again[-1].incident
    assert incident.members[alert.fingerprint].duplicates == 2
    assert incident.version == created.version
    assert incident.updated_at == created.updated_at
    end = resolved(alert, 60)
    assert [ch.kind for ch in fold(c, [end, end])] == ["resolved", "duplicate"]
    # A firing copy of the same episode arriving after its resolve (an HA peer
    # lagging behind) must not reopen the incident.
    late = fold(c, [alert])[0]
    assert late.kind == "duplicate"
    assert late.incident.status == "resolved"


def test_the_same_episode_to_the_millisecond_is_the_same_episode():
    # Reconciliation reads startsAt from Alertmanager's API, to the millisecond;
    # the webhook delivers the same episode to the microsecond afterwards.
    c = correlator()
    exact = make("InterfaceDown", 0, site="hq", instance="core1")
    exact = replace(exact, starts_at=exact.starts_at.replace(microsecond=123_456))
    from_api = replace(exact, starts_at=exact.starts_at.replace(microsecond=123_000))
    fold(c, [from_api])
    [again] = fold(c, [exact])
    assert again.kind == "duplicate"
    assert again.incident.members[exact.fingerprint].flap_count == 0
    [end] = fold(
        c, [replace(exact, status="resolved", ends_at=exact.starts_at + timedelta(seconds=60))]
    )
    assert end.kind == "resolved"
    # A millisecond later is another episode.
    later = replace(exact, starts_at=exact.starts_at + timedelta(milliseconds=1))
    assert fold(c, [later])[0].kind == "reopened"


def test_resolve_for_an_alert_never_seen_firing_creates_nothing():
    c = correlator()
    assert c.apply(make("InterfaceDown", 0, ends=60, site="hq"), NOW) is None
    assert c.open_incidents() == []


def test_enriched_alerts_are_refused():
    alert = make("InterfaceDown", 0, site="hq", scout_enriched="true")
    with pytest.raises(ValueError, match="scout_enriched"):
        correlator().apply(alert, NOW)


def test_flapping_interface_collapses_to_one_member_with_a_flap_count():
    c = correlator("correlation: {flap_window: 15m}")
    down = make("InterfaceDown", 0, severity="critical", site="hq", instance="sw3", ifName="Gi0/7")
    history = [down, resolved(down, 60)]
    for n in range(1, 4):  # down again every 3 minutes, for a minute each time
        history += [refired(down, 180 * n), resolved(refired(down, 180 * n), 180 * n + 60)]
    changes = fold(c, history)
    assert [ch.kind for ch in changes] == ["created", "resolved"] + ["reopened", "resolved"] * 3
    assert len({ch.incident.id for ch in changes}) == 1
    incident = changes[-1].incident
    [member] = incident.members.values()
    assert member.flap_count == 3
    assert member.first_starts_at == T0
    assert member.starts_at == T0 + timedelta(seconds=540)
    assert incident.resolved_at == T0 + timedelta(seconds=600)
    assert incident.version == 8
    reopened = changes[2].incident
    assert reopened.status == "open"
    assert reopened.resolved_at is None


def test_refire_after_the_flap_window_is_a_new_incident():
    c = correlator("correlation: {flap_window: 15m}")
    down = make("InterfaceDown", 0, site="hq", instance="sw3")
    first = fold(c, [down, resolved(down, 60)])[-1].incident
    # 15 minutes after the resolve is still a flap ...
    within = correlator("correlation: {flap_window: 15m}")
    fold(within, [down, resolved(down, 60)])
    assert fold(within, [refired(down, 60 + 900)])[0].kind == "reopened"
    # ... one second later it is a new incident, and the old one stays resolved.
    later = fold(c, [refired(down, 60 + 901)])[0]
    assert later.kind == "created"
    assert later.incident.id != first.id
    assert later.incident.members[down.fingerprint].flap_count == 0
    assert c.incident(first.id) == first
    # The resolve of the new episode lands in the new incident.
    end = fold(c, [resolved(refired(down, 961), 1000)])[0]
    assert (end.kind, end.incident.id) == ("resolved", later.incident.id)


def test_new_episode_without_a_resolve_in_between_is_a_flap():
    c = correlator()
    down = make("InterfaceDown", 0, site="hq", instance="sw3")
    fold(c, [down])
    change = fold(c, [refired(down, 3600)])[0]
    assert change.kind == "flapped"
    assert change.incident.members[down.fingerprint].flap_count == 1
    assert change.incident.members[down.fingerprint].starts_at == T0 + timedelta(hours=1)


def test_refire_in_a_still_open_incident_that_covers_it_is_a_flap_in_place():
    c = correlator("correlation: {window: 5m, flap_window: 15m}")
    a = make("ProbePacketLoss", 0, site="hq", instance="a")
    chain = [make("ProbePacketLoss", 240 * i, site="hq", instance=f"h{i}") for i in range(1, 5)]
    fold(c, [a, *chain, resolved(a, 60)])  # the span now reaches 16 minutes
    change = fold(c, [refired(a, 60 + 960)])[0]  # 16 minutes after the resolve
    assert change.kind == "flapped"
    assert len(c.open_incidents()) == 1


def test_resolve_without_ends_at_uses_the_callers_clock():
    c = correlator()
    down = make("InterfaceDown", 0, site="hq", instance="sw3")
    fold(c, [down])
    no_end = Alert(down.fingerprint, "resolved", down.labels, {}, down.starts_at, None)
    change = fold(c, [no_end])[0]
    assert change.incident.resolved_at == NOW
    assert change.incident.members[down.fingerprint].ends_at == NOW


def test_all_members_policy_resolves_when_the_last_member_does():
    c = correlator("correlation: {resolve: all_members}")
    alerts = storm("core-link-down.yml")
    fold(c, alerts)
    link = alerts[5]
    change = fold(c, [resolved(link, 100)])[0]
    assert change.kind == "updated"
    assert change.incident.status == "open"
    # The link is back but the probes still lose packets: they are what is broken
    # now. Two started at the same moment; the fingerprint breaks the tie.
    first = min(alerts[:2], key=lambda a: a.fingerprint)
    assert change.incident.root_cause == first.fingerprint
    assert change.incident.root_cause_reasons == (
        f"still firing: ProbePacketLoss on {first.labels['instance']}; "
        "1 resolved alert ranks after it",
        "lowest layer: network (ProbePacketLoss) below host and service",
        f"tie-break: lowest fingerprint ({first.fingerprint}) among equally ranked alerts",
    )
    others = [a for a in alerts if a is not link]
    changes = fold(c, [resolved(a, 200 + i) for i, a in enumerate(others)])
    assert [ch.kind for ch in changes] == ["updated"] * 7 + ["resolved"]
    incident = changes[-1].incident
    assert incident.status == "resolved"
    assert incident.resolved_at == T0 + timedelta(seconds=207)
    assert incident.updated_at == T0 + timedelta(seconds=207)
    assert root(incident) == "core1/InterfaceDown"
    assert c.open_incidents() == []


def test_root_cause_policy_resolves_with_the_root_cause_and_keeps_it():
    c = correlator("correlation: {resolve: root_cause}")
    alerts = storm("core-link-down.yml")
    fold(c, alerts)
    link = alerts[5]
    change = fold(c, [resolved(link, 100)])[0]
    assert change.kind == "resolved"
    assert change.incident.resolved_at == T0 + timedelta(seconds=100)
    assert root(change.incident) == "core1/InterfaceDown"
    assert len(change.incident.firing) == 8
    # The symptoms clearing afterwards update the resolved incident.
    later = fold(c, [resolved(alerts[0], 110)])[0]
    assert (later.kind, later.incident.status) == ("updated", "resolved")
    assert root(later.incident) == "core1/InterfaceDown"
    # A new alert at the site starts a new incident: a resolved one takes no joins.
    new = fold(c, [make("ProbePacketLoss", 120, site="hq", instance="late")])[0]
    assert new.kind == "created"


# -- root-cause rules ----------------------------------------------------------


def test_most_dependents_decides_within_a_layer():
    c = correlator()
    changes = fold(
        c,
        [
            make("InterfaceDown", 0, site="hq", instance="edge1"),
            make("InterfaceDown", 5, site="hq", instance="core1"),
            make("ProbePacketLoss", 1, site="hq", instance="a", upstream="core1"),
            make("ProbePacketLoss", 1, site="hq", instance="b", device="core1"),
            make("ProbePacketLoss", 1, site="hq", instance="c", upstream="edge1"),
            # Same target as core1: an alert about core1 itself is no dependent.
            make("HostHighCpu", 1, site="hq", instance="core1", device="core1"),
        ],
    )
    incident = changes[-1].incident
    assert root(incident) == "core1/InterfaceDown"
    assert incident.root_cause_reasons == (
        # The upstream label makes core1 an element of the graph that a sits behind.
        "a depends on core1, which is failing (InterfaceDown): a behind core1",
        "lowest layer: link (InterfaceDown) below network and host",
        "most dependents: 2 alerts on other targets refer to core1 (next: 1)",
    )
    assert incident.root_cause_facts is not None
    assert incident.root_cause_facts.rule == "dependents"


def test_earliest_start_decides_among_equals():
    c = correlator()
    changes = fold(
        c,
        [
            make("InterfaceDown", 30, site="hq", instance="sw2"),
            make("InterfaceDown", 10, site="hq", instance="sw1"),
        ],
    )
    incident = changes[-1].incident
    assert root(incident) == "sw1/InterfaceDown"
    assert incident.root_cause_reasons == (
        "earliest start: 2026-11-02T09:00:10Z, before InterfaceDown on sw2 at 2026-11-02T09:00:30Z",
    )


def test_severity_then_fingerprint_decide_last():
    c = correlator()
    fold(
        c,
        [
            make("InterfaceDown", 0, severity="warning", site="hq", instance="sw1"),
            make("InterfaceDown", 0, severity="critical", site="hq", instance="sw2"),
        ],
    )
    [incident] = c.open_incidents()
    assert root(incident) == "sw2/InterfaceDown"
    assert incident.root_cause_reasons == ("highest severity: critical (next: warning)",)
    tie = correlator()
    alerts = [make("InterfaceDown", 0, site="hq", instance=f"sw{i}") for i in range(3)]
    fold(tie, alerts)
    [incident] = tie.open_incidents()
    lowest = min(a.fingerprint for a in alerts)
    assert incident.root_cause == lowest
    assert incident.root_cause_reasons == (
        f"tie-break: lowest fingerprint ({lowest}) among equally ranked alerts",
    )


def test_a_layer_label_on_the_alert_beats_every_rule():
    c = correlator(
        "correlation:\n  layers:\n    - {match: {alertname: PowerFeedLost}, layer: device}\n"
    )
    fold(
        c,
        [
            make("InterfaceDown", 0, site="hq", instance="core1"),
            make("BgpSessionFlap", 5, site="hq", instance="r1", layer="device"),
        ],
    )
    [incident] = c.open_incidents()
    assert root(incident) == "r1/BgpSessionFlap"
    assert c.layer_of({"alertname": "PowerFeedLost"}) == "device"
    # A configured rule comes before the preset's: HttpDown is normally a service.
    assert correlator(
        "correlation:\n  layers:\n    - {match: {alertname: HttpDown}, layer: device}\n"
    ).layer_of({"alertname": "HttpDown"}) == ("device")


@pytest.mark.parametrize(
    ("preset", "alertname", "layer"),
    [
        ("network", "TargetDown", "device"),
        ("network", "SnmpTargetDown", "device"),
        ("network", "DeviceDown", "device"),
        ("network", "HostDown", "device"),
        ("network", "InterfaceDown", "link"),
        ("network", "InterfaceOperDown", "link"),
        ("network", "LinkDown", "link"),
        ("network", "ProbePacketLoss", "network"),
        ("network", "ProbeHighLatency", "network"),
        ("network", "ProbeJitterHigh", "network"),
        ("network", "InterfaceSaturated", "network"),
        ("network", "InterfaceErrors", "network"),
        ("network", "HostHighCpuLoad", "host"),
        ("network", "HostOutOfMemory", "host"),
        ("network", "HostDiskWillFillIn24Hours", "host"),
        ("network", "HttpDown", "service"),
        ("network", "Watchdog", "service"),
        ("firewall", "FortigateDown", "device"),
        ("firewall", "CarpFailover", "link"),
        ("firewall", "IpsecTunnelDown", "link"),
        ("firewall", "ConntrackTableFull", "host"),
        ("firewall", "HaSyncLost", "link"),
        ("firewall", "FirewallHaFailover", "link"),
        ("firewall", "FirewallHaSyncLost", "link"),
        ("firewall", "FirewallVpnTunnelDown", "link"),
        ("firewall", "FirewallGatewayDown", "link"),
        ("firewall", "FirewallGatewayLossHigh", "network"),
        ("firewall", "FirewallUnreachable", "device"),
        # Community rules put the vendor where the shipped ones put "Firewall".
        ("firewall", "FortigateHaFailover", "link"),
        ("firewall", "PfsenseCarpStatusChange", "link"),
        ("firewall", "OpnsenseGatewayDown", "link"),
        ("firewall", "FortigateVpnTunnelDown", "link"),
        ("firewall", "PfsenseGatewayOffline", "link"),
        ("firewall", "PfsenseGatewayLossHigh", "network"),
        ("firewall", "FortigateHaSyncLost", "link"),
        ("firewall", "FortigateLinkMonitorDown", "link"),
        ("firewall", "FortigateSdwanMemberDown", "link"),
        ("firewall", "SdwanLinkDead", "link"),
        # Not a vendor's name: no firewall of the preset's.
        ("firewall", "GrafanaHaFailover", "service"),
        # The flow collector's socket dropping datagrams is not the network's drops.
        ("firewall", "FlowDatagramsDropped", "service"),
        # Nor is a router's flow export losing datagrams the network's "Loss".
        ("firewall", "FlowExportLoss", "service"),
        ("firewall", "FirewallConntrackDrops", "host"),
        # Without the "Firewall" prefix's rules, the network preset has no link for them.
        ("network", "FirewallHaFailover", "service"),
        ("network", "FortigateHaFailover", "service"),
        # Nor for the flow collector's drops: the shipped rule's layer label says service.
        ("network", "FlowDatagramsDropped", "network"),
        # A session table filling is the box running out, whichever preset.
        ("network", "FirewallSessionTableHigh", "host"),
        ("windows", "WindowsServerDown", "device"),
        ("windows", "WindowsServiceDown", "service"),
        ("windows", "WindowsDiskSpaceLow", "host"),
        ("windows", "WindowsCpuHigh", "host"),
    ],
)
def test_presets_place_alertnames_in_layers(preset, alertname, layer):
    c = correlator(f"correlation: {{preset: {preset}}}")
    assert c.layer_of({"alertname": alertname}) == layer


# Names community rule sets and exporter mixins give their alerts, which carry
# no `layer` label: the built-in rules read them by name alone.
@pytest.mark.parametrize(
    ("alertname", "layer"),
    [
        # A box, its agent or its ping stops answering.
        ("SnmpDown", "device"),
        ("SnmpDeviceUnreachable", "device"),
        ("SnmpDeviceDown", "device"),
        ("SnmpAgentUnreachable", "device"),
        ("SnmpNotResponding", "device"),
        ("SnmpTimeout", "device"),
        ("NoSnmpResponse", "device"),
        ("NetworkDeviceDown", "device"),
        ("DeviceNotResponding", "device"),
        ("SwitchOffline", "device"),
        ("InstanceDown", "device"),
        ("NodeDown", "device"),
        # Short words matched case-blind hid in longer ones: Oom in TooMany, Ntp in
        # EndpointProbe, Fan in Grafana.
        ("RedisTooManyConnections", "service"),
        ("EndpointProbeFailed", "network"),
        ("GrafanaDown", "service"),
        ("HostOomKillDetected", "host"),
        ("FanFailure", "host"),
        # A container's own probe is the service's, not the network's.
        ("ReadinessProbeFailing", "service"),
        ("LivenessProbeFailing", "service"),
        # Hardware and time: the box.
        ("HostEdacUncorrectableErrorsDetected", "host"),
        ("NodeRAIDDegraded", "host"),
        ("HostClockNotSynchronising", "host"),
        ("SmartCriticalWarning", "host"),
        ("PowerSupplyFailed", "host"),
        ("HostPhysicalComponentTooHot", "host"),
        ("PrometheusTargetMissing", "device"),
        ("ScrapeTargetDown", "device"),
        ("ExporterDown", "device"),
        ("KubeNodeNotReady", "device"),
        ("KubeNodeUnreachable", "device"),
        ("ProbeTargetUnreachable", "device"),
        ("HostNotResponding", "device"),
        ("PingDown", "device"),
        ("PingFailed", "device"),
        ("IcmpProbeFailed", "device"),
        ("NoPingResponse", "device"),
        ("FortigateUnreachable", "device"),
        ("PfsenseDown", "device"),
        ("FirewallOffline", "device"),
        ("FirewallApiUnreachable", "device"),
        ("WindowsServerDown", "device"),
        ("WindowsNotResponding", "device"),
        ("WinrmUnreachable", "device"),
        ("WinrmTargetUnreachable", "device"),
        # A port's oper status, spelled many ways.
        ("IfOperStatusDown", "link"),
        ("IfOperDown", "link"),
        ("IfDown", "link"),
        ("InterfaceOperStatusDown", "link"),
        ("SnmpInterfaceDown", "link"),
        ("NetworkInterfaceDown", "link"),
        ("HostNetworkInterfaceDown", "link"),
        ("NodeNetworkInterfaceFlapping", "link"),
        ("SwitchPortDown", "link"),
        ("PortDown", "link"),
        # Degradation, and checks that got a wrong answer.
        ("NodeNetworkReceiveErrs", "network"),
        ("NodeNetworkTransmitErrs", "network"),
        ("HostNetworkReceiveErrors", "network"),
        ("InterfaceTrafficHigh", "network"),
        ("HostNetworkInterfaceSaturated", "network"),
        ("BlackboxSlowProbe", "network"),
        ("BlackboxProbeSlowHttp", "network"),
        ("SlowResponse", "network"),
        ("BlackboxProbeFailed", "network"),
        ("BlackboxProbeHttpFailure", "network"),
        ("HttpProbeFailed", "network"),
        ("HttpCheckFailed", "network"),
        # A service check (Nagios', Icinga's word) is run against the service
        # from outside; a health check is the service's own verdict on itself.
        ("ServiceCheckFailed", "network"),
        ("HealthCheckFailed", "service"),
        ("HealthcheckFailed", "service"),
        ("ConsulServiceHealthcheckFailed", "service"),
        ("BlackboxHealthCheckFailed", "network"),
        ("TlsFailure", "network"),
        ("ProbeDown", "network"),
        ("WebsiteDown", "network"),
        ("EndpointDown", "network"),
        # The box running out of something stays a host problem.
        ("NodeHighNumberConntrackEntriesUsed", "host"),
        ("NodeFilesystemAlmostOutOfSpace", "host"),
        ("HostOutOfDiskSpace", "host"),
        ("PfsenseStateTableFull", "host"),
        # Not the device, nor a port: what must keep its own layer.
        ("WindowsServiceDown", "service"),
        ("WindowsServerServiceDown", "service"),
        ("WindowsServiceNotRunning", "service"),
        ("ServiceDown", "service"),
        ("ServiceStopped", "service"),
        ("HttpDown", "service"),
        ("WebServerDown", "service"),
        ("SnmpModuleFailed", "service"),
        ("SnmpWalkFailed", "service"),
        ("ExporterCollectorFailed", "service"),
        ("NodeCollectorFailed", "service"),
        ("ExporterScrapeFailed", "service"),
        ("PrometheusRuleFailures", "service"),
        ("BackupJobFailed", "service"),
        ("MysqlSlowQueries", "service"),
        ("SupportDown", "service"),
        ("ReportFailed", "service"),
        ("BlackboxSslCertificateWillExpireSoon", "service"),
        ("KubePodNotReady", "service"),
        # The host rule wins over the device and network ones.
        ("HostOutOfMemory", "host"),
        ("NodeDiskErrors", "host"),
        # A ping that answers slowly is degradation, not the box gone.
        ("PingLatencyHigh", "network"),
        ("PingPacketLoss", "network"),
        # Whoever pings: a monitoring agent's ping that fails is the box gone.
        ("AgentPingFailed", "device"),
        ("HostPingFailed", "device"),
        ("AgentPingLatencyHigh", "network"),
        # Prometheus's and Alertmanager's own health is the monitoring's, not
        # a box, port or path of the estate; the targets it scrapes are devices.
        ("PrometheusServerDown", "service"),
        ("PrometheusDown", "service"),
        ("PrometheusNotConnectedToAlertmanager", "service"),
        ("PrometheusConfigurationReloadFailure", "service"),
        ("PrometheusRuleEvaluationFailures", "service"),
        ("PrometheusErrorSendingAlertsToAnyAlertmanager", "service"),
        ("PrometheusRemoteWriteSamplesDropped", "service"),
        ("PrometheusTsdbCompactionsFailed", "service"),
        ("AlertmanagerClusterDown", "service"),
        ("PrometheusTargetDown", "device"),
        ("PrometheusTargetMissingWithWarmupTime", "device"),
        # A port is the link whichever vendor's name is in front of it.
        ("CiscoInterfaceDown", "link"),
        ("JuniperInterfaceDown", "link"),
        ("MikrotikInterfaceDown", "link"),
        ("ArubaPortDown", "link"),
        ("FortigateInterfaceDown", "link"),
        ("UnifiPortDown", "link"),
        ("FortigateVpnTunnelDown", "link"),
        ("VpnTunnelDown", "link"),
        ("WebInterfaceDown", "service"),
        # A host's TCP port is a check that failed, not a switch port.
        ("HostPortDown", "network"),
        ("HostPortFlapping", "link"),
        # A trunk port that is down is the link; one of its members, degradation.
        ("TrunkPortDown", "link"),
        ("TrunkMemberDown", "network"),
        # node_exporter gone is the box's agent gone, as ExporterDown is.
        ("NodeExporterDown", "device"),
        # A disk's I/O errors are the host's; the singular counter a port's.
        ("NvmeErrors", "host"),
        ("HostIoErrors", "host"),
        ("HostIOErrors", "host"),
        ("NodeNetworkReceiveErr", "network"),
        ("RadioErrors", "service"),
        ("NodeExporterTextfileScrapeError", "service"),
        ("TcpPortDown", "network"),
        ("HostTcpPortDown", "network"),
        ("SnmpPortDown", "link"),
        ("ServicePortDown", "service"),
        # Errors are a port's only when the name says so; the application's
        # are the service's, Prometheus's own included.
        ("HttpErrors", "service"),
        ("ApiErrorsHigh", "service"),
        ("Http5xxErrors", "service"),
        ("NginxHighHttp5xxErrorRate", "service"),
        ("KafkaConsumerErrors", "service"),
        ("LinkerdHighErrorRate", "service"),
        ("CertificateErrors", "service"),
        ("ReportErrors", "service"),
        ("IfInErrors", "network"),
        # As the IF-MIB spells the counter, and the checksum as an acronym.
        ("ifInErrors", "network"),
        ("CRCErrors", "network"),
        ("HighCRCErrorRate", "network"),
        # However the rule set cases it, a port's word as a word of its own.
        ("HighPacketErrors", "network"),
        ("VXLANEncapErrors", "network"),
        ("node_network_IN_errors", "network"),
        ("interface_errors", "network"),
        ("INTERFACE_ERRORS", "network"),
        ("NICErrors", "network"),
        ("FCSErrors", "network"),
        # Not inside another word, however cased.
        ("TransportErrors", "service"),
        ("PortworxErrors", "service"),
        ("NotifThroughputLow", "service"),
        ("WebhookErrors", "service"),
        ("InterfaceCrcErrors", "network"),
        ("InterfaceErrorRateHigh", "network"),
        # Throughput likewise; a disk's is the host's.
        ("WanThroughputLow", "network"),
        ("InterfaceThroughputHigh", "network"),
        ("KafkaThroughputLow", "service"),
        ("DiskThroughputLow", "host"),
        # A bond or LAG that lost members still forwards: degradation; one
        # that is down is the link. A consumer's lag is no LAG.
        ("BondDegraded", "network"),
        ("NodeBondingDegraded", "network"),
        ("HostNetworkBondDegraded", "network"),
        ("LagMemberDown", "network"),
        ("BondSlaveDown", "network"),
        ("BondDown", "link"),
        ("PortChannelDown", "link"),
        ("KafkaConsumerLagHigh", "service"),
        ("ReplicationLagDegraded", "service"),
    ],
)
def test_community_alertnames_land_in_their_layer(alertname, layer):
    c = correlator()
    assert c.layer_of({"alertname": alertname}) == layer


def test_a_name_longer_than_any_real_one_is_not_given_to_the_rules():
    # Some rules scan a name once per word they find in it: a hostile name of
    # megabytes is kept from them (and from the symptom kinds) altogether.
    c = correlator()
    hostile = "If" * 600 + "DiskFull"
    assert c.layer_of({"alertname": hostile}) == "service"
    assert c.kind_of({"alertname": "Loss" * 300}, "network") == c.kind_of({}, "network")
    # Its own layer label is still read, and a real name of the same words is placed.
    assert c.layer_of({"alertname": hostile, "layer": "host"}) == "host"
    assert c.layer_of({"alertname": "If" * 10 + "DiskFull"}) == "host"
    assert c.kind_of({"alertname": "Loss" * 10}, "network") != c.kind_of({}, "network")


def documented_common_rules() -> list[tuple[str, str, list[str]]]:
    """(layer, regex, examples) of each row of docs/correlation.md's common-rules table."""
    text = CORRELATION_DOC.read_text()
    table = text[text.index("| layer | alertname regex | for example |") :].split("\n\n")[0]
    rows = []
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in line.replace("\\|", "\0").strip("|").split("|")]
        layer, regex, examples = (cell.replace("\0", "|") for cell in cells)
        pattern = regex[1 : regex.index("`", 1)]
        rows.append((layer, pattern, [name.strip() for name in examples.split(",")]))
    return rows


def test_the_documented_common_rules_are_the_code_s_in_order():
    rows = documented_common_rules()
    assert [(layer, pattern) for layer, pattern, _ in rows] == [
        (layer, pattern) for pattern, layer in PRESETS["network"].layers
    ]
    c = correlator()
    for index, (layer, _, examples) in enumerate(rows):
        for name in examples:
            assert c.layer_of({"alertname": name}) == layer, name
            # Each example is its own row's, not an earlier row's of the same layer.
            first = next(
                i for i, (_, pattern, _) in enumerate(rows) if re.fullmatch(pattern, name, re.I)
            )
            assert first == index, name


def shipped_firewall_alerts() -> list[tuple[str, str]]:
    """(alertname, its rule's ``layer`` label) of every shipped firewall and flow alert."""
    document = yaml.safe_load(FIREWALL_RULES.read_text())
    return [
        (rule["alert"], rule["labels"].get("layer", ""))
        for group in document["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def test_the_firewall_preset_places_each_shipped_firewall_alert_by_name_alone():
    """The rule's ``layer`` label and the preset's name rules agree on every firewall alert.

    Under another preset the label decides; under ``firewall`` the name alone does
    (a user relabelling or dropping the label still gets the same layer).
    """
    alerts = shipped_firewall_alerts()
    assert len(alerts) >= 10
    firewall = correlator("correlation: {preset: firewall}")
    network = correlator("correlation: {preset: network}")
    for alertname, layer in alerts:
        assert layer, f"{alertname} has no layer label"
        assert firewall.layer_of({"alertname": alertname}) == layer, alertname
        assert network.layer_of({"alertname": alertname, "layer": layer}) == layer, alertname


# -- state ---------------------------------------------------------------------


def test_load_then_continue_equals_one_uninterrupted_run():
    alerts = storm("core-link-down.yml") + storm("two-sites.yml")
    link = alerts[5]
    history = [*alerts, resolved(link, 120), refired(link, 180), resolved(alerts[9], 200)]
    whole = correlator()
    fold(whole, history)

    first, second = correlator(), correlator()
    changes = fold(first, history[:12])
    second.load(final(changes).values())
    fold(second, history[12:])
    assert [incident_to_json(i) for i in second.open_incidents()] == [
        incident_to_json(i) for i in whole.open_incidents()
    ]


def test_load_keeps_resolved_incidents_so_their_members_can_flap():
    first = correlator()
    down = make("InterfaceDown", 0, site="hq", instance="sw3")
    incident = fold(first, [down, resolved(down, 60)])[-1].incident
    restarted = correlator()
    restarted.load([incident])
    assert restarted.open_incidents() == []
    change = fold(restarted, [refired(down, 120)])[0]
    assert (change.kind, change.incident.id) == ("reopened", incident.id)


def test_forgotten_incidents_no_longer_take_flaps():
    c = correlator()
    down = make("InterfaceDown", 0, site="hq", instance="sw3")
    other = make("InterfaceDown", 0, site="branch", instance="br1")
    old = fold(c, [down, other, resolved(down, 60)])[-1].incident
    c.forget_resolved_before(T0 + timedelta(seconds=61))
    assert c.incident(old.id) is None
    assert [i.group for i in c.open_incidents()] == [{"site": "branch"}]
    change = fold(c, [refired(down, 120)])[0]
    assert change.kind == "created"
    assert change.incident.id != old.id
    assert change.incident.members[down.fingerprint].flap_count == 0


def test_ten_thousand_open_alerts_across_a_hundred_sites():
    # A sanity check at the scale the worker must sustain; timing is in benchmarks/.
    c = correlator()
    alerts = []
    for site in range(100):
        alerts.append(
            make("InterfaceDown", 5, severity="critical", site=f"s{site}", instance=f"core{site}")
        )
        alerts += [
            make(
                "ProbePacketLoss",
                i % 60,
                site=f"s{site}",
                instance=f"h{site}-{i}",
                upstream=f"core{site}",
            )
            for i in range(99)
        ]
    random.Random(7).shuffle(alerts)
    fold(c, alerts)
    incidents = c.open_incidents()
    assert len(incidents) == 100
    for incident in incidents:
        assert len(incident.members) == 100
        assert root(incident).endswith("/InterfaceDown")
        assert incident.root_cause_facts is not None
        assert incident.root_cause_facts.dependents == 99

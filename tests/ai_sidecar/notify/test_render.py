"""The enriched copy: labels, sanitised annotations, links, endsAt and fingerprint."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from ai_sidecar.models import format_time
from ai_sidecar.notify import (
    ReturnTripPolicy,
    enriched_alert,
    fingerprint,
)
from ai_sidecar.notify import postable as render_postable
from ai_sidecar.store import OutboxRow, PostState
from tests.ai_sidecar.builders import analysed_incident, peer_member
from tests.ai_sidecar.notify.harness import (
    POLICY,
)
from tests.peers.alertmanager import postable

# --- the enriched copy ----------------------------------------------------------


def test_enriched_alert_is_the_raw_alert_plus_the_analysis():
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    m = replace(
        peer_member("LinkDown", site="a", starts_at=now - timedelta(minutes=3)),
        annotations={"summary": "down <!here>", "runbook_url": "http://wiki/rb"},
    )
    alert = enriched_alert(analysed_incident(m, priority="P1"), m, POLICY, now)
    assert alert["labels"] == {
        "alertname": "LinkDown",
        "instance": "sw1",
        "severity": "critical",
        "site": "a",
        "scout_enriched": "true",
        "scout_incident": "inc-1",
        "scout_priority": "P1",
    }
    assert alert["annotations"] == {
        # Original annotations stay, sanitised too: they may quote device text.
        "summary": "down here",
        "runbook_url": "http://wiki/rb",
        "ai_summary": "channel Uplink of site A is down",
        "ai_root_cause": "sw1 Gi0/1 lost carrier",
        "ai_impact": "Site A is offline",
        "ai_actions": "1. Check the SFP on sw1 Gi0/1\n2. Call the carrier",
        # What people read first, from the labels (tests/ai_sidecar/notify/test_wording.py).
        "scout_title": "P1 · an interface down on sw1 (site a)",
        "scout_timeline": "Started 2024-05-01 11:57:00 UTC.",
        "scout_console_url": "http://127.0.0.1:8782/console/incidents/inc-1",
        "scout_incident_url": "http://127.0.0.1:8782/api/v1/incidents/inc-1",
        "prometheus_url": "http://prometheus.example/graph?g0.expr=up",
        "grafana_url": "http://grafana.example/d/scout",
    }
    assert alert["startsAt"] == "2024-05-01T11:57:00Z"
    assert alert["endsAt"] == "2024-05-01T12:05:00Z"  # now + keepalive
    assert alert["generatorURL"] == "http://prometheus.example/graph?g0.expr=up"


def test_enriched_alert_ends_when_the_member_or_incident_resolved():
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    start = now - timedelta(minutes=10)
    gone = peer_member(
        "LinkDown", status="resolved", starts_at=start, ends_at=now - timedelta(minutes=2)
    )
    assert (
        enriched_alert(analysed_incident(gone), gone, POLICY, now)["endsAt"]
        == "2024-05-01T11:58:00Z"
    )
    firing = peer_member("LinkDown", starts_at=start)
    closed = analysed_incident(firing, status="resolved", resolved_at=now - timedelta(minutes=1))
    assert enriched_alert(closed, firing, POLICY, now)["endsAt"] == "2024-05-01T11:59:00Z"
    # An end in the future would keep the copy firing in Alertmanager until then.
    later = peer_member(
        "LinkDown", status="resolved", starts_at=start, ends_at=now + timedelta(hours=1)
    )
    assert enriched_alert(analysed_incident(later), later, POLICY, now)["endsAt"] == format_time(
        now
    )


def test_only_a_copy_the_sidecar_resolves_says_so():
    """scout_resolved tells the sidecar's resolution from an expiry (scout.tmpl)."""
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    start = now - timedelta(minutes=10)
    gone = peer_member("LinkDown", status="resolved", starts_at=start, ends_at=now)
    firing = peer_member("LinkDown", instance="sw2", starts_at=start)
    going_on = analysed_incident(gone, firing)
    closed = analysed_incident(firing, status="resolved", resolved_at=now)
    resolved_by = {
        "member": enriched_alert(going_on, gone, POLICY, now),
        "incident": enriched_alert(closed, firing, POLICY, now),
    }
    for alert in resolved_by.values():
        assert alert["annotations"]["scout_resolved"] == "true"
    assert "scout_resolved" not in enriched_alert(going_on, firing, POLICY, now)["annotations"]


def test_enriched_alert_links_only_what_is_configured():
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    m = peer_member("HostDown", generator_url="")
    alert = enriched_alert(analysed_incident(m), m, ReturnTripPolicy(), now)
    assert "generatorURL" not in alert
    links = {"scout_console_url", "scout_incident_url", "prometheus_url", "grafana_url"}
    assert links.isdisjoint(alert["annotations"])
    alert = enriched_alert(
        analysed_incident(m), m, ReturnTripPolicy(prometheus_url="http://p:9090"), now
    )
    assert alert["annotations"]["prometheus_url"] == "http://p:9090"


def test_policy_refuses_a_repost_interval_that_lets_copies_expire():
    from ai_sidecar.errors import ConfigError

    with pytest.raises(ConfigError, match="repost_interval must be shorter than keepalive"):
        ReturnTripPolicy(keepalive=timedelta(minutes=1), repost_interval=timedelta(minutes=1))


def test_fingerprint_is_the_one_alertmanager_computes(alertmanager):
    label_sets = [
        {"alertname": "A"},
        {"alertname": "LinkDown", "instance": "sw1:161", "ifName": "Gi0/1", "site": "zürich"},
        {"alertname": "B", "scout_enriched": "true", "z": "", "a_b": "x\ny"},
    ]
    alertmanager.post([postable(labels) for labels in label_sets])
    seen = {tuple(sorted(a["labels"].items())): a["fingerprint"] for a in alertmanager.alerts()}
    # Alertmanager drops empty label values, which do not change the fingerprint either.
    expected = {
        tuple(sorted((k, v) for k, v in labels.items() if v)): fingerprint(labels)
        for labels in label_sets
    }
    assert seen == expected


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "http://evil.example/|click here",
        "http://evil.example/> <!channel",
        "http://evil.example/a b",
        "data:text/html,x",
        "http://evil.example/\u202egnp",
        "http://x.example/" + "a" * 3000,
    ],
)
def test_enriched_alert_drops_a_generator_url_that_is_no_safe_link(url):
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    m = peer_member("HostDown", generator_url=url)
    alert = enriched_alert(
        analysed_incident(m), m, ReturnTripPolicy(prometheus_url="http://p:9090"), now
    )
    assert "generatorURL" not in alert
    assert alert["annotations"]["prometheus_url"] == "http://p:9090"


def test_enriched_alert_caps_a_copied_annotation_in_lines_and_characters():
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    huge = "\n".join(f"line {n}" for n in range(5005))
    m = replace(
        peer_member("LinkDown"),
        annotations={"description": huge, "summary": "Gi0/1 \u202egnp.exe\u202c <@U123>"},
    )
    annotations = enriched_alert(analysed_incident(m), m, POLICY, now)["annotations"]
    description = annotations["description"]
    assert description.count("\n") == 19
    assert description.endswith("line 19 …")
    assert annotations["summary"] == "Gi0/1 gnp.exe user U123"


def _row(state: PostState, ends_at: float | None) -> OutboxRow:
    alert = {"labels": {"alertname": "LinkDown"}, "startsAt": "2024-05-01T11:57:00Z"}
    return OutboxRow(
        peer="http://am",
        fingerprint="f1",
        incident_id="inc-1",
        member="m1",
        state=state,
        alert=json.dumps(alert),
        raw="{}",
        ends_at=ends_at,
        resolved_until=None,
        due_at=0.0,
        posted_at=None,
        revision=1,
    )


def test_a_firing_copy_starts_when_posted_so_group_wait_gathers_an_incident():
    # Alertmanager skips group_wait for a new group whose first alert started
    # more than group_wait ago; the raw alert's start would always be that old.
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    alert = render_postable(_row("firing", None), now, timedelta(minutes=5))
    assert alert["startsAt"] == format_time(now)
    assert alert["endsAt"] == format_time(now + timedelta(minutes=5))


def test_a_resolved_copy_keeps_its_start_so_it_ends_after_it():
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    ended = datetime(2024, 5, 1, 11, 58, tzinfo=UTC).timestamp()
    alert = render_postable(_row("resolved", ended), now, timedelta(minutes=5))
    assert alert["startsAt"] == "2024-05-01T11:57:00Z"
    assert alert["endsAt"] == "2024-05-01T11:58:00Z"


def test_every_resolution_posted_carries_the_sidecars_word():
    # A copy resolved under an old label set (an escalation, an incident
    # absorbed by a merge) keeps the text it had while firing, and one stored
    # by an older release has no mark: posted resolved, each is the sidecar's
    # own resolution, never an expiry ("not updated" in scout.tmpl).
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    stored_firing_text = replace(
        _row("resolved", now.timestamp()),
        alert=json.dumps(
            {
                "labels": {"alertname": "LinkDown"},
                "annotations": {"ai_summary": "core link down"},
                "startsAt": "2024-05-01T11:57:00Z",
            }
        ),
    )
    resolved = render_postable(stored_firing_text, now, timedelta(minutes=5))
    assert resolved["annotations"]["scout_resolved"] == "true"
    assert resolved["annotations"]["ai_summary"] == "core link down"
    firing = render_postable(
        replace(stored_firing_text, state="firing", ends_at=None), now, timedelta(minutes=5)
    )
    assert "scout_resolved" not in firing["annotations"]

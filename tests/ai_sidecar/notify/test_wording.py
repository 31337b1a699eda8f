"""What people read first: titles in plain words, times in the configured zone, resolutions."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from ai_sidecar.config import parse_config
from ai_sidecar.errors import ConfigError
from ai_sidecar.models import MERGED_REASON, Incident, Member
from ai_sidecar.notify import ReturnTripPolicy, Wording, console_url, enriched_alert
from ai_sidecar.notify.phrases import PROBLEMS
from ai_sidecar.notify.wording import alert_words, duration, problem
from tests.ai_sidecar.builders import member

RULES = Path(__file__).resolve().parents[3] / "prometheus" / "rules"
PARIS = ZoneInfo("Europe/Paris")
# The start of the incident the issue quotes.
STARTED = datetime(2026, 12, 2, 22, 41, 25, 446160, tzinfo=UTC)


def at(value: datetime, **labels: str) -> Member:
    return replace(member(**labels), starts_at=value, first_starts_at=value)


def down(**extra: str) -> Member:
    labels = {"alertname": "InterfaceDown", "instance": "sw-3", "ifName": "Gi1/0/1"}
    return at(STARTED, **{**labels, "site": "paris", **extra})


def incident_of(*members: Member, priority: str = "P3", **changes: object) -> Incident:
    made = Incident(
        id="inc-1",
        status="open",
        group={"site": "paris"},
        members={m.fingerprint: m for m in members},
        created_at=STARTED,
        updated_at=STARTED,
        root_cause=members[0].fingerprint,
        priority=priority,  # type: ignore[arg-type]
    )
    return replace(made, **changes)  # type: ignore[arg-type]


def resolved(m: Member, after: timedelta) -> Member:
    return replace(m, status="resolved", ends_at=m.starts_at + after)


def test_the_title_says_what_is_wrong_and_where():
    words = Wording(PARIS).annotations(incident_of(down()))
    assert words == {
        "scout_title": "P3 · Gi1/0/1 down on sw-3 (site paris)",
        "scout_timeline": "Started 2026-12-02 23:41:25 CET.",
    }


def test_the_title_counts_the_related_alerts_and_speaks_for_the_root_cause():
    probe = at(STARTED + timedelta(seconds=30), alertname="ProbeFailed", instance="web1")
    other = at(STARTED, alertname="ProbeFailed", instance="mail1")
    title = Wording().annotations(incident_of(down(), probe, other, priority="P2"))["scout_title"]
    assert title == "P2 · Gi1/0/1 down on sw-3 (site paris), and 2 related alerts"
    one = Wording().annotations(incident_of(probe, down()))["scout_title"]
    # The root cause lacks a site label: the incident's group has one.
    assert one == "P3 · probe of web1 failing (site paris), and 1 related alert"


@pytest.mark.parametrize(
    ("labels", "said"),
    [
        ({"alertname": "InterfaceDown", "instance": "sw-3"}, "an interface down on sw-3"),
        ({"alertname": "LinkDown", "instance": "rtr1", "interface": "wan0"}, "wan0 down on rtr1"),
        ({"alertname": "TargetDown", "instance": "db1"}, "db1 down"),
        ({"alertname": "TargetDown"}, "an unnamed target down"),
        (
            {"alertname": "HostFilesystemAlmostFull", "host": "srv1", "mountpoint": "/var"},
            "/var almost full on srv1",
        ),
        ({"alertname": "FirewallVpnTunnelDown", "firewall": "fw1"}, "VPN tunnel ? down on fw1"),
        ({"alertname": "BGPSessionFlapping", "instance": "rtr2"}, "BGP session flapping on rtr2"),
        ({"alertname": "PowerSupplyFailed"}, "power supply failed"),
        ({"alertname": ""}, "an unnamed alert"),
    ],
)
def test_problems_in_plain_words(labels, said):
    assert problem(replace(member(), labels=labels)) == said


def test_every_shipped_rule_through_the_sidecar_has_plain_words():
    """Watchdog and the sidecar's own alerts never reach it (alertmanager/alertmanager.yml)."""
    names = {
        rule["alert"]
        for path in RULES.glob("*.rules.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    assert "InterfaceDown" in names
    routed_around = {name for name in names if name == "Watchdog" or name.startswith("Sidecar")}
    assert sorted(names - routed_around - PROBLEMS.keys()) == []


def test_alert_names_and_durations_in_words():
    assert alert_words("Disk2Full") == "disk 2 full"
    assert alert_words("my_alert-name") == "my alert name"
    assert duration(timedelta(seconds=3725.9)) == "1 h 2 min 5 s"
    assert duration(timedelta(days=1, seconds=5)) == "1 d 5 s"
    assert duration(timedelta(seconds=-3)) == "0 s"


def test_times_are_to_the_second_in_the_zone_with_its_daylight_saving():
    assert Wording().time(STARTED) == "2026-12-02 22:41:25 UTC"
    assert Wording(PARIS).time(STARTED) == "2026-12-02 23:41:25 CET"
    assert Wording(PARIS).time(STARTED.replace(month=7)) == "2026-07-03 00:41:25 CEST"
    assert Wording(ZoneInfo("Asia/Kolkata")).time(STARTED) == "2026-12-03 04:11:25 IST"


def test_a_resolved_incident_says_how_long_it_lasted_and_what_resolved_it():
    probe = at(STARTED + timedelta(seconds=20), alertname="ProbeFailed", instance="web1")
    members = (
        resolved(down(), timedelta(minutes=10)),
        resolved(probe, timedelta(minutes=11, seconds=45)),
    )
    ended = STARTED + timedelta(minutes=12, seconds=5)
    over = incident_of(*members, status="resolved", resolved_at=ended)
    assert Wording(PARIS).annotations(over) == {
        "scout_title": "Resolved · P3 · Gi1/0/1 down on sw-3 (site paris), and 1 related alert"
        " · lasted 12 min 5 s",
        "scout_timeline": "Started 2026-12-02 23:41:25 CET, resolved 2026-12-02 23:53:30 CET:"
        " lasted 12 min 5 s.",
        "scout_resolution": "Resolved when the last of its 2 alerts (probe of web1 failing)"
        " cleared at 2026-12-02 23:53:30 CET.",
    }


@pytest.mark.parametrize(
    ("statuses", "said"),
    [
        # The root cause cleared last.
        (
            ("resolved", "resolved"),
            "Resolved when the root cause (Gi1/0/1 down on sw-3) cleared"
            " at 2026-12-02 22:51:25 UTC.",
        ),
        # correlation.resolve: root_cause, with a symptom still firing.
        (
            ("resolved", "firing"),
            "Resolved when the root cause (Gi1/0/1 down on sw-3) cleared"
            " at 2026-12-02 22:51:25 UTC. 1 other alert was still firing.",
        ),
    ],
)
def test_resolution_by_the_root_cause(statuses, said):
    probe = at(STARTED, alertname="ProbeFailed", instance="web1")
    root, other = resolved(down(), timedelta(minutes=10)), resolved(probe, timedelta(minutes=5))
    if statuses[1] == "firing":
        other = probe
    over = incident_of(root, other, status="resolved", resolved_at=STARTED + timedelta(minutes=10))
    assert Wording().annotations(over)["scout_resolution"] == said


def test_resolution_of_a_single_alert_and_of_a_merged_incident():
    ended = STARTED + timedelta(seconds=59)
    alone = incident_of(
        resolved(down(), timedelta(seconds=59)), status="resolved", resolved_at=ended
    )
    words = Wording().annotations(alone)
    assert words["scout_resolution"] == (
        "Resolved when Gi1/0/1 down on sw-3 cleared at 2026-12-02 22:42:24 UTC."
    )
    assert words["scout_title"].endswith(" · lasted 59 s")
    merged = replace(alone, root_cause_reasons=(f"{MERGED_REASON}inc-9", "earliest"))
    assert Wording().annotations(merged)["scout_resolution"] == (
        "Merged into incident inc-9 at 2026-12-02 22:42:24 UTC: it goes on there."
    )


HOSTILE = "sw-3\r\nBcc: victim@example.org <!channel> @here <b>x</b>\u202e & co"


def test_hostile_labels_leave_no_markup_mention_or_line_break_in_the_title():
    title = Wording().annotations(incident_of(down(instance=HOSTILE, site="<!here>")))[
        "scout_title"
    ]
    assert "\r" not in title
    assert "\n" not in title
    for obeyed in ("<!channel>", "@here", "<b>", "<!here>", "\u202e"):
        assert obeyed not in title
    assert title == (
        "P3 · Gi1/0/1 down on sw-3 Bcc: victim@example.org channel here"
        " \u2039b\u203ax\u2039/b\u203a & co (site here)"
    )


def test_every_copy_links_the_incidents_console_page_under_the_external_url():
    policy = ReturnTripPolicy(external_url="https://scout.example.net/base/", zone=PARIS)
    assert console_url(policy, "inc/1 x") == (
        "https://scout.example.net/base/console/incidents/inc%2F1%20x"
    )
    assert console_url(ReturnTripPolicy(), "inc-1") is None
    m = down()
    annotations = enriched_alert(incident_of(m), m, policy, STARTED)["annotations"]
    assert annotations["scout_console_url"] == (
        "https://scout.example.net/base/console/incidents/inc-1"
    )
    assert annotations["scout_timeline"] == "Started 2026-12-02 23:41:25 CET."


def test_the_timezone_is_an_iana_name_checked_when_the_config_is_read():
    assert parse_config("{}", "sidecar.yml").notifications.zone == ZoneInfo("UTC")
    config = parse_config("notifications:\n  timezone: Europe/Paris\n", "sidecar.yml")
    assert config.notifications.zone == PARIS
    for bad, said in (
        ("Europe/Pariss", "unknown time zone 'Europe/Pariss'"),
        ("../../etc/passwd", "unknown time zone '../../etc/passwd'"),
        ("CET+1", "unknown time zone 'CET+1'"),
        ("1", "input should be a valid string, got 1"),
    ):
        with pytest.raises(ConfigError) as error:
            parse_config(f"notifications:\n  timezone: {bad}\n", "sidecar.yml")
        assert said in str(error.value)
        assert str(error.value).startswith("sidecar.yml:2: notifications.timezone: ")
    with pytest.raises(ConfigError, match="zone"):
        parse_config("notifications:\n  zone: UTC\n", "sidecar.yml")

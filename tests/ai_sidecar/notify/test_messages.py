"""The Slack and e-mail messages people read, as a real Alertmanager sends them: golden files.

The copies are the sidecar's own (:func:`ai_sidecar.notify.enriched_alert`) for a
fixed incident, clock, zone and signing key, posted to Alertmanager 0.25 with
the shipped routes and templates; what reaches the Slack-compatible and SMTP
sinks is compared with ``golden/`` (English) and ``golden/fr/`` (``language:
fr``). Only what differs by run is replaced: Alertmanager's own URL (a free
port). To accept a deliberate change (a catalogue's new wording, say), run with
``SCOUT_UPDATE_GOLDEN=1`` and review the diff of ``golden/``:

    SCOUT_UPDATE_GOLDEN=1 .venv/bin/pytest tests/ai_sidecar/notify/test_messages.py
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ai_sidecar.models import Analysis, Incident, Member, format_time
from ai_sidecar.notify import ReturnTripPolicy, enriched_alert, fingerprint
from ai_sidecar.notify.signing import GraphLinks, GraphSigner
from tests.peers.alertmanager import Alertmanager, render_config
from tests.peers.notify import SlackSink, SmtpSink, email_body, slack_text

pytestmark = pytest.mark.peers

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("SCOUT_UPDATE_GOLDEN") == "1"
AM_URL = "http://alertmanager.test"

STARTED = datetime(2026, 12, 2, 22, 41, 25, 446160, tzinfo=UTC)
POLICY = ReturnTripPolicy(
    external_url="https://scout.example.net",
    grafana_url="https://grafana.example.net/d/scout",
    graph_links=GraphLinks(
        "https://scout.example.net", GraphSigner(b"golden-key-0123456789", timedelta(days=7))
    ),
    zone=ZoneInfo("Europe/Paris"),
)
ANALYSIS = Analysis(
    summary="Gi1/0/1 on sw-3 lost its link; web1 and mail1 sit behind it.",
    root_cause="InterfaceDown on sw-3 Gi1/0/1 (link layer) is the probable root cause.",
    impact="3 targets affected: mail1, sw-3, web1.",
    actions=("Check the optic and the patch lead of sw-3 Gi1/0/1",),
    confidence=0.8,
    false_positive_likelihood=0.1,
)
# With language: fr, the analyst answers in French (ai_sidecar/enrichment); names, metric
# and alert names stay as they are.
FRENCH = replace(POLICY, language="fr")
ANALYSE = replace(
    ANALYSIS,
    summary="Gi1/0/1 de sw-3 a perdu son lien ; web1 et mail1 sont derrière.",
    root_cause="InterfaceDown sur sw-3 Gi1/0/1 (couche liaison) est la cause racine probable.",
    impact="3 cibles touchées : mail1, sw-3, web1.",
    actions=("Vérifier l\u2019optique et la jarretière de sw-3 Gi1/0/1",),
)


def member(labels: dict[str, str], summary: str, offset: int) -> Member:
    start = STARTED + timedelta(seconds=offset)
    return Member(
        fingerprint=fingerprint(labels),
        labels=labels,
        annotations={"summary": summary},
        status="firing",
        starts_at=start,
        first_starts_at=start,
    )


def storm(instance: str = "sw-3", site: str = "paris", analysis: Analysis = ANALYSIS) -> Incident:
    common = {"site": site, "severity": "critical", "job": "snmp"}
    down = member(
        {"alertname": "InterfaceDown", "instance": instance, "ifName": "Gi1/0/1", **common},
        f"Interface Gi1/0/1 down on {instance}",
        0,
    )
    probes = [
        member({"alertname": "ProbeFailed", "instance": name, **common}, f"Probe of {name}", 20)
        for name in ("web1", "mail1")
    ]
    return Incident(
        id="inc-7f3a",
        status="open",
        group={"site": site},
        members={m.fingerprint: m for m in (down, *probes)},
        created_at=STARTED,
        updated_at=STARTED,
        root_cause=down.fingerprint,
        priority="P2",
        analysis=analysis,
        analyst="local",
    )


def resolved(incident: Incident, lasted: timedelta) -> Incident:
    """``incident`` resolved ``lasted`` after it started, its root cause clearing last."""
    ended = STARTED + lasted
    members = {
        fp: replace(
            m,
            status="resolved",
            ends_at=ended if fp == incident.root_cause else ended - timedelta(seconds=40),
        )
        for fp, m in incident.members.items()
    }
    return replace(incident, status="resolved", members=members, resolved_at=ended)


def copies(incident: Incident, policy: ReturnTripPolicy = POLICY) -> list[dict[str, Any]]:
    """The copies as the sidecar posts them: built at a fixed time, kept alive for an hour
    from Alertmanager's clock (firing), or ended when the incident did (resolved)."""
    now = STARTED + timedelta(minutes=1)
    alerts = [enriched_alert(incident, m, policy, now) for m in incident.members.values()]
    if incident.status == "open":
        for alert in alerts:
            alert["endsAt"] = format_time(datetime.now(UTC) + timedelta(hours=1))
    return alerts


@pytest.fixture
def sinks(tmp_path: Path) -> Iterator[tuple[SlackSink, SmtpSink, Alertmanager]]:
    with SlackSink() as slack, SmtpSink() as smtp:
        config = render_config(
            tmp_path, sidecar_url=slack.base_url, slack_url=slack.url, smtp_smarthost=smtp.smarthost
        )
        with Alertmanager(tmp_path, config) as am:
            yield slack, smtp, am


def readable_email(mail: EmailMessage, am: Alertmanager) -> str:
    """What a person reads in ``mail``: the headers that say who and what, and both bodies."""
    parts = [f"{name}: {mail[name]}" for name in ("From", "To", "Subject")]
    parts += ["", "--- text/plain", email_body(mail, "plain"), "--- text/html"]
    parts.append(email_body(mail, "html"))
    # Mail lines end in CRLF on the wire; the golden files are text.
    return "\n".join(parts).replace("\r\n", "\n").replace(am.url, AM_URL)


def readable_slack(message: dict[str, Any], am: Alertmanager) -> str:
    return json.dumps(message, indent=2, sort_keys=True, ensure_ascii=False).replace(am.url, AM_URL)


def assert_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text if text.endswith("\n") else text + "\n")
    assert path.exists(), f"no golden file {path}: run with SCOUT_UPDATE_GOLDEN=1"
    expected = path.read_text()
    assert (text if text.endswith("\n") else text + "\n") == expected, name


def test_an_incident_and_its_resolution_read_as_the_golden_messages(sinks):
    slack, smtp, am = sinks
    incident = storm()
    am.post(copies(incident))
    # The copies' startsAt is long past, so Alertmanager flushes the group as soon as the
    # first copy joins it: now and then that message holds one alert and the next, a
    # group_interval later, all three. The golden messages are the whole incident's.
    firing = slack.wait_for(lambda m: "3 firing" in slack_text(m))
    firing_mail = smtp.wait_for(lambda m: "3 firing" in email_body(m, "plain"))
    am.post(copies(resolved(incident, timedelta(minutes=12, seconds=5))))
    over = slack.wait_for(lambda m: "lasted 12 min 5 s" in slack_text(m))
    over_mail = smtp.wait_for(lambda m: "lasted" in str(m["Subject"]))

    # The title says what and where, and links the console; the rest is in the goldens.
    [attachment] = firing["attachments"]
    assert attachment["title"] == "P2 · Gi1/0/1 down on sw-3 (site paris), and 2 related alerts"
    assert attachment["title_link"] == "https://scout.example.net/console/incidents/inc-7f3a"
    assert "Started 2026-12-02 23:41:25 CET." in attachment["text"]
    assert over["attachments"][0]["title"] == (
        "Resolved · P2 · Gi1/0/1 down on sw-3 (site paris), and 2 related alerts"
        " · lasted 12 min 5 s"
    )
    assert over_mail["Subject"] == (
        "[Scout] Resolved · P2 · Gi1/0/1 down on sw-3 (site paris), and 2 related alerts"
        " · lasted 12 min 5 s"
    )
    assert_golden("slack-firing.json", readable_slack(firing, am))
    assert_golden("slack-resolved.json", readable_slack(over, am))
    assert_golden("email-firing.txt", readable_email(firing_mail, am))
    assert_golden("email-resolved.txt", readable_email(over_mail, am))
    # Nothing but the incident's own messages (no raw alert failed open to people).
    subjects = {str(m["Subject"]) for m in smtp.messages()}
    assert subjects == {str(firing_mail["Subject"]), str(over_mail["Subject"])}


def test_copies_that_expire_read_as_not_updated_never_as_resolved(sinks):
    """The sidecar stopped refreshing its copies (it died): their last endsAt passes and
    Alertmanager resolves the group without the sidecar's word. What people read is no
    all-clear: the firing title marked [NOT UPDATED], the raw alerts to follow, Slack's
    warning colour, and no alert listed as resolved; the same in the e-mail."""
    slack, smtp, am = sinks
    alerts = copies(storm())
    am.post(alerts)
    slack.wait_for(lambda m: "firing" in slack_text(m))
    smtp.wait_for(lambda m: "firing" in email_body(m, "plain"))
    # What Alertmanager holds once the last refresh's endsAt has passed: the firing
    # copies as last posted, ended.
    for alert in alerts:
        alert["endsAt"] = format_time(datetime.now(UTC) - timedelta(seconds=1))
    am.post(alerts)
    stale = "Scout stopped updating this incident; it is not known to be resolved."
    message = slack.wait_for(lambda m: "0 firing" in slack_text(m), timeout=120)
    [attachment] = message["attachments"]
    assert attachment["title"] == (
        "[NOT UPDATED] P2 · Gi1/0/1 down on sw-3 (site paris), and 2 related alerts"
    )
    assert attachment["color"] == "warning"
    assert attachment["text"].startswith(f"*{stale} Its raw alerts follow, not analysed.*\n")
    assert "(not updated) *InterfaceDown* on sw-3" in attachment["text"]
    assert "resolved)" not in attachment["text"]
    mail = smtp.wait_for(lambda m: "NOT UPDATED" in str(m["Subject"]), timeout=120)
    assert mail["Subject"] == (
        "[Scout] [NOT UPDATED] P2 · Gi1/0/1 down on sw-3 (site paris), and 2 related alerts"
    )
    for part in ("plain", "html"):
        body = email_body(mail, part)
        assert stale in body
        assert "(resolved)" not in body


HOSTILE = "sw-3\r\nBcc: victim@example.org\r\n\r\n<!channel> @here <b>R&D</b> <https://evil|x>"


def test_hostile_labels_in_the_title_are_inert_in_slack_and_email(sinks):
    """Through the real Alertmanager: no mention, link or markup obeyed, no header injected."""
    slack, smtp, am = sinks
    am.post(copies(storm(instance=HOSTILE, site="<!here>")))
    message = slack.wait_for(lambda m: "Gi1/0/1 down on" in slack_text(m))
    mail = smtp.wait_for()
    title = message["attachments"][0]["title"]
    assert title == (
        "P2 · Gi1/0/1 down on sw-3 Bcc: victim@example.org channel here"
        " \u2039b\u203aR&amp;D\u2039/b\u203a x (https://evil) (site here), and 2 related alerts"
    )
    text = slack_text(message)
    for obeyed in ("<!channel>", "<!here>", "@here", "<https://evil", "<b>"):
        assert obeyed not in text
    assert mail["Bcc"] is None
    assert [name for name, _ in mail.items() if name.lower() == "bcc"] == []
    assert mail["Subject"] == (
        "[Scout] P2 · Gi1/0/1 down on sw-3 Bcc: victim@example.org channel here"
        " \u2039b\u203aR&D\u2039/b\u203a x (https://evil) (site here), and 2 related alerts"
    )
    html = email_body(mail, "html")
    assert "\u2039b\u203aR&amp;D\u2039/b\u203a" in html
    assert "<b>" not in html


def test_in_french_the_incident_and_its_resolution_read_as_the_french_golden_messages(sinks):
    """``language: fr``: French fixed words, times, counts and analysis; names and the
    alerts' own text (their summary annotations) as they are."""
    slack, smtp, am = sinks
    incident = storm(analysis=ANALYSE)
    am.post(copies(incident, FRENCH))
    firing = slack.wait_for(lambda m: "3 en cours" in slack_text(m))
    firing_mail = smtp.wait_for(lambda m: "3 en cours" in email_body(m, "plain"))
    am.post(copies(resolved(incident, timedelta(minutes=12, seconds=5)), FRENCH))
    over = slack.wait_for(lambda m: "durée 12 min 5 s" in slack_text(m))
    over_mail = smtp.wait_for(lambda m: "durée" in str(m["Subject"]))

    [attachment] = firing["attachments"]
    assert attachment["title"] == "P2 · Gi1/0/1 tombée sur sw-3 (site paris), et 2 alertes liées"
    assert "Début : 2 déc. 2026, 23:41:25 CET." in attachment["text"]
    assert "*Cause racine:* InterfaceDown sur sw-3 Gi1/0/1" in attachment["text"]
    # The alerts' own summaries are quoted as Prometheus's rules wrote them.
    assert "• *InterfaceDown* sur sw-3: Interface Gi1/0/1 down on sw-3" in attachment["text"]
    assert over_mail["Subject"] == (
        "[Scout] Résolu · P2 · Gi1/0/1 tombée sur sw-3 (site paris), et 2 alertes liées"
        " · durée 12 min 5 s"
    )
    assert "0 en cours, 3 résolues" in email_body(over_mail, "plain")
    assert_golden("fr/slack-firing.json", readable_slack(firing, am))
    assert_golden("fr/slack-resolved.json", readable_slack(over, am))
    assert_golden("fr/email-firing.txt", readable_email(firing_mail, am))
    assert_golden("fr/email-resolved.txt", readable_email(over_mail, am))
    subjects = {str(m["Subject"]) for m in smtp.messages()}
    assert subjects == {str(firing_mail["Subject"]), str(over_mail["Subject"])}


SCRIPTED = "<script>alert(1)</script> <!channel> *gras* <https://evil|x>"


def test_in_french_hostile_labels_stay_inert_in_slack_and_email(sinks):
    slack, smtp, am = sinks
    am.post(copies(storm(instance=HOSTILE, site=SCRIPTED, analysis=ANALYSE), FRENCH))
    message = slack.wait_for(lambda m: "Gi1/0/1 tombée sur" in slack_text(m))
    mail = smtp.wait_for()
    title = message["attachments"][0]["title"]
    assert title == (
        "P2 · Gi1/0/1 tombée sur sw-3 Bcc: victim@example.org channel here"
        " \u2039b\u203aR&amp;D\u2039/b\u203a x (https://evil) (site \u2039script\u203aalert(1)"
        "\u2039/script\u203a channel *gras* x (https://evil)), et 2 alertes liées"
    )
    text = slack_text(message)
    for obeyed in ("<!channel>", "<!here>", "@here", "<https://evil", "<b>", "<script"):
        assert obeyed not in text
    assert mail["Bcc"] is None
    html = email_body(mail, "html")
    assert "<script" not in html
    assert "\u2039script\u203aalert(1)\u2039/script\u203a" in html
    assert str(mail["Subject"]).startswith("[Scout] P2 · Gi1/0/1 tombée sur sw-3 Bcc:")

"""The shipped Alertmanager routing, inhibition and templates, checked with amtool and a
real Alertmanager (0.25)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from ai_sidecar.i18n import translator
from ai_sidecar.notify.phrases import TEMPLATE_WORDS, template_words
from tests.conftest import wait_for
from tests.peers.alertmanager import Alertmanager, Timings, postable, render_config
from tests.peers.notify import SlackSink, SmtpSink, email_body, slack_text

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "alertmanager" / "alertmanager.yml"
TEMPLATES = REPO / "alertmanager" / "templates" / "scout.tmpl"


@contextmanager
def shipped_alertmanager(tmp_path: Path) -> Iterator[tuple[SlackSink, Alertmanager]]:
    """A real Alertmanager on the shipped config, its Slack receiver a local sink
    (e-mail goes nowhere)."""
    with SlackSink() as sink:
        config = render_config(
            tmp_path, sidecar_url=sink.base_url, slack_url=sink.url, smtp_smarthost="127.0.0.1:9"
        )
        with Alertmanager(tmp_path, config) as am:
            yield sink, am


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["amtool", *args], capture_output=True, text=True, timeout=30, check=False
    )


def receivers_for(**labels: str) -> list[str]:
    result = amtool(
        "config",
        "routes",
        "test",
        f"--config.file={CONFIG}",
        *(f"{k}={v}" for k, v in labels.items()),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split(",")


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        # Enriched copies: people only, never back to the sidecar nor the raw fallback.
        ({"scout_enriched": "true", "scout_priority": "P1"}, ["scout-email", "scout-slack"]),
        ({"scout_enriched": "true", "scout_priority": "P2"}, ["scout-email", "scout-slack"]),
        ({"scout_enriched": "true", "scout_priority": "P3"}, ["scout-slack"]),
        ({"scout_enriched": "true", "scout_priority": "P4"}, ["scout-slack"]),
        # Raw alerts: the sidecar, and people after the fail-open delay.
        ({}, ["scout-sidecar", "people-raw"]),
        ({"scout_enriched": "false"}, ["scout-sidecar", "people-raw"]),
        # An anomaly never pages: its copies stay in Slack at any priority, and
        # its raw alert goes the usual way (the sidecar, then people in Slack).
        (
            {"alertname": "AnomalyDetected", "scout_enriched": "true", "scout_priority": "P1"},
            ["scout-slack"],
        ),
        (
            {"alertname": "AnomalyDetected", "scout_enriched": "true", "scout_priority": "P3"},
            ["scout-slack"],
        ),
        ({"alertname": "AnomalyDetected"}, ["scout-sidecar", "people-raw"]),
        # The Watchdog reaches the dead man's switch only.
        ({"alertname": "Watchdog"}, ["deadman"]),
        # The sidecar's own health: straight to people, not through the sidecar.
        ({"alertname": "SidecarBacklog"}, ["people-raw"]),
        ({"alertname": "SidecarWebhookRejecting"}, ["people-raw"]),
        # A deploy-time scout_lang label (for the raw path's words) routes nothing differently.
        (
            {"scout_enriched": "true", "scout_priority": "P2", "scout_lang": "fr"},
            ["scout-email", "scout-slack"],
        ),
        ({"scout_lang": "fr"}, ["scout-sidecar", "people-raw"]),
    ],
)
def test_routes(labels, receivers):
    assert receivers_for(**{"alertname": "LinkDown", "instance": "sw1", **labels}) == receivers


def test_route_timings_implement_fail_open():
    routes = {r["receiver"]: r for r in yaml.safe_load(CONFIG.read_text())["route"]["routes"]}
    assert routes["scout-slack"]["group_by"] == ["scout_incident"]
    assert "continue" not in routes["scout-slack"]
    sidecar = routes["scout-sidecar"]
    assert (sidecar["group_wait"], sidecar["continue"]) == ("0s", True)
    hook = next(
        r for r in yaml.safe_load(CONFIG.read_text())["receivers"] if r["name"] == "scout-sidecar"
    )["webhook_configs"][0]
    # Bounded, so a huge group never exceeds the sidecar's body limit.
    assert (hook["send_resolved"], hook["max_alerts"]) == (True, 2000)
    # The raw route waits longer than the enriched one, or people would get both.
    assert routes["people-raw"]["group_wait"] == "2m"
    assert routes["scout-slack"]["group_wait"] == "10s"


def _walk(node: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [item for k, v in node.items() for item in _walk(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [item for i, v in enumerate(node) for item in _walk(v, f"{path}[{i}]")]
    return [(path, node)]


def test_secrets_come_from_files_only():
    leaves = _walk(yaml.safe_load(CONFIG.read_text()))
    secret_keys = ("api_url", "auth_password", "credentials", "auth_secret", "password")
    inline = [p for p, _ in leaves if p.rsplit(".", 1)[-1].endswith(secret_keys)]
    assert inline == []
    files = {p.rsplit(".", 1)[-1]: v for p, v in leaves if p.endswith("_file")}
    assert files == {
        "slack_api_url_file": "/etc/scout/secrets/slack-api-url",
        "smtp_auth_password_file": "/etc/scout/secrets/smtp-password",
        "credentials_file": "/etc/scout/secrets/webhook-token",
    }


@pytest.fixture
def render_template(tmp_path):
    def render(template: str, data: dict[str, Any], kind: str = "text") -> str:
        data_file = tmp_path / "data.json"
        data_file.write_text(json.dumps(data))
        result = amtool(
            "template",
            "render",
            f"--template.glob={TEMPLATES}",
            f"--template.data={data_file}",
            f"--template.type={kind}",
            f"--template.text={{{{ template {json.dumps(template)} . }}}}",
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    return render


def notification(status: str = "firing") -> dict[str, Any]:
    labels = {
        "alertname": "LinkDown",
        "instance": "sw1",
        "scout_enriched": "true",
        "scout_incident": "inc-7",
        "scout_priority": "P1",
    }
    annotations = {
        "summary": "Link Gi0/1 down",
        "ai_summary": "R&D uplink <lost>",
        "ai_root_cause": 'Optic "Gi0/1" failed',
        "ai_impact": "Site A offline",
        "ai_actions": "1. Swap the optic\n2. Call the carrier",
        "scout_incident_url": "http://127.0.0.1:8782/api/v1/incidents/inc-7",
        "grafana_url": "http://grafana.example/d/x",
    }
    return {
        "receiver": "scout-email",
        "status": status,
        "alerts": [
            {
                "status": status,
                "labels": labels,
                "annotations": annotations,
                "startsAt": "2024-05-01T12:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.example/graph?g0.expr=a&g0.tab=1",
                "fingerprint": "0123456789abcdef",
            }
        ],
        "groupLabels": {"scout_incident": "inc-7"},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "http://127.0.0.1:9093",
    }


def test_email_html_escapes_analysis_text_exactly_once(render_template):
    html = render_template("scout.email.html", notification(), "html")
    assert "R&amp;D uplink &lt;lost&gt;" in html
    assert "Optic &#34;Gi0/1&#34; failed" in html
    assert "&amp;amp;" not in html
    assert "&amp;lt;" not in html
    assert "1. Swap the optic\n2. Call the carrier" in html
    assert '<a href="http://127.0.0.1:8782/api/v1/incidents/inc-7">' in html
    assert 'href="http://prometheus.example/graph?g0.expr=a&amp;g0.tab=1"' in html


def test_slack_and_subject_show_the_analysis(render_template):
    data = notification()
    title = render_template("scout.slack.title", data)
    # Without the sidecar's scout_title (an older sidecar): the priority and summary.
    # Slack's escaping: Slack shows "R&D uplink <lost>"; the email subject is plain text.
    assert title == "P1 · R&amp;D uplink &lt;lost&gt;"
    subject = render_template("scout.email.subject", data)
    assert subject == "[Scout] P1 · R&D uplink <lost>"
    text = render_template("scout.slack.text", data)
    for expected in (
        "*Incident* inc-7 · *Priority* P1 · 1 firing",
        '*Root cause:* Optic "Gi0/1" failed',
        "*Impact:* Site A offline",
        "1. Swap the optic\n2. Call the carrier",
        "• *LinkDown* on sw1: Link Gi0/1 down"
        " <http://prometheus.example/graph?g0.expr=a&amp;g0.tab=1|graph>",
        "<http://127.0.0.1:8782/api/v1/incidents/inc-7|Incident in Scout>",
        "<http://grafana.example/d/x|Grafana>",
    ):
        assert expected in text
    assert render_template("scout.slack.color", data) == "danger"
    # Resolved without the sidecar's word: the copies expired, nothing is over.
    expired = notification("resolved")
    assert render_template("scout.slack.title", expired).startswith("[NOT UPDATED] P1 · ")
    assert render_template("scout.email.subject", expired).startswith("[Scout] [NOT UPDATED] P1 · ")
    assert render_template("scout.slack.color", expired) == "warning"


WORDS = {
    "scout_title": "P1 · Gi0/1 down on sw1 (site R&D <lab>)",
    "scout_timeline": "Started 2026-12-02 23:41:25 CET.",
    "scout_console_url": "https://scout.example.net/console/incidents/inc-7",
}
OVER = {
    "scout_title": "Resolved · P1 · Gi0/1 down on sw1 · lasted 12 min 5 s",
    "scout_timeline": "Started 2026-12-02 23:41:25 CET, resolved 2026-12-02 23:53:30 CET:"
    " lasted 12 min 5 s.",
    "scout_resolution": "Resolved when Gi0/1 down on sw1 cleared at 2026-12-02 23:53:30 CET.",
}


def with_words(status: str, words: dict[str, str]) -> dict[str, Any]:
    data = notification(status)
    data["alerts"][0]["annotations"].update(words)
    return data


def test_the_sidecars_title_times_and_console_link_are_shown(render_template):
    data = with_words("firing", WORDS)
    assert render_template("scout.slack.title", data) == (
        "P1 · Gi0/1 down on sw1 (site R&amp;D &lt;lab&gt;)"
    )
    assert render_template("scout.slack.link", data) == WORDS["scout_console_url"]
    text = render_template("scout.slack.text", data)
    assert text.startswith("Started 2026-12-02 23:41:25 CET.\n*Incident* inc-7 · ")
    assert f"<{WORDS['scout_console_url']}|Incident in Scout>" in text
    assert render_template("scout.email.subject", data) == (
        "[Scout] P1 · Gi0/1 down on sw1 (site R&D <lab>)"
    )
    html = render_template("scout.email.html", data, "html")
    assert (
        '<h2 style="margin: 0 0 8px 0;">P1 · Gi0/1 down on sw1 (site R&amp;D &lt;lab&gt;)</h2>'
        in html
    )
    assert "<p>Started 2026-12-02 23:41:25 CET.</p>" in html
    assert f'<a href="{WORDS["scout_console_url"]}">Incident in Scout</a>' in html
    assert f"Incident in Scout: {WORDS['scout_console_url']}" in render_template(
        "scout.email.text", data
    )


def test_a_resolution_says_how_long_and_what_and_an_expiry_is_no_all_clear(render_template):
    over = with_words("resolved", {**WORDS, **OVER})
    assert render_template("scout.slack.title", over) == OVER["scout_title"]
    text = render_template("scout.slack.text", over)
    assert text.startswith(f"{OVER['scout_timeline']}\n*{OVER['scout_resolution']}*\n")
    assert render_template("scout.email.subject", over) == f"[Scout] {OVER['scout_title']}"
    html = render_template("scout.email.html", over, "html")
    assert f"<p><strong>{OVER['scout_resolution']}</strong></p>" in html
    assert render_template("scout.slack.color", over) == "good"
    assert "(resolved) *LinkDown*" in text
    assert "stopped updating" not in text + html
    # Copies that expired (the sidecar died) resolve with the firing words and
    # read as what they are: not an all-clear, in a warning colour, the raw
    # alerts to follow; no alert of theirs is listed as resolved.
    expired = with_words("resolved", WORDS)
    stale = "Scout stopped updating this incident; it is not known to be resolved."
    assert render_template("scout.slack.title", expired).startswith("[NOT UPDATED] P1 · Gi0/1")
    assert render_template("scout.slack.color", expired) == "warning"
    text = render_template("scout.slack.text", expired)
    assert text.startswith(f"*{stale} Its raw alerts follow, not analysed.*\n")
    assert "• (not updated) *LinkDown* on sw1" in text
    assert "(resolved)" not in text
    assert render_template("scout.email.subject", expired).startswith(
        "[Scout] [NOT UPDATED] P1 · Gi0/1"
    )
    html = render_template("scout.email.html", expired, "html")
    assert stale in html
    assert "(resolved)" not in html
    assert stale in render_template("scout.email.text", expired)
    # A copy the sidecar resolved on its own (its alert cleared, the incident
    # goes on) is listed as resolved in a group that still fires.
    going_on = with_words("firing", WORDS)
    cleared = json.loads(json.dumps(going_on["alerts"][0]))
    cleared["status"] = "resolved"
    cleared["labels"]["instance"] = "sw2"
    cleared["annotations"]["scout_resolved"] = "true"
    going_on["alerts"].append(cleared)
    text = render_template("scout.slack.text", going_on)
    assert "• (resolved) *LinkDown* on sw2" in text
    assert "not updated" not in text.lower()
    assert render_template("scout.slack.color", going_on) == "danger"
    # The incident's real all-clear, its first alert one that cleared earlier
    # (scout_resolved, no scout_resolution): an all-clear, not an expiry.
    all_clear = with_words("resolved", {**WORDS, **OVER})
    earlier = json.loads(json.dumps(all_clear["alerts"][0]))
    del earlier["annotations"]["scout_resolution"]
    earlier["annotations"]["scout_resolved"] = "true"
    earlier["labels"]["instance"] = "sw0"
    all_clear["alerts"].insert(0, earlier)
    assert not render_template("scout.slack.title", all_clear).startswith("[NOT UPDATED]")
    assert render_template("scout.slack.color", all_clear) == "good"
    text = render_template("scout.slack.text", all_clear)
    assert "stopped updating" not in text
    assert "not updated" not in text.lower()
    assert not render_template("scout.email.subject", all_clear).startswith("[Scout] [NOT UPDATED]")


def test_the_subject_stays_one_line_whatever_the_title_holds(render_template):
    data = with_words("firing", {"scout_title": "P1 · a\r\nBcc: victim@example.org\n\nbody"})
    subject = render_template("scout.email.subject", data)
    assert subject == "[Scout] P1 · a Bcc: victim@example.org body"


def _definitions(text: str) -> dict[str, str]:
    """Each definition's body, up to the next definition (comments removed first)."""
    parts = re.split(r'\{\{-? define "([^"]+)" -?\}\}', text)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_word_the_templates_add_is_a_scout_word_as_phrases_lists_it():
    """One place to translate: ai_sidecar/notify/phrases.py (TEMPLATE_WORDS)."""
    template = TEMPLATES.read_text()
    assert template_words() in template, "paste into scout.tmpl:\n" + template_words()
    comments = re.compile(r"\{\{/\*.*?\*/\}\}", re.S)
    bodies = _definitions(comments.sub("", template))
    assert {f"scout.word.{key}" for key in TEMPLATE_WORDS} <= bodies.keys()
    assert "scout.email.html" in bodies
    for name, body in bodies.items():
        if name.startswith("scout.word.") or name == "scout.slack.color":
            continue
        # What is left once actions, HTML tags and entities are gone is printed as is.
        shown = re.sub(r"\{\{.*?\}\}", "", body, flags=re.S)
        shown = re.sub(r"<[^<>]*>|&[a-z]+;", "", shown)
        assert re.findall(r"[A-Za-z]{2,}", shown) == [], name


def test_raw_fallback_says_the_sidecar_did_not_enrich_it(render_template):
    data = notification()
    data["groupLabels"] = {"alertname": "LinkDown", "instance": "sw1"}
    assert render_template("scout.raw.slack.title", data) == (
        "[FIRING:1] LinkDown on sw1 (not analysed by Scout)"
    )
    assert "did not enrich this alert" in render_template("scout.raw.slack.text", data)


def in_french(data: dict[str, Any], how: str = "annotation") -> dict[str, Any]:
    """``data`` as the sidecar posts it with ``language: fr`` (``scout_lang`` annotation),
    or raw alerts labelled ``scout_lang`` at deploy time (``how="label"``)."""
    for alert in data["alerts"]:
        alert["annotations" if how == "annotation" else "labels"]["scout_lang"] = "fr"
    return data


def test_the_templates_words_follow_the_copies_language(render_template):
    data = in_french(notification())
    second = json.loads(json.dumps(data["alerts"][0]))
    second["labels"]["instance"] = "sw2"
    second["annotations"]["scout_resolved"] = "true"
    resolved_ones = [{**json.loads(json.dumps(second)), "status": "resolved"} for _ in range(2)]
    data["alerts"] += resolved_ones
    text = render_template("scout.slack.text", data)
    for expected in (
        "*Incident* inc-7 · *Priorité* P1 · 1 en cours, 2 résolues",
        "*Résumé:* R&amp;D uplink &lt;lost&gt;",
        '*Cause racine:* Optic "Gi0/1" failed',
        "*Impact:* Site A offline",
        "*Actions:*\n1. Swap the optic",
        "*Alertes:*",
        "• *LinkDown* sur sw1: Link Gi0/1 down"
        " <http://prometheus.example/graph?g0.expr=a&amp;g0.tab=1|graphe>",
        "• (résolue) *LinkDown* sur sw2",
        "<http://127.0.0.1:8782/api/v1/incidents/inc-7|Incident dans Scout>",
        "<http://grafana.example/d/x|Grafana>",
    ):
        assert expected in text
    one_resolved = in_french(notification("resolved"))
    assert "0 en cours, 1 résolue" in render_template("scout.email.text", one_resolved)
    assert render_template("scout.slack.title", one_resolved).startswith("[NON MIS À JOUR] P1 · ")
    assert render_template("scout.email.subject", one_resolved).startswith(
        "[Scout] [NON MIS À JOUR] P1 · "
    )
    assert render_template("scout.slack.text", one_resolved).startswith(
        "*Scout a cessé de mettre à jour cet incident ; rien ne dit qu"
    )
    html = render_template("scout.email.html", data, "html")
    for expected in ("<h3>Cause racine</h3>", "<h3>Alertes</h3>", ">Incident dans Scout</a>"):
        assert expected in html


def test_no_english_word_of_the_templates_is_left_in_french(render_template):
    """Every word whose French differs from its English is French in every template."""
    french = translator("fr", "notify")
    english_only = {
        value for value in TEMPLATE_WORDS.values() if french.gettext(value) != value
    } | {"firing", "resolved"}
    data = in_french(notification())
    data["alerts"].append({**json.loads(json.dumps(data["alerts"][0])), "status": "resolved"})
    data["groupLabels"] = {"scout_incident": "inc-7", "alertname": "LinkDown", "instance": "sw1"}
    data["alerts"][0]["annotations"]["ai_graph_url"] = "https://scout.example.net/graph.png"
    shown = "\n".join(
        render_template(name, data, "html" if name == "scout.email.html" else "text")
        for name in (
            "scout.slack.title",
            "scout.slack.text",
            "scout.email.subject",
            "scout.email.html",
            "scout.email.text",
            "scout.raw.slack.title",
            "scout.raw.slack.text",
        )
    )
    for quoted in (*data["alerts"][0]["annotations"].values(), data["alerts"][0]["generatorURL"]):
        shown = shown.replace(quoted.replace("&", "&amp;"), "").replace(quoted, "")
    left = {word for word in english_only if re.search(rf"(?<!\w){re.escape(word)}(?!\w)", shown)}
    assert left == set(), shown


def test_raw_alerts_labelled_scout_lang_at_deploy_time_read_in_french(render_template):
    data = in_french(notification(), how="label")
    data["groupLabels"] = {"alertname": "LinkDown", "instance": "sw1"}
    assert render_template("scout.raw.slack.title", data) == (
        "[EN COURS:1] LinkDown sur sw1 (non analysée par Scout)"
    )
    assert "n\u2019a pas enrichi cette alerte" in render_template("scout.raw.slack.text", data)
    # A language without words in the templates reads as English.
    for alert in data["alerts"]:
        alert["labels"]["scout_lang"] = "xx"
    assert render_template("scout.raw.slack.title", data) == (
        "[FIRING:1] LinkDown on sw1 (not analysed by Scout)"
    )


@pytest.mark.parametrize(
    ("own", "differing"),
    [
        ({"alertname": "LinkDown", "instance": "sw1", "ifName": "Gi0/1"}, {"ifName": "Gi0/2"}),
        # Anomalies on one interface differ only in the signal the model scored.
        (
            {
                "alertname": "AnomalyDetected",
                "instance": "fw-1",
                "ifName": "wan0",
                "signal": "wan_throughput",
            },
            {"signal": "interface_utilisation"},
        ),
    ],
    ids=["interface", "signal"],
)
def test_inhibition_mutes_only_the_enriched_alerts_own_raw_alert(tmp_path, own, differing):
    """Labels listed in `equal` but absent on both sides match; a differing one does not."""
    [(label, other)] = differing.items()
    with shipped_alertmanager(tmp_path) as (_, am):
        sibling = {**own, **differing}
        am.post([postable(own), postable(sibling)])
        am.post(
            [
                postable(
                    {
                        **own,
                        "scout_enriched": "true",
                        "scout_incident": "i",
                        "scout_priority": "P3",
                    }
                )
            ]
        )

        def raw_states() -> dict[str, bool]:
            return {
                a["labels"][label]: bool(a["status"]["inhibitedBy"])
                for a in am.alerts('scout_enriched!="true"')
            }

        wait_for(lambda: raw_states()[own[label]], timeout=10, what="the raw alert inhibited")
        assert raw_states() == {own[label]: True, other: False}


def test_a_silent_shard_mutes_only_the_targetdown_of_its_own_prometheus(tmp_path):
    """A dead shard pages once: ShardSilent mutes the global tier's TargetDown for that
    shard's Prometheus, and nothing of another shard nor its devices' alerts."""
    shard_down = {"alertname": "TargetDown", "job": "scout-shard", "severity": "warning"}
    alerts = {
        "own shard": {**shard_down, "instance": "10.0.0.1:9090", "shard": "0"},
        "other shard": {**shard_down, "instance": "10.0.0.2:9090", "shard": "1"},
        # Raised by a shard that is alive but cannot remote-write: real, kept.
        "device": {
            "alertname": "TargetDown",
            "job": "snmp",
            "instance": "sw1",
            "severity": "warning",
            "shard": "0",
        },
    }
    with shipped_alertmanager(tmp_path) as (_, am):
        am.post([postable(labels) for labels in alerts.values()])
        am.post([postable({"alertname": "ShardSilent", "severity": "critical", "shard": "0"})])

        def muted() -> dict[str, bool]:
            return {
                name: bool(a["status"]["inhibitedBy"])
                for a in am.alerts('alertname="TargetDown"')
                for name, labels in alerts.items()
                if a["labels"] == labels
            }

        wait_for(lambda: muted().get("own shard"), timeout=10, what="the shard's TargetDown muted")
        assert muted() == {"own shard": True, "other shard": False, "device": False}


def test_dropped_datagrams_at_scouts_socket_mute_that_collectors_export_loss(tmp_path):
    """Scout's own socket dropping datagrams makes gaps for every exporter it hears:
    FlowDatagramsDropped mutes that collector's FlowExportLoss, not another's."""
    collector = {"job": "scout-exporter", "instance": "e1:8781", "severity": "warning"}
    loss = {**collector, "alertname": "FlowExportLoss", "version": "v5"}
    alerts = {
        "own": {**loss, "exporter": "192.0.2.1"},
        "other collector": {**loss, "instance": "e2:8781", "exporter": "192.0.2.2"},
    }
    with shipped_alertmanager(tmp_path) as (_, am):
        am.post([postable(labels) for labels in alerts.values()])
        am.post([postable({**collector, "alertname": "FlowDatagramsDropped"})])

        def muted() -> dict[str, bool]:
            return targetdowns_muted(am, alerts, "FlowExportLoss")

        wait_for(lambda: muted().get("own"), timeout=10, what="the export loss muted")
        assert muted() == {"own": True, "other collector": False}


# Every series scraped through an exporter, and the exporter's own, carry
# scout_exporter: the exporter's address (prometheus/prometheus.yml).
THROUGH = {"scout_exporter": "127.0.0.1:8781"}
EXPORTER = {"job": "scout-exporter", "instance": "127.0.0.1:8781", "shard": "0", **THROUGH}
DEVICE_DOWN = {"alertname": "TargetDown", "severity": "warning", "shard": "0"}
DEVICES_DOWN = {
    "snmp device": {**DEVICE_DOWN, **THROUGH, "job": "snmp", "instance": "sw1"},
    "firewall": {**DEVICE_DOWN, **THROUGH, "job": "firewall", "instance": "fw1"},
    "windows server": {**DEVICE_DOWN, **THROUGH, "job": "winrm", "instance": "srv1"},
    "probe": {**DEVICE_DOWN, **THROUGH, "job": "probe_icmp", "instance": "10.0.0.9"},
    # Not scraped through the exporter: real, kept.
    "sidecar": {**DEVICE_DOWN, "job": "scout-sidecar", "instance": "127.0.0.1:8782"},
    # Another shard's device, through its own exporter (up) at the same address.
    "other shard's device": {
        **DEVICE_DOWN,
        **THROUGH,
        "job": "snmp",
        "instance": "sw9",
        "shard": "1",
    },
}
EXPORTER_DOWN = {**EXPORTER, "alertname": "ExporterDown", "severity": "critical", "layer": "device"}


def targetdowns_muted(
    am: Alertmanager, alerts: dict[str, dict[str, str]], alertname: str = "TargetDown"
) -> dict[str, bool]:
    """Whether each of ``alerts`` (raw ``alertname`` alerts, by name) is inhibited now."""
    return {
        name: bool(a["status"]["inhibitedBy"])
        for a in am.alerts(f'alertname="{alertname}"')
        for name, labels in alerts.items()
        if a["labels"] == labels
    }


def muted_once_stored(am: Alertmanager, alerts: dict[str, dict[str, str]]) -> dict[str, bool]:
    """targetdowns_muted() once Alertmanager holds every one of ``alerts``: inhibition
    is worked out as alerts are read, so nothing is pending then."""
    wait_for(
        lambda: len(targetdowns_muted(am, alerts)) == len(alerts),
        timeout=10,
        what="the TargetDowns stored",
    )
    return targetdowns_muted(am, alerts)


def test_a_dead_exporter_mutes_the_targetdown_of_the_devices_scraped_through_it(tmp_path):
    """An exporter that dies pages once, as ExporterDown: not once per device behind
    it, nor again as its own TargetDown; per shard."""
    exporter_down = EXPORTER_DOWN
    alerts = {**DEVICES_DOWN, "exporter": {**DEVICE_DOWN, **EXPORTER}}
    with shipped_alertmanager(tmp_path) as (_, am):
        am.post([postable(labels) for labels in alerts.values()])
        # The sidecar's copy of ExporterDown mutes nothing here (the raw one
        # does), so the muting ends when Prometheus resolves the raw one.
        am.post([postable({**exporter_down, "scout_enriched": "true"})])
        wait_for(
            lambda: len(am.alerts('scout_enriched="true"')) == 1,
            timeout=10,
            what="the copy stored",
        )
        assert not any(targetdowns_muted(am, alerts).values())
        am.post([postable(exporter_down)])
        wait_for(
            lambda: targetdowns_muted(am, alerts).get("snmp device"),
            timeout=10,
            what="devices muted",
        )
        assert targetdowns_muted(am, alerts) == {
            "snmp device": True,
            "firewall": True,
            "windows server": True,
            "probe": True,
            "sidecar": False,
            "other shard's device": False,
            "exporter": True,
        }


def test_an_exporter_whose_metrics_alone_fail_mutes_no_device(tmp_path):
    """The exporter's own TargetDown also fires when only its /metrics scrape fails (a
    slow host collector) while its /snmp, /probe... scrapes work: a device TargetDown
    then is that device's own and must page. Only ExporterDown mutes them."""
    alerts = {**DEVICES_DOWN, "exporter": {**DEVICE_DOWN, **EXPORTER}}
    with shipped_alertmanager(tmp_path) as (_, am):
        am.post([postable(labels) for labels in alerts.values()])
        assert not any(muted_once_stored(am, alerts).values())
        # A second exporter (here: one only collecting a host) found dead mutes
        # nothing of the devices either: ExporterDown never fired for it.
        other = {**DEVICE_DOWN, "job": "scout-exporter", "instance": "web2:8781"}
        am.post([postable(other)])
        wait_for(
            lambda: "other exporter" in targetdowns_muted(am, {**alerts, "other exporter": other}),
            timeout=10,
            what="the second exporter's alert stored",
        )
        assert not any(targetdowns_muted(am, alerts).values())


def test_of_two_exporters_a_dead_one_mutes_its_own_devices_only(tmp_path):
    """Two exporters under one Prometheus (one per site): A's ExporterDown mutes the
    TargetDowns of the devices scraped through A and A's own, while a device down
    behind B, B itself, and a device of a job that does not name its exporter
    still page."""
    site_a = {"scout_exporter": "10.1.0.5:8781"}
    site_b = {"scout_exporter": "10.2.0.5:8781"}
    a_down = {**EXPORTER_DOWN, **site_a, "instance": "10.1.0.5:8781"}
    alerts = {
        "A's switch": {**DEVICE_DOWN, **site_a, "job": "snmp", "instance": "sw-a1"},
        "A's probe": {**DEVICE_DOWN, **site_a, "job": "probe_icmp", "instance": "10.1.0.1"},
        "A itself": {**DEVICE_DOWN, **EXPORTER, **site_a, "instance": "10.1.0.5:8781"},
        "B's switch": {**DEVICE_DOWN, **site_b, "job": "snmp", "instance": "sw-b1"},
        "B itself": {**DEVICE_DOWN, **EXPORTER, **site_b, "instance": "10.2.0.5:8781"},
        # A job of the user's own, through some exporter, without the label.
        "unlabelled": {**DEVICE_DOWN, "job": "snmp", "instance": "sw-x1"},
    }
    with shipped_alertmanager(tmp_path) as (sink, am):
        am.post([postable(a_down)])
        wait_for(lambda: am.alerts('alertname="ExporterDown"'), timeout=10, what="A stored")
        am.post([postable(labels) for labels in alerts.values()])
        assert muted_once_stored(am, alerts) == {
            "A's switch": True,
            "A's probe": True,
            "A itself": True,
            "B's switch": False,
            "B itself": False,
            "unlabelled": False,
        }
        # B's device reaches people: the raw alert, past the fail-open delay.
        page = sink.wait_for(
            lambda body: "attachments" in body and "sw-b1" in slack_text(body), timeout=30
        )
        assert "TargetDown" in slack_text(page)


def test_an_exporter_down_naming_no_exporter_mutes_no_device(tmp_path):
    """Rules newer than the scrape config (a prometheus.yml from before scout_exporter):
    ExporterDown then has no label to say whose devices are whose, and Alertmanager
    would take the label, absent on both sides, as equal. Such devices page rather
    than all being muted by any exporter's death."""

    def unlabelled(labels: dict[str, str]) -> dict[str, str]:
        return {name: value for name, value in labels.items() if name not in THROUGH}

    alerts = {
        name: unlabelled(labels)
        for name, labels in {**DEVICES_DOWN, "exporter": {**DEVICE_DOWN, **EXPORTER}}.items()
    }
    exporter_down = unlabelled(EXPORTER_DOWN)
    with shipped_alertmanager(tmp_path) as (_, am):
        am.post([postable(exporter_down)])
        am.post([postable(labels) for labels in alerts.values()])
        # The exporter's own TargetDown is muted by its instance, as before.
        wait_for(
            lambda: targetdowns_muted(am, alerts).get("exporter"),
            timeout=10,
            what="the exporter's TargetDown muted",
        )
        # Every device's TargetDown stored: none left out of the check below.
        muted = muted_once_stored(am, alerts)
        assert muted.keys() == alerts.keys()
        assert muted.pop("exporter")
        assert not any(muted.values()), muted


@pytest.mark.parametrize("priority", ["P1", "P3"])
def test_an_incidents_anomaly_copy_joins_its_one_slack_group(tmp_path, priority):
    """One Slack notification per incident, anomaly or not; only the others by email."""
    copy = {"scout_enriched": "true", "scout_incident": "inc-1", "scout_priority": priority}
    down = {"alertname": "InterfaceDown", "instance": "sw1", "ifName": "Gi0/1", **copy}
    anomaly = {**down, "alertname": "AnomalyDetected", "signal": "interface_in_bits"}
    with shipped_alertmanager(tmp_path) as (_, am):
        am.post([postable(down), postable(anomaly)])

        def grouped(receiver: str) -> list[list[str]]:
            return [
                sorted(a["labels"]["alertname"] for a in group["alerts"])
                for group in am.groups()
                if group["receiver"]["name"] == receiver
                and group["labels"].get("scout_incident") == "inc-1"
            ]

        wait_for(
            lambda: sum(map(len, grouped("scout-slack"))) == 2,
            timeout=10,
            what="both copies grouped for Slack",
        )
        assert grouped("scout-slack") == [["AnomalyDetected", "InterfaceDown"]]
        assert grouped("scout-email") == ([["InterfaceDown"]] if priority == "P1" else [])


# Text anyone who can set a label, an annotation or a switch port's ifAlias controls.
HOSTILE = (
    "<!channel> <!here> <@U123> <https://evil.example|click> <javascript:alert(1)>"
    " \u202egnp.exe\u202c \u2066x\u2069 \u200e\u200f\u061c & done"
)
# What may never reach Slack: sequences Slack obeys, and invisible direction changes.
OBEYED = ("<!channel>", "<!here>", "<@U123>", "<https://evil", "|click>", "<javascript:")
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"


def assert_inert(text: str) -> None:
    for sequence in OBEYED:
        assert sequence not in text
    assert not set(BIDI) & set(text), [hex(ord(c)) for c in set(BIDI) & set(text)]
    # Shown to people as the text it was.
    assert "&lt;!channel&gt; &lt;!here&gt; &lt;@U123&gt;" in text
    assert "&lt;https://evil.example|click&gt; &lt;javascript:alert(1)&gt;" in text
    assert "gnp.exe" in text
    assert "&amp; done" in text


def hostile_notification(receiver: str, count: int = 1) -> dict[str, Any]:
    data = notification()
    data["receiver"] = receiver
    alert = data["alerts"][0]
    alert["labels"].update(alertname=HOSTILE, instance=HOSTILE, severity=HOSTILE)
    alert["annotations"].update(
        summary=HOSTILE,
        description=HOSTILE,
        ai_summary=HOSTILE,
        ai_root_cause=HOSTILE,
        ai_impact=HOSTILE,
        ai_actions=HOSTILE,
    )
    data["groupLabels"] = {
        "alertname": HOSTILE,
        "instance": HOSTILE,
        "scout_incident": HOSTILE,
    }
    data["alerts"] = [
        {**alert, "fingerprint": f"{n:016x}", "labels": {**alert["labels"], "n": str(n)}}
        for n in range(count)
    ]
    return data


@pytest.mark.parametrize(
    "template",
    ["scout.slack.title", "scout.slack.text", "scout.raw.slack.title", "scout.raw.slack.text"],
)
def test_slack_templates_show_hostile_text_without_obeying_it(render_template, template):
    assert_inert(render_template(template, hostile_notification("scout-slack")))


def test_email_still_escapes_hostile_text_as_html_once(render_template):
    html = render_template("scout.email.html", hostile_notification("scout-email"), "html")
    assert "&lt;!channel&gt;" in html
    assert "&amp;lt;" not in html
    assert "<!channel>" not in html


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "http://x.example/a|click here",
        "http://x.example/a> <!channel",
        "http://x.example/a b",
        "data:text/html,<script>",
        "ftp://x.example/file",
    ],
)
def test_slack_links_only_http_urls_and_shows_the_rest_as_text(render_template, url):
    data = notification()
    alert = data["alerts"][0]
    alert["generatorURL"] = url
    alert["annotations"].update(scout_incident_url=url, grafana_url=url)
    for template in ("scout.slack.text", "scout.raw.slack.text"):
        text = render_template(template, data)
        for label in ("|graph>", "|Incident in Scout>", "|Grafana>"):
            assert label not in text
        assert "<!channel" not in text
        assert "(graph: " in text
    # The title's link is a URL field: Alertmanager's own URL instead.
    assert render_template("scout.slack.link", data) == "http://127.0.0.1:9093"


def test_slack_links_keep_http_urls_with_slack_escaping(render_template):
    data = notification()
    data["alerts"][0]["generatorURL"] = "HTTPS://prometheus.example/graph?g0.expr=up%3E0&x=1"
    text = render_template("scout.raw.slack.text", data)
    assert " <HTTPS://prometheus.example/graph?g0.expr=up%3E0&amp;x=1|graph>" in text
    assert render_template("scout.slack.link", data) == (
        "http://127.0.0.1:8782/api/v1/incidents/inc-7"
    )


def test_huge_description_is_capped_in_lines_and_characters(render_template):
    """A description of 111 KB on 5,005 lines was posted whole by the raw template."""
    huge = "\n".join(f"line {n} " + "x" * 16 for n in range(5005))
    assert len(huge) > 110_000
    data = hostile_notification("people-raw", count=30)
    for alert in data["alerts"]:
        alert["annotations"]["description"] = huge
        alert["annotations"]["summary"] = "s" * 5000
        alert["labels"]["instance"] = "i" * 5000
    text = render_template("scout.raw.slack.text", data)
    assert len(text) < 20_000
    assert text.count("\n") < 80
    assert text.count("• ") == 10
    assert "… and more" in text
    assert "line 4 " in text
    assert "line 5 " not in text
    assert "s" * 298 + "…" in text
    assert "s" * 300 not in text
    enriched = render_template("scout.slack.text", data)
    assert len(enriched) < 20_000
    assert enriched.count("• ") == 20


def test_analysis_keeps_ten_lines_and_two_thousand_characters(render_template):
    data = notification()
    data["alerts"][0]["annotations"]["ai_actions"] = "\n".join(
        f"{n}. " + "a" * 150 for n in range(1, 13)
    )
    text = render_template("scout.slack.text", data)
    assert "10. " in text
    assert "11. " not in text
    data["alerts"][0]["annotations"]["ai_root_cause"] = "r" * 5000
    text = render_template("scout.slack.text", data)
    assert "r" * 1999 + "…" in text
    assert "r" * 2000 not in text


def test_hostile_raw_alert_reaches_a_slack_sink_inert(tmp_path):
    """Through a real Alertmanager's fail-open route to a Slack-compatible sink."""
    with shipped_alertmanager(tmp_path) as (sink, am):
        am.post(
            [
                postable(
                    {"alertname": "LinkDown", "instance": HOSTILE, "ifAlias": HOSTILE},
                    {"summary": HOSTILE, "description": HOSTILE + "\n" * 5005 + "tail"},
                    generator_url="javascript:alert(1)",
                )
            ]
        )
        message = sink.wait_for(lambda m: "not analysed" in slack_text(m))
    text = slack_text(message)
    assert_inert(text)
    assert "tail" not in text
    assert "(graph: javascript:alert(1))" in text
    assert len(json.dumps(message)) < 5000


def test_the_fail_open_delay_counts_from_startsat_not_from_arrival(tmp_path):
    """What README, "What the 2 minutes count from", says: Alertmanager flushes a new
    group at once when its first alert started longer than group_wait ago. With a
    fail-open delay of an hour, an alert that started two hours ago (re-sent by
    Prometheus to a restarted peer) still reaches people raw right away. If a release
    of Alertmanager counts from the arrival instead, this fails: update the docs."""
    with SlackSink() as sink:
        config = render_config(
            tmp_path,
            sidecar_url=sink.base_url,
            slack_url=sink.url,
            smtp_smarthost="127.0.0.1:9",
            timings=Timings(fail_open="1h"),
        )
        with Alertmanager(tmp_path, config) as am:
            started = datetime.now(UTC) - timedelta(hours=2)
            am.post([postable({"alertname": "LinkDown", "instance": "sw9"}, starts_at=started)])
            message = sink.wait_for(lambda m: "not analysed" in slack_text(m))
    assert message["attachments"][0]["title"] == (
        "[FIRING:1] LinkDown on sw9 (not analysed by Scout)"
    )


GRAPH_URL = "http://scout.example:8782/graphs/inc-7.png?expires=1999999999&sig=ab12"


def test_slack_shows_the_graph_as_the_attachments_image(render_template):
    data = notification()
    data["alerts"][0]["annotations"]["ai_graph_url"] = GRAPH_URL
    assert render_template("scout.slack.image", data) == GRAPH_URL
    text = render_template("scout.slack.text", data)
    assert f"<{GRAPH_URL.replace('&', '&amp;')}|Graph>" in text
    # Without a graph: no image and no link.
    assert render_template("scout.slack.image", notification()) == ""
    assert "|Graph>" not in render_template("scout.slack.text", notification())


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "http://x.example/a|click", "http://x.example/a b"]
)
def test_an_unsafe_graph_url_is_left_out(render_template, url):
    data = notification()
    data["alerts"][0]["annotations"]["ai_graph_url"] = url
    assert render_template("scout.slack.image", data) == ""
    assert "|Graph>" not in render_template("scout.slack.text", data)
    assert "<img" not in render_template("scout.email.html", data, "html")


def test_email_shows_the_graph_and_links_it(render_template):
    data = notification()
    data["alerts"][0]["annotations"]["ai_graph_url"] = GRAPH_URL
    html = render_template("scout.email.html", data, "html")
    escaped = GRAPH_URL.replace("&", "&amp;")
    assert f'<img src="{escaped}"' in html
    assert f'<a href="{escaped}" style="font-size: 12px;">Open the graph</a>' in html
    assert f"Graph: {GRAPH_URL}" in render_template("scout.email.text", data)


NOTE = "local analysis: gemini not asked (budget: 200 requests per day reached)"


def test_the_fallback_reason_is_shown_in_small_print(render_template):
    data = notification()
    data["alerts"][0]["annotations"]["ai_analyst_note"] = NOTE
    assert f"_{NOTE}_\n*Alerts:*" in render_template("scout.slack.text", data)
    html = render_template("scout.email.html", data, "html")
    assert f'<p style="color: #777; font-size: 12px;">{NOTE}</p>' in html
    assert f"({NOTE})" in render_template("scout.email.text", data)
    # Nothing when the preferred analyst spoke.
    assert "_\n*Alerts:*" not in render_template("scout.slack.text", notification())
    assert "#777" not in render_template("scout.email.html", notification(), "html")


PLAIN_MENTIONS = "@channel @HERE x @everyone ops@here.example @@here (@@@channel)"


@pytest.mark.parametrize(
    "template",
    ["scout.slack.title", "scout.slack.text", "scout.raw.slack.title", "scout.raw.slack.text"],
)
def test_slack_drops_the_at_of_plain_mentions(render_template, template):
    data = hostile_notification("scout-slack")
    alert = data["alerts"][0]
    for name in ("alertname", "instance"):
        alert["labels"][name] = PLAIN_MENTIONS
        data["groupLabels"][name] = PLAIN_MENTIONS
    for name in ("summary", "description", "ai_summary", "ai_root_cause", "ai_analyst_note"):
        alert["annotations"][name] = PLAIN_MENTIONS
    text = render_template(template, data)
    assert "channel HERE x everyone ops@here.example here (channel)" in text
    for mention in ("@channel", "@HERE", "@everyone", " @here", "@@"):
        assert mention not in text


HOSTILE_LABEL = "<!channel> <@U123> <!subteam^S1|devs> <https://evil|click> @here <b>x</b>"


def test_hostile_labels_reach_the_slack_and_email_sinks_neutralised(tmp_path):
    """An enriched copy whose label values are hostile, through a real Alertmanager."""
    with SlackSink() as slack, SmtpSink() as smtp:
        config = render_config(
            tmp_path, sidecar_url=slack.base_url, slack_url=slack.url, smtp_smarthost=smtp.smarthost
        )
        with Alertmanager(tmp_path, config) as am:
            labels = {
                "alertname": "LinkDown",
                "instance": HOSTILE_LABEL,
                "scout_enriched": "true",
                "scout_incident": "inc-9",
                "scout_priority": "P1",
            }
            am.post(
                [
                    postable(
                        labels,
                        {
                            "summary": HOSTILE_LABEL,
                            "ai_summary": "Uplink lost",
                            "ai_graph_url": GRAPH_URL,
                            "ai_analyst_note": NOTE,
                        },
                    )
                ]
            )
            message = slack.wait_for(lambda m: "Uplink lost" in slack_text(m))
            mail = smtp.wait_for(lambda m: "Uplink lost" in str(m["Subject"]))
    text = slack_text(message)
    for obeyed in ("<!channel>", "<@U123>", "<!subteam", "<https://evil", "@here", "<b>"):
        assert obeyed not in text
    assert "&lt;!channel&gt; &lt;@U123&gt; &lt;!subteam^S1|devs&gt;" in text
    assert message["attachments"][0]["image_url"] == GRAPH_URL
    assert NOTE in text
    html = email_body(mail, "html")
    assert "&lt;!channel&gt; &lt;@U123&gt;" in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html
    assert "<b>x</b>" not in html
    assert f'<img src="{GRAPH_URL.replace("&", "&amp;")}"' in html


@pytest.mark.parametrize(
    ("template", "kind"), [("scout.email.html", "html"), ("scout.email.text", "text")]
)
def test_email_caps_label_values_and_alerts_and_drops_direction_changes(
    render_template, template, kind
):
    # The analysis is the sidecar's, sanitised there; labels and copied
    # annotations are the rules' own.
    data = notification()
    [alert] = data["alerts"]
    data["alerts"] = [
        {
            **alert,
            "fingerprint": f"{n:016x}",
            "labels": {
                **alert["labels"],
                "alertname": HOSTILE,
                "instance": "i" * 5000 + "\n<b>tail</b>",
                "n": str(n),
            },
            "annotations": {**alert["annotations"], "summary": HOSTILE},
        }
        for n in range(30)
    ]
    body = render_template(template, data, kind)
    assert "i" * 298 + "…" in body
    assert "i" * 300 not in body
    assert "tail" not in body
    assert not set(BIDI) & set(body)
    assert body.count(" on iii") == 20
    assert "… and more: see the incident." in body
    assert len(body) < 40_000

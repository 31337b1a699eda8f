"""The enriched copy: an analysed incident's member alert as it is posted to Alertmanager.

Labels are the raw alert's own plus ``scout_enriched="true"``,
``scout_incident`` and ``scout_priority``; annotations are the raw alert's
(sanitised) plus the analysis as ``ai_*``, the language it is written in
(``scout_lang``, set only for a language other than English: the
Alertmanager templates pick their words by it), the title, times and resolution
people read first (``scout_title``, ``scout_timeline``, ``scout_resolution``:
:mod:`ai_sidecar.notify.wording`) and links: ``scout_console_url``, the
incident's page in the console, ``scout_incident_url``, its JSON in the API,
and Prometheus, Grafana and the graph. ``endsAt`` keeps a firing
copy alive for ``keepalive`` from each post, or says when it resolved; a
resolved copy also carries ``scout_resolved="true"``, so the templates tell
the sidecar's resolution from an expiry (the sidecar stopped refreshing). The
copy's fingerprint is the one Alertmanager computes, which keys the outbox.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from ai_sidecar.i18n import SOURCE_LANGUAGE, Translator, translator
from ai_sidecar.models import (
    ENRICHED_LABEL,
    INCIDENT_LABEL,
    PRIORITY_LABEL,
    Incident,
    Member,
    format_time,
    notified_priority,
    parse_time,
)
from ai_sidecar.notify.policy import ReturnTripPolicy
from ai_sidecar.notify.signing import GraphLinks
from ai_sidecar.notify.wording import Wording
from ai_sidecar.sanitize import CAPS, clean, format_actions, safe_link, sanitize_analysis
from ai_sidecar.store import OutboxCopy, OutboxRow

GRAPH_ANNOTATION = "ai_graph_url"
# Set only on a copy the sidecar resolves (its alert cleared, or the incident
# ended): a copy that merely expired (the sidecar stopped refreshing it) lacks
# it, and the templates do not show it as resolved (scout.tmpl, scout.stale).
RESOLVED_ANNOTATION = "scout_resolved"
# The language of the copy's text, for the templates' words (scout.tmpl).
LANGUAGE_ANNOTATION = "scout_lang"
# The console's page of an incident, under the sidecar's external URL.
CONSOLE_INCIDENT_PATH = "/console/incidents/"


def fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's fingerprint of a label set: FNV-1a (64 bit) over the
    sorted names and values, each followed by the byte 0xff, in hex.

    Empty values are left out: Alertmanager drops such labels when it takes an
    alert, as Prometheus treats them as absent.
    """
    value = 0xCBF29CE484222325
    for name in sorted(name for name, label in labels.items() if label):
        for part in (name, labels[name]):
            for byte in part.encode():
                value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
            value = ((value ^ 0xFF) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{value:016x}"


def _sidecar_url(policy: ReturnTripPolicy, path: str, incident_id: str) -> str | None:
    if not policy.external_url:
        return None
    return f"{str(policy.external_url).rstrip('/')}{path}{quote(incident_id, safe='')}"


def incident_url(policy: ReturnTripPolicy, incident_id: str) -> str | None:
    """The incident's JSON in the API (behind the bearer token)."""
    return _sidecar_url(policy, "/api/v1/incidents/", incident_id)


def console_url(policy: ReturnTripPolicy, incident_id: str) -> str | None:
    """The incident's page in the console, for people: what notifications link."""
    return _sidecar_url(policy, CONSOLE_INCIDENT_PATH, incident_id)


def _is_firing(incident: Incident, member: Member) -> bool:
    return incident.status == "open" and member.status == "firing"


def _resolution_time(incident: Incident, member: Member, now: datetime) -> datetime:
    """When the copy stopped firing: never in the future (Alertmanager would
    keep it firing until then), never before it started."""
    if member.status == "resolved" and member.ends_at is not None:
        ended = member.ends_at
    elif incident.resolved_at is not None:
        ended = incident.resolved_at
    else:
        ended = now
    return max(min(ended, now), member.starts_at)


def analyst_note(incident: Incident, t: Translator | None = None) -> str:
    """Why a preferred analyst did not speak, in a few words; "" when none was skipped.

    ``local analysis: gemini not asked (budget: 200 requests per day reached)``;
    the analysts' names, the reason's code and its detail are not translated.
    """
    if not incident.skipped_analysts:
        return ""
    _ = (t or translator(SOURCE_LANGUAGE, "notify")).gettext
    reasons = []
    for skipped in incident.skipped_analysts:
        if skipped.reason == "pending":
            reasons.append(_("{analyst}'s answer follows").format(analyst=skipped.analyst))
            continue
        if skipped.reason == "declined":
            reason = _("{analyst} not asked").format(analyst=skipped.analyst)
        else:
            reason = _("{analyst} failed ({reason})").format(
                analyst=skipped.analyst, reason=skipped.reason
            )
        reasons.append(reason + (f" ({skipped.detail})" if skipped.detail else ""))
    return _("{analyst} analysis: {reasons}").format(
        analyst=incident.analyst or "local", reasons="; ".join(reasons)
    )


def analysis_annotations(incident: Incident, language: str = SOURCE_LANGUAGE) -> dict[str, str]:
    """The ``ai_*`` annotations of an incident, sanitised; the same on every member.

    ``ai_analyst`` names who spoke; ``ai_analyst_note``, present only when a
    preferred analyst (an LLM) declined or failed, says why the next one did.
    """
    if incident.analysis is None:
        return {}
    analysis = sanitize_analysis(incident.analysis)
    annotations = {
        "ai_summary": analysis.summary,
        "ai_root_cause": analysis.root_cause,
        "ai_impact": analysis.impact,
        "ai_actions": format_actions(analysis.actions),
    }
    if incident.analyst:
        annotations["ai_analyst"] = clean(incident.analyst, CAPS.summary)
    note = analyst_note(incident, translator(language, "notify"))
    if note:
        # One line: it is small print under the analysis.
        annotations["ai_analyst_note"] = clean(" ".join(note.split()), CAPS.annotation)
    return annotations


def incident_annotations(incident: Incident, policy: ReturnTripPolicy) -> dict[str, str]:
    """What every copy of ``incident`` carries alike: the analysis, the wording
    and, in a language other than English, that language (``scout_lang``)."""
    wording = Wording(policy.zone, policy.language)
    shared = {
        **analysis_annotations(incident, policy.language),
        **wording.annotations(incident),
    }
    if policy.language != SOURCE_LANGUAGE:
        shared[LANGUAGE_ANNOTATION] = policy.language
    return shared


def graph_url(policy: ReturnTripPolicy, incident_id: str, now: datetime) -> str | None:
    """The signed URL of the incident's graph, valid ``graphs.url_ttl`` from ``now``."""
    if policy.graph_links is None:
        return None
    return policy.graph_links.url(incident_id, now)


def enriched_alert(
    incident: Incident,
    member: Member,
    policy: ReturnTripPolicy,
    now: datetime,
    shared: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The postable Alertmanager v2 alert for one member of an analysed incident.

    Labels are the member's own plus the three ``scout_*`` labels. Annotations
    are the member's own (sanitised: they may quote device text) plus the
    incident's (``shared``, from :func:`incident_annotations`: the sanitised
    analysis and wording) and links. A generator URL that is no safe http(s)
    link is left out. ``endsAt`` is ``now`` + keepalive while the
    member fires, else its resolution time.
    """
    labels = {
        **{name: value for name, value in member.labels.items() if value},
        ENRICHED_LABEL: "true",
        INCIDENT_LABEL: incident.id,
        PRIORITY_LABEL: notified_priority(incident),
    }
    annotations = {
        name: clean(value, CAPS.annotation, CAPS.annotation_lines)
        for name, value in member.annotations.items()
    }
    # Passed in when building every member of one incident: sanitised once.
    annotations.update(incident_annotations(incident, policy) if shared is None else shared)
    # Whoever writes the rule writes the generator URL: a javascript: or
    # relabelling one must not become a link in Slack or email.
    generator_url = safe_link(member.generator_url)
    links = {
        "scout_console_url": console_url(policy, incident.id),
        "scout_incident_url": incident_url(policy, incident.id),
        "prometheus_url": generator_url or policy.prometheus_url,
        "grafana_url": policy.grafana_url,
        GRAPH_ANNOTATION: graph_url(policy, incident.id, now),
    }
    annotations.update({name: str(url) for name, url in links.items() if url})
    if _is_firing(incident, member):
        ends_at = now + policy.keepalive
    else:
        ends_at = _resolution_time(incident, member, now)
        annotations[RESOLVED_ANNOTATION] = "true"
    alert: dict[str, Any] = {
        "labels": labels,
        "annotations": annotations,
        "startsAt": format_time(member.starts_at),
        "endsAt": format_time(ends_at),
    }
    # Alertmanager checks generatorURL as a URI; an empty one is better left out.
    if generator_url:
        alert["generatorURL"] = generator_url
    return alert


def _raw_json(member: Member) -> str:
    return json.dumps(
        {
            "labels": dict(member.labels),
            "annotations": dict(member.annotations),
            "startsAt": format_time(member.starts_at),
            "generatorURL": member.generator_url,
        },
        sort_keys=True,
    )


def postable(
    row: OutboxRow, now: datetime, keepalive: timedelta, links: GraphLinks | None = None
) -> dict[str, Any]:
    """The alert to post for ``row`` now: its stored JSON with endsAt set.

    A firing copy starts now, not at the raw alert's ``startsAt``: Alertmanager
    flushes a new group at once, skipping ``group_wait``, when its first alert
    started longer than ``group_wait`` ago, which would send an escalated
    incident's copies in several notifications as they trickle in. It keeps the
    earliest ``startsAt`` of an alert it already holds, so later posts move
    nothing; the raw alert's own start stays on the raw alert and the incident.

    The graph URL is signed again (``links``): a copy kept alive longer than
    ``graphs.url_ttl`` must not notify with an expired one on a repeat. Only
    labels identify an alert to Alertmanager, so a new URL is the same alert
    with fresh annotations, never a new notification.
    """
    alert: dict[str, Any] = json.loads(row.alert)
    annotations = alert.get("annotations")
    if links is not None and isinstance(annotations, dict) and GRAPH_ANNOTATION in annotations:
        annotations[GRAPH_ANNOTATION] = links.url(row.incident_id, now)
    if row.state == "firing":
        alert["startsAt"] = format_time(now)
        ends = now + keepalive
    else:
        ends = datetime.fromtimestamp(row.ends_at or now.timestamp(), UTC)
        # Every resolution the sidecar posts is its own word, whatever text the
        # row kept: a copy resolved under an old label set (an escalation, an
        # incident absorbed by a merge) keeps its firing annotations, and one
        # stored by an older release has no mark. Only copies that expire in
        # Alertmanager, never posted resolved, go without it ("not updated").
        if isinstance(annotations, dict):
            annotations[RESOLVED_ANNOTATION] = "true"
    # Alertmanager refuses an alert that ends before it starts (a clock
    # skewed between Prometheus and the sidecar could cause that).
    alert["endsAt"] = format_time(max(ends, parse_time(alert["startsAt"])))
    return alert


def outbox_copies(
    incident: Incident, policy: ReturnTripPolicy, now: datetime
) -> tuple[OutboxCopy, ...]:
    """What each member's copy of ``incident`` should be now, for the outbox."""
    result = []
    shared = incident_annotations(incident, policy)
    for member in incident.members.values():
        alert = enriched_alert(incident, member, policy, now, shared)
        firing = _is_firing(incident, member)
        del alert["endsAt"]  # set at each post
        result.append(
            OutboxCopy(
                fingerprint=fingerprint(alert["labels"]),
                incident_id=incident.id,
                member=member.fingerprint,
                state="firing" if firing else "resolved",
                alert=json.dumps(alert, sort_keys=True),
                raw=_raw_json(member),
                ends_at=None if firing else _resolution_time(incident, member, now).timestamp(),
            )
        )
    return tuple(result)

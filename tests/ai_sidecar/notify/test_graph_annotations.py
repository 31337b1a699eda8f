"""The graph link and the analyst's note on enriched copies, up to a real Alertmanager."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

from ai_sidecar.models import Incident, Member, SkippedAnalyst
from ai_sidecar.notify import enriched_alert, outbox_copies
from ai_sidecar.notify import postable as render_postable
from ai_sidecar.notify.signing import GraphLinks, GraphSigner
from ai_sidecar.store import OutboxRow
from tests.ai_sidecar.builders import analysed_incident, peer_member
from tests.ai_sidecar.notify.harness import POLICY, Trip, enriched_in
from tests.peers.notify import slack_text

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
SIGNER = GraphSigner(b"g" * 32, timedelta(days=7))
LINKS = GraphLinks("https://scout.example:8782", SIGNER)
GRAPHED = replace(POLICY, graph_links=LINKS)


def signed_for(url: str, incident_id: str, at: datetime) -> bool:
    parts = urlsplit(url)
    assert parts.path == f"/graphs/{incident_id}.png"
    query = parse_qs(parts.query)
    return SIGNER.valid(incident_id, query["expires"][0], query["sig"][0], at)


def test_every_copy_links_the_incidents_signed_graph():
    a, b = peer_member("LinkDown"), peer_member("ProbeFailed", "web1")
    incident = analysed_incident(a, b)
    copies = outbox_copies(incident, GRAPHED, NOW)
    urls = {json.loads(c.alert)["annotations"]["ai_graph_url"] for c in copies}
    [url] = urls  # one graph per incident, on every member's copy
    assert url.startswith("https://scout.example:8782/graphs/inc-1.png?expires=")
    assert signed_for(url, "inc-1", NOW + timedelta(days=6))
    assert not signed_for(url, "inc-1", NOW + timedelta(days=8))


def test_no_graph_link_without_links():
    m = peer_member("LinkDown")
    assert "ai_graph_url" not in enriched_alert(analysed_incident(m), m, POLICY, NOW)["annotations"]


def test_a_repost_signs_the_graph_again_so_it_outlives_the_first_ttl():
    m = peer_member("LinkDown")
    [copy] = outbox_copies(analysed_incident(m), GRAPHED, NOW)
    row = OutboxRow(
        peer="http://am",
        fingerprint=copy.fingerprint,
        incident_id=copy.incident_id,
        member=copy.member,
        state="firing",
        alert=copy.alert,
        raw=copy.raw,
        ends_at=None,
        resolved_until=None,
        due_at=0.0,
        posted_at=None,
        revision=1,
    )
    later = NOW + timedelta(days=10)
    reposted = render_postable(row, later, timedelta(minutes=5), LINKS)
    assert signed_for(reposted["annotations"]["ai_graph_url"], "inc-1", later + timedelta(days=6))
    # Without links (graphs switched off since) the stored URL is left as it was.
    kept = render_postable(row, later, timedelta(minutes=5))
    assert (
        kept["annotations"]["ai_graph_url"] == json.loads(copy.alert)["annotations"]["ai_graph_url"]
    )
    # A copy without a graph gets none added.
    bare = replace(
        row, alert=json.dumps({"labels": {}, "annotations": {}, "startsAt": "2026-12-03T11:00:00Z"})
    )
    assert render_postable(bare, later, timedelta(minutes=5), LINKS)["annotations"] == {}


def spoken_by_local(m: Member, *skipped: SkippedAnalyst) -> Incident:
    """An incident of ``m`` the local analyst explained after ``skipped`` did not."""
    return replace(analysed_incident(m), analyst="local", skipped_analysts=skipped)


def test_the_note_says_why_the_local_analysis_speaks():
    m = peer_member("LinkDown")
    incident = spoken_by_local(
        m, SkippedAnalyst("gemini", "declined", "budget: 200 requests per day reached")
    )
    annotations = enriched_alert(incident, m, POLICY, NOW)["annotations"]
    assert annotations["ai_analyst"] == "local"
    assert annotations["ai_analyst_note"] == (
        "local analysis: gemini not asked (budget: 200 requests per day reached)"
    )
    failed = replace(
        incident, skipped_analysts=(SkippedAnalyst("claude", "timeout", "no answer in 20s"),)
    )
    assert enriched_alert(failed, m, POLICY, NOW)["annotations"]["ai_analyst_note"] == (
        "local analysis: claude failed (timeout) (no answer in 20s)"
    )


def test_no_note_when_the_preferred_analyst_spoke():
    m = peer_member("LinkDown")
    incident = replace(analysed_incident(m), analyst="gemini")
    annotations = enriched_alert(incident, m, POLICY, NOW)["annotations"]
    assert annotations["ai_analyst"] == "gemini"
    assert "ai_analyst_note" not in annotations


def test_a_hostile_detail_in_the_note_is_sanitised():
    m = peer_member("LinkDown")
    hostile = "<!channel> @here\n<https://evil|x>" + "y" * 5000
    incident = spoken_by_local(m, SkippedAnalyst("gemini", "error", hostile))
    note = enriched_alert(incident, m, POLICY, NOW)["annotations"]["ai_analyst_note"]
    assert "<" not in note
    assert "@here" not in note
    assert "\n" not in note
    assert "x (https://evil)" in note
    assert len(note) <= 1000


async def test_a_renewed_graph_url_is_the_same_alert_and_no_new_notification(
    alertmanager, hook, db, session
):
    """Only labels identify an alert: a re-signed URL updates the copy Alertmanager
    holds, and its Slack message is not sent again."""
    a = peer_member("LinkDown")
    trip = Trip(db, [alertmanager.url], session, policy=GRAPHED)
    await trip.trip.schedule([analysed_incident(a, priority="P3")])
    await trip.trip.run_once()
    [first] = (await asyncio.to_thread(enriched_in, alertmanager)).values()
    first_url = first["annotations"]["ai_graph_url"]
    assert signed_for(first_url, "inc-1", trip.clock.now)

    def notified() -> list[str]:
        return [
            slack_text(r.body)
            for r in hook.requests()
            if r.path.startswith("/services/") and slack_text(r.body).startswith("\nP3 · ")
        ]

    await asyncio.to_thread(hook.wait_for, lambda m: slack_text(m).startswith("\nP3 · "), 15)
    assert len(notified()) == 1
    message = next(r.body for r in hook.requests() if r.path.startswith("/services/"))
    assert message["attachments"][0]["image_url"] == first_url

    trip.clock.advance(hours=2)  # past the expiry step: a new URL
    await trip.trip.run_once()
    [second] = (await asyncio.to_thread(enriched_in, alertmanager)).values()
    assert second["fingerprint"] == first["fingerprint"]
    assert second["annotations"]["ai_graph_url"] != first_url
    assert signed_for(second["annotations"]["ai_graph_url"], "inc-1", trip.clock.now)
    await asyncio.sleep(4)  # several group_intervals of the test config (1 s)
    assert len(notified()) == 1

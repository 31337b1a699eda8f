"""The Alertmanager client against a real Alertmanager: how posts are judged, raw alerts listed."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import aiohttp

from ai_sidecar.notify import AlertmanagerClient, fingerprint
from scripts.localstack import free_port
from tests.ai_sidecar.builders import peer_member
from tests.ai_sidecar.notify.harness import SCOUT_LABELS, raw_postable
from tests.peers.alertmanager import Alertmanager, postable

TIMEOUT = timedelta(seconds=5)


async def test_accepted_and_refused_posts(
    alertmanager: Alertmanager, session: aiohttp.ClientSession
) -> None:
    client = AlertmanagerClient(session, TIMEOUT)
    good = peer_member("LinkDown")
    ok = await client.post_alerts(alertmanager.url, [raw_postable(good)])
    assert (ok.outcome, ok.detail) == ("ok", "")
    listed = await asyncio.to_thread(alertmanager.alerts)
    assert [a["fingerprint"] for a in listed] == [good.fingerprint]

    bad = postable({"alertname": "LinkDown", "bad-label": "x"})
    refused = await client.post_alerts(alertmanager.url, [bad])
    assert refused.outcome == "refused"
    assert refused.detail.startswith("HTTP 400: ")
    assert "invalid label set" in refused.detail


async def test_an_unreachable_peer_is_a_failure_and_lists_nothing(
    session: aiohttp.ClientSession,
) -> None:
    client = AlertmanagerClient(session, TIMEOUT)
    nobody = f"http://127.0.0.1:{free_port()}"
    failed = await client.post_alerts(nobody, [raw_postable(peer_member("LinkDown"))])
    assert failed.outcome == "failed"
    assert "ClientConnectorError" in failed.detail
    assert await client.raw_alerts(nobody) is None


async def test_raw_alerts_lists_raw_alerts_only(
    alertmanager: Alertmanager, session: aiohttp.ClientSession
) -> None:
    client = AlertmanagerClient(session, TIMEOUT)
    raw = peer_member("LinkDown", "sw1")
    copy_labels = {**raw.labels, **SCOUT_LABELS}
    alertmanager.post([raw_postable(raw), postable(copy_labels)])
    # The enriched copy is in Alertmanager, but not among the raw alerts.
    assert {a["fingerprint"] for a in await asyncio.to_thread(alertmanager.alerts)} == {
        raw.fingerprint,
        fingerprint(copy_labels),
    }
    listed = await client.raw_alerts(alertmanager.url)
    assert listed is not None
    assert [a["fingerprint"] for a in listed] == [raw.fingerprint]
    assert listed[0]["labels"] == dict(raw.labels)

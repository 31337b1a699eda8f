""" "Silence for …" against a real Alertmanager, beside a peer that is down."""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from ai_sidecar.console.pages.silences import SILENCES_PATH, TIMEOUT
from ai_sidecar.models import ENRICHED_LABEL, INCIDENT_LABEL, PRIORITY_LABEL
from scripts.localstack import free_port, write_yaml
from tests.ai_sidecar.builders import analysed_incident, peer_member
from tests.ai_sidecar.console.conftest import OPERATOR, USERS, ConsoleFactory, store_of
from tests.peers.alertmanager import Alertmanager, postable

pytestmark = pytest.mark.peers


def quiet_config(workdir: Path) -> Path:
    """An Alertmanager that notifies nobody: only its silences matter here."""
    path = workdir / "alertmanager-quiet.yml"
    write_yaml(path, {"route": {"receiver": "nobody"}, "receivers": [{"name": "nobody"}]})
    return path


def state_of(am: Alertmanager, *matchers: str) -> dict[str, Any]:
    [found] = am.alerts(*matchers)
    return dict(found["status"])


async def test_a_silence_mutes_raw_alerts_and_copies_on_every_peer_that_answers(
    console_factory: ConsoleFactory, tmp_path: Path
) -> None:
    down = peer_member("InterfaceDown", "sw-9", ifName="Gi0/9", site="lyon")
    loss = peer_member("ProbeLoss", "srv-9", site="lyon")
    gone = peer_member("ProbeLoss", "srv-8", site="lyon", status="resolved")
    incident = analysed_incident(down, loss, gone, id="inc-silence")
    dead_peer = f"http://127.0.0.1:{free_port()}"
    with Alertmanager(tmp_path, quiet_config(tmp_path)) as am:
        copy_labels = {
            **down.labels,
            ENRICHED_LABEL: "true",
            INCIDENT_LABEL: incident.id,
            PRIORITY_LABEL: "P2",
        }
        am.post([postable(m.labels) for m in (down, loss, gone)] + [postable(copy_labels)])
        client = await console_factory(alertmanagers=[am.url, dead_peer], incidents=[incident])

        response = await client.post(
            f"/console/incidents/{incident.id}/silence",
            data={
                "csrf_token": USERS["operator"].csrf_token,
                "duration": "custom",
                "custom": "2h30m",
                "comment": "carrier works on the line",
            },
            headers=OPERATOR,
            allow_redirects=False,
        )
        assert response.status == 303
        page = await (await client.get(response.headers["Location"], headers=OPERATOR)).text()
        assert "Silenced on 1 of 2 Alertmanagers; 1 failed: see the actions below." in page

        silences = await asyncio.to_thread(am.silences)
        mine = [s for s in silences if s["createdBy"] == "olga"]
        as_sets = sorted(
            sorted((m["name"], m["value"], m["isEqual"], m["isRegex"]) for m in s["matchers"])
            for s in mine
        )
        expected = sorted(
            [sorted((k, v, True, False) for k, v in m.labels.items()) for m in (down, loss)]
            + [[(INCIDENT_LABEL, incident.id, True, False)]]
        )
        assert as_sets == expected
        assert {s["comment"] for s in mine} == {"carrier works on the line"}
        assert {s["status"]["state"] for s in mine} == {"active"}

        # The raw alerts of firing members, and the enriched copy, are muted; the
        # member that no longer fires is not silenced.
        for instance in ("sw-9", "srv-9"):
            raw = state_of(am, f'instance="{instance}"', f'{ENRICHED_LABEL}!="true"')
            assert raw["state"] == "suppressed", instance
        copy = state_of(am, f'{ENRICHED_LABEL}="true"', f'{INCIDENT_LABEL}="{incident.id}"')
        assert copy["state"] == "suppressed"
        assert state_of(am, 'instance="srv-8"')["silencedBy"] == []

    [action] = await store_of(client).actions(incident.id)
    assert action.kind == "silence"
    assert action.actor == "olga"
    ids = sorted(s["id"] for s in mine)
    assert f"{am.url}: " in action.detail
    assert all(silence_id in action.detail for silence_id in ids)
    assert f"{dead_peer} failed: " in action.detail
    assert "olga silenced (until " in page


async def rendezvous_proxy(
    aiohttp_server: Any, upstream: str, arrived: set[str], everyone: asyncio.Event, peers: int
) -> str:
    """A proxy to ``upstream`` that holds its first silence until every one of ``peers``
    proxies has been asked for one (or 3 timeouts have passed): the console must ask
    the peers side by side, not one after the other."""

    async def forward(request: web.Request) -> web.Response:
        arrived.add(upstream)
        if len(arrived) == peers:
            everyone.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(everyone.wait(), 3 * TIMEOUT.total_seconds())
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                upstream + request.path,
                data=await request.read(),
                headers={"Content-Type": "application/json"},
            ) as answer,
        ):
            return web.Response(
                status=answer.status, body=await answer.read(), content_type="application/json"
            )

    app = web.Application()
    app.router.add_post(SILENCES_PATH, forward)
    server = await aiohttp_server(app, host="127.0.0.1")
    return str(server.make_url("")).rstrip("/")


async def test_the_peers_are_asked_side_by_side_so_slow_ones_do_not_add_up(
    console_factory: ConsoleFactory, tmp_path: Path, aiohttp_server: Any
) -> None:
    down = peer_member("InterfaceDown", "sw-7", ifName="Gi0/7", site="lyon")
    incident = analysed_incident(down, id="inc-side-by-side")
    config = quiet_config(tmp_path)
    with (
        Alertmanager(tmp_path, config, name="am-a") as first,
        Alertmanager(tmp_path, config, name="am-b") as second,
    ):
        arrived: set[str] = set()
        everyone = asyncio.Event()
        proxies = [
            await rendezvous_proxy(aiohttp_server, am.url, arrived, everyone, 2)
            for am in (first, second)
        ]
        client = await console_factory(alertmanagers=proxies, incidents=[incident])
        response = await client.post(
            f"/console/incidents/{incident.id}/silence",
            data={"csrf_token": USERS["operator"].csrf_token, "duration": "1h"},
            headers=OPERATOR,
            allow_redirects=False,
        )
        assert response.status == 303
        page = await (await client.get(response.headers["Location"], headers=OPERATOR)).text()
        assert "Silenced on every Alertmanager (2 of 2)." in page
        for am in (first, second):
            made = [s for s in await asyncio.to_thread(am.silences) if s["createdBy"] == "olga"]
            assert len(made) == 2, am.name


async def test_a_silence_form_sent_twice_silences_once(
    console_factory: ConsoleFactory, tmp_path: Path
) -> None:
    """A double click, or back and send again, must not create a second set of
    silences: the form's one-time token is refused the second time."""
    down = peer_member("InterfaceDown", "sw-7", ifName="Gi0/7", site="nice")
    incident = analysed_incident(down, id="inc-twice")
    with Alertmanager(tmp_path, quiet_config(tmp_path)) as am:
        am.post([postable(down.labels)])
        client = await console_factory(alertmanagers=[am.url], incidents=[incident])
        page = await (
            await client.get(f"/console/incidents/{incident.id}", headers=OPERATOR)
        ).text()
        [token] = re.findall(r'name="submission" value="([^"]+)"', page)
        form = {
            "csrf_token": USERS["operator"].csrf_token,
            "duration": "1h",
            "submission": token,
        }
        pages = []
        for _ in range(2):
            sent = await client.post(
                f"/console/incidents/{incident.id}/silence",
                data=form,
                headers=OPERATOR,
                allow_redirects=False,
            )
            assert sent.status == 303
            pages.append(
                await (await client.get(sent.headers["Location"], headers=OPERATOR)).text()
            )
        made = [s for s in await asyncio.to_thread(am.silences) if s["createdBy"] == "olga"]
        # One silence for the firing alert, one for the incident's enriched copies.
        assert len(made) == 2
        assert "Silenced on every Alertmanager (1 of 1)." in pages[0]
        assert "This silence form was already sent" in pages[1]
        # A fresh page draws a fresh token.
        again = await (
            await client.get(f"/console/incidents/{incident.id}", headers=OPERATOR)
        ).text()
        assert re.findall(r'name="submission" value="([^"]+)"', again) != [token]
    assert [a.kind for a in await store_of(client).actions(incident.id)] == ["silence"]

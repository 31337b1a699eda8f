"""The console's pages on a real store: the list, an incident, the actions, anomalies, health."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp

from ai_sidecar.console.health import PROBE, probe_prometheus
from ai_sidecar.keys import METRICS
from ai_sidecar.models import Analysis
from ai_sidecar.store import IncidentAction, StoreError
from tests.ai_sidecar.builders import T0, alert, member, stored_incident
from tests.ai_sidecar.console.conftest import (
    OPERATOR,
    TOKEN,
    USERS,
    VIEWER,
    ConsoleFactory,
    store_of,
    storm_incidents,
)
from tests.ai_sidecar.exchanges import exchange

CSRF = USERS["operator"].csrf_token


def links(page: str) -> list[str]:
    return re.findall(r'<a class="incident-link" href="([^"]+)"', page)


def status_message(page: str) -> str:
    found = re.search(r'role="(?:status|alert)"[^>]*>([^<]*)<', page)
    return unescape(found.group(1)) if found else ""


async def test_home_leads_to_the_list_and_strangers_to_the_login(
    console_factory: ConsoleFactory,
) -> None:
    client = await console_factory()
    home = await client.get("/console/", headers=VIEWER, allow_redirects=False)
    assert home.status == 303
    assert home.headers["Location"] == "/console/incidents"
    stranger = await client.get("/console/incidents?q=x", allow_redirects=False)
    assert stranger.status == 303
    login = urlsplit(stranger.headers["Location"])
    assert login.path == "/console/login"
    assert parse_qs(login.query) == {"next": ["/console/incidents?q=x"]}


async def test_the_list_shows_a_storm_with_plain_words_newest_first(
    console_factory: ConsoleFactory,
) -> None:
    incidents = storm_incidents("two-sites.yml")
    client = await console_factory(incidents=incidents)

    response = await client.get("/console/incidents", headers=VIEWER)
    page = await response.text()

    assert response.status == 200
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    newest = sorted(incidents, key=lambda i: (i.created_at, i.id), reverse=True)
    assert links(page) == [f"/console/incidents/{i.id}" for i in newest]
    assert "Te1/1/1 down on core1 (site hq)" in unescape(page)
    assert "2 incidents" in page
    assert 'form id="filters"' in page
    assert '<th scope="col">Priority</th>' in page


async def test_filters_narrow_the_list_and_paging_keeps_them(
    console_factory: ConsoleFactory,
) -> None:
    incidents = [
        replace(
            stored_incident(f"i{n:03}", priority="P1" if n % 2 else "P3"),
            created_at=T0 + timedelta(minutes=n),
            updated_at=T0 + timedelta(minutes=n),
        )
        for n in range(120)
    ]
    incidents[7] = replace(incidents[7], group={"site": "paris"})
    client = await console_factory(incidents=incidents)

    first = await (await client.get("/console/incidents", headers=VIEWER)).text()
    assert len(links(first)) == 50
    assert links(first)[0] == "/console/incidents/i119"
    assert 'rel="prev"' not in first
    next_link = unescape(re.search(r'<a rel="next" href="([^"]+)"', first).group(1))  # type: ignore[union-attr]
    assert next_link == "/console/incidents?page=2"
    third = await (await client.get("/console/incidents?page=3", headers=VIEWER)).text()
    assert links(third)[-1] == "/console/incidents/i000"
    assert 'rel="next"' not in third

    p1 = await (await client.get("/console/incidents?priority=P1&q=sw-i1", headers=VIEWER)).text()
    # P1 are the odd ones; "sw-i1" is in the labels (instance sw-i100..sw-i119).
    expected = [
        f"/console/incidents/i{n:03}"
        for n in range(119, -1, -1)
        if n % 2 and "sw-i1" in f"sw-i{n:03}"
    ]
    assert len(expected) == 10
    assert links(p1) == expected
    paged = await (
        await client.get("/console/incidents?priority=P1&site=hq", headers=VIEWER)
    ).text()
    assert "59 incidents, page 1 of 2" in paged
    kept = re.search(r'rel="next" href="([^"]+)"', paged)
    assert kept is not None
    assert unescape(kept.group(1)) == "/console/incidents?priority=P1&site=hq&page=2"
    site = await (await client.get("/console/incidents?site=paris", headers=VIEWER)).text()
    assert links(site) == ["/console/incidents/i007"]
    # Times are typed in the configured zone (here UTC): i005 was created at 09:05.
    window = await (
        await client.get(
            "/console/incidents?since=2026-11-02T09:05&until=2026-11-02T09:07", headers=VIEWER
        )
    ).text()
    assert links(window) == ["/console/incidents/i006", "/console/incidents/i005"]


async def test_times_are_typed_in_the_configured_zone(console_factory: ConsoleFactory) -> None:
    incidents = [
        replace(stored_incident(f"z{n}"), created_at=T0 + timedelta(hours=n)) for n in range(3)
    ]
    client = await console_factory(
        config="notifications: {timezone: Europe/Paris}", incidents=incidents
    )
    # 10:00 in Paris (UTC+1 in November) is 09:00 UTC: z0 and z1 are at or after it.
    page = await (
        await client.get("/console/incidents?since=2026-11-02T11:00", headers=VIEWER)
    ).text()
    assert links(page) == ["/console/incidents/z2", "/console/incidents/z1"]
    assert "Europe/Paris" in page
    # Before year 1 once in UTC: said, not a server error.
    early = await client.get("/console/incidents?until=0001-01-01T00:05", headers=VIEWER)
    assert early.status == 400
    assert "Until: expected a date and time" in unescape(await early.text())


async def test_a_local_time_the_clocks_skip_is_refused_and_a_repeated_one_widens(
    console_factory: ConsoleFactory,
) -> None:
    # Paris, 25 October 2026: 02:00-03:00 is lived twice, at 00:xx then 01:xx UTC.
    first, second = (
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
        datetime(2026, 10, 25, 1, 30, tzinfo=UTC),
    )
    incidents = [
        replace(stored_incident("first"), created_at=first, updated_at=first),
        replace(stored_incident("second"), created_at=second, updated_at=second),
    ]
    client = await console_factory(
        config="notifications: {timezone: Europe/Paris}", incidents=incidents
    )
    # 29 March 2026: clocks go from 02:00 to 03:00; 02:30 is no time in Paris.
    for name in ("since", "until"):
        skipped = await client.get(f"/console/incidents?{name}=2026-03-29T02:30", headers=VIEWER)
        assert skipped.status == 400
        page = unescape(await skipped.text())
        assert (
            f"{name.capitalize()}: '2026-03-29T02:30' does not exist in Europe/Paris:"
            " the clocks skip that hour." in page
        )
        assert links(page) == []
    french = await client.get(
        "/console/incidents?since=2026-03-29T02:30",
        headers={**VIEWER, "Accept-Language": "fr"},
    )
    assert french.status == 400
    assert "Depuis : '2026-03-29T02:30' n'existe pas dans le fuseau Europe/Paris" in unescape(
        await french.text()
    )
    # Repeated: since takes its first instant (00:30 UTC), until its second (01:30 UTC).
    both = await client.get(
        "/console/incidents?since=2026-10-25T02:30&until=2026-10-25T02:30", headers=VIEWER
    )
    assert both.status == 200
    assert links(await both.text()) == ["/console/incidents/first"]
    after = await client.get("/console/incidents?since=2026-10-25T02:30", headers=VIEWER)
    assert links(await after.text()) == ["/console/incidents/second", "/console/incidents/first"]
    before = await client.get("/console/incidents?until=2026-10-25T02:30", headers=VIEWER)
    assert links(await before.text()) == ["/console/incidents/first"]


async def test_bad_filters_are_explained_on_the_page(console_factory: ConsoleFactory) -> None:
    client = await console_factory(incidents=[stored_incident("a")])
    response = await client.get(
        "/console/incidents?status=closed&priority=P9&since=yesterday&page=-1", headers=VIEWER
    )
    page = unescape(await response.text())
    assert response.status == 400
    assert 'role="alert"' in page
    assert "Status: choose open or resolved" in page
    assert "Priority: choose among P1, P2, P3 and P4." in page
    assert "Since: expected a date and time like 2026-12-03T14:30 (UTC), got 'yesterday'." in page
    assert "Page: expected a whole number" in page
    assert links(page) == []


async def test_a_page_past_the_last_is_said_not_shown_as_no_match(
    console_factory: ConsoleFactory,
) -> None:
    incidents = [
        replace(stored_incident(f"p{n:03}"), created_at=T0 + timedelta(minutes=n))
        for n in range(60)
    ]
    client = await console_factory(incidents=incidents)
    response = await client.get("/console/incidents?site=hq&page=5", headers=VIEWER)
    page = unescape(await response.text())
    assert response.status == 400
    assert "No incident matches these filters" not in page
    assert "Page: these filters give 2 pages; page 5 is past the last." in page
    last = re.search(r'<a rel="prev" href="([^"]+)"', page)
    assert last is not None
    assert unescape(last.group(1)) == "/console/incidents?site=hq&page=2"


async def test_a_time_range_that_ends_before_it_starts_is_said(
    console_factory: ConsoleFactory,
) -> None:
    client = await console_factory(incidents=[stored_incident("a")])
    response = await client.get(
        "/console/incidents?since=2026-11-03T10:00&until=2026-11-01T00:00", headers=VIEWER
    )
    page = unescape(await response.text())
    assert response.status == 400
    assert "Until: 2026-11-01T00:00 is not after since (2026-11-03T10:00)." in page
    assert "No incident matches these filters" not in page


async def test_a_search_word_too_long_is_said_not_cut_short(
    console_factory: ConsoleFactory,
) -> None:
    # Cut to its first 100 characters, the word would match this incident, which
    # does not carry it.
    client = await console_factory(incidents=[stored_incident("x" * 100)])
    response = await client.get(f"/console/incidents?q={'x' * 100}y", headers=VIEWER)
    page = unescape(await response.text())
    assert response.status == 400
    assert "Search: words of at most 100 characters." in page
    assert links(page) == []


async def test_the_llm_cost_adds_up_every_call_not_only_those_listed(
    console_factory: ConsoleFactory,
) -> None:
    [hq] = [i for i in storm_incidents("two-sites.yml") if i.group.get("site") == "hq"]
    hq = replace(hq, analysis=Analysis("Uplink lost", "Te1/1/1", "hq offline", (), 0.8, 0.1))
    client = await console_factory(incidents=[hq])
    store = store_of(client)
    # 120 calls, more than the page lists (the newest 100): 0.0001 each, 3 tokens each.
    for n in range(120):
        await store.record_llm_exchange(
            exchange(hq.id, T0 + timedelta(seconds=n), input_tokens=2, output_tokens=1, cost=1e-4)
        )
    await store.record_llm_exchange(exchange("another", T0, cost=5.0))

    page = unescape(await (await client.get(f"/console/incidents/{hq.id}", headers=VIEWER)).text())

    assert "0.0120 (estimated, 120 calls, 360 tokens)" in page
    assert "… and 20 earlier calls, not listed here." in page
    assert page.count("gemini gemini-2.5-flash</td>") == 100


async def test_an_incident_page_shows_what_the_incident_records(
    console_factory: ConsoleFactory,
) -> None:
    [hq] = [i for i in storm_incidents("two-sites.yml") if i.group.get("site") == "hq"]
    hq = replace(
        hq,
        analysis=Analysis(
            "Core uplink lost", "Te1/1/1 on core1", "hq offline", ("Call the carrier",), 0.8, 0.1
        ),
        analyst="local",
        priority_reasons=("critical alert on a core device",),
    )
    client = await console_factory(
        config="return_trip: {grafana_url: 'https://grafana.example.net'}",
        alertmanagers=["http://am1.example:9093"],
        incidents=[hq],
    )
    store = store_of(client)
    await store.add_feedback(hq.id, True, "spot on", T0)
    await store.record_action(IncidentAction(hq.id, "assign", "olga", "bob", T0))

    response = await client.get(f"/console/incidents/{hq.id}", headers=VIEWER)
    page = unescape(await response.text())

    assert response.status == 200
    root = hq.members[hq.root_cause or ""]
    assert "Te1/1/1 down on core1" in page
    for reason in hq.root_cause_reasons:
        assert reason in page
    assert "critical alert on a core device" in page
    assert "Confidence</dt><dd>80 %" in page
    assert "no LLM call" in page
    # Two calls to the LLM for it: their cost adds up.
    await store.record_llm_exchange(exchange(hq.id, T0))
    await store.record_llm_exchange(exchange(hq.id, T0, cost=0.0012, outcome="invalid"))
    page = unescape(await (await client.get(f"/console/incidents/{hq.id}", headers=VIEWER)).text())
    assert "0.0017 (estimated, 2 calls, 2880 tokens)" in page
    assert "gemini gemini-2.5-flash</td><td>invalid" in page
    assert "Call the carrier" in page
    assert "https://grafana.example.net" in page
    assert "http://am1.example:9093/#/alerts?filter=" in page
    for one in hq.members.values():
        assert one.what in page
    assert f"{root.what} fired" in page
    assert "useful: “spot on”" in page
    assert "olga assigned to bob" in page
    assert "assigned to bob" in page
    # A viewer sees no action forms.
    assert 'form id="feedback"' not in page
    assert "you are signed in as a viewer" in page


async def test_a_storm_page_lists_its_root_cause_among_the_alerts_it_shows(
    console_factory: ConsoleFactory,
) -> None:
    # 300 probe alerts fire first; the switch that explains them fires last.
    symptoms = [
        replace(
            member("ProbeLoss", f"srv-{n:03}", fingerprint=f"s{n:03}"),
            first_starts_at=T0 + timedelta(seconds=n),
        )
        for n in range(300)
    ]
    root = replace(
        member("InterfaceDown", "sw-core", ifName="Te1/1/1", fingerprint="root"),
        first_starts_at=T0 + timedelta(minutes=10),
    )
    storm_incident = replace(stored_incident("storm", *symptoms, root), root_cause="root")
    client = await console_factory(incidents=[storm_incident])
    page = unescape(await (await client.get("/console/incidents/storm", headers=VIEWER)).text())
    assert '<th scope="row">InterfaceDown on sw-core <strong>(root cause)</strong>' in page
    assert re.search(r"<time>[^<]*</time>: InterfaceDown on sw-core fired</li>", page)
    assert "… and 101 more alerts, not listed here." in page


async def test_an_unknown_incident_is_a_404_page(console_factory: ConsoleFactory) -> None:
    client = await console_factory()
    response = await client.get("/console/incidents/nope", headers=VIEWER)
    assert response.status == 404
    assert response.content_type == "text/html"
    assert "There is no incident &#39;nope&#39;." in await response.text()


def navigation(page: str) -> str:
    """The page's navigation, without the mark of the current page."""
    [nav] = re.findall(r"<nav .*?</nav>", page, flags=re.DOTALL)
    return nav.replace(' aria-current="page"', "")


async def test_a_404_page_has_the_consoles_navigation_signed_in_or_not(
    console_factory: ConsoleFactory,
) -> None:
    client = await console_factory()
    listing = await (await client.get("/console/incidents", headers=VIEWER)).text()
    assert "/console/anomalies" in navigation(listing)  # what a signed-in user's pages have
    for path in ("/console/nowhere", "/console/incidents/nope"):
        missing = await client.get(path, headers=VIEWER)
        assert missing.status == 404
        page = await missing.text()
        assert navigation(page) == navigation(listing), path
        assert "Error 404" in page

    # Not signed in: the layout of the sign-in page, which shows no user's links.
    signed_out = await (await client.get("/console/login")).text()
    missing = await client.get("/console/nowhere")
    assert missing.status == 404
    assert navigation(await missing.text()) == navigation(signed_out)
    assert "/console/anomalies" not in navigation(signed_out)


async def test_a_404_page_with_the_store_down_is_the_page_for_anyone(
    console_factory: ConsoleFactory,
) -> None:
    client = await console_factory()
    signed_out = await (await client.get("/console/login")).text()
    await store_of(client).close()
    missing = await client.get("/console/nowhere", headers=VIEWER)
    assert missing.status == 404
    assert navigation(await missing.text()) == navigation(signed_out)


async def post(client: Any, path: str, form: dict[str, str]) -> tuple[str, str]:
    """POST ``form`` as the operator; follow the 303 and return its target and the page."""
    response = await client.post(
        path, data={"csrf_token": CSRF, **form}, headers=OPERATOR, allow_redirects=False
    )
    assert response.status == 303, await response.text()
    target = response.headers["Location"]
    page = await (await client.get(target, headers=OPERATOR)).text()
    return target, page


async def test_operators_give_feedback_acknowledge_and_assign(
    console_factory: ConsoleFactory,
) -> None:
    client = await console_factory(incidents=[stored_incident("inc-a")])
    path = "/console/incidents/inc-a"
    page = await (await client.get(path, headers=OPERATOR)).text()
    for form in ("feedback", "acknowledge", "assign", "silence"):
        assert f'<form id="{form}" method="post"' in page

    target, page = await post(client, f"{path}/feedback", {"useful": "no", "comment": "wrong box"})
    assert target.startswith(path + "?")
    assert status_message(page) == "Thank you: your feedback is recorded."
    [given] = await store_of(client).feedback("inc-a")
    assert (given.useful, given.comment) == (False, "wrong box")

    _, page = await post(client, f"{path}/acknowledge", {})
    assert status_message(page) == "The incident is acknowledged."
    assert "acknowledged by olga" in page
    assert 'form id="unacknowledge"' in page
    _, page = await post(client, f"{path}/assign", {"assignee": "  bob   smith "})
    assert status_message(page) == "The assignment is recorded."
    _, page = await post(client, f"{path}/unacknowledge", {})
    assert status_message(page) == "The acknowledgement is taken back."

    kinds = [(a.kind, a.actor, a.detail) for a in await store_of(client).actions("inc-a")]
    assert kinds == [
        ("acknowledge", "olga", ""),
        ("assign", "olga", "bob smith"),
        ("unacknowledge", "olga", ""),
    ]
    listed = await (await client.get("/console/incidents", headers=VIEWER)).text()
    assert "not acknowledged; assigned to bob smith" in listed


async def test_what_does_not_fit_is_refused_with_a_message(console_factory: ConsoleFactory) -> None:
    client = await console_factory(incidents=[stored_incident("inc-a")])
    path = "/console/incidents/inc-a"
    _, page = await post(client, f"{path}/feedback", {"useful": "maybe"})
    assert status_message(page) == "Say whether the analysis was useful (yes or no)."
    _, page = await post(client, f"{path}/feedback", {"useful": "yes", "comment": "x" * 2001})
    assert "at most 2000 characters" in status_message(page)
    _, page = await post(client, f"{path}/silence", {"duration": "custom", "custom": "8d"})
    assert "up to 7 d" in status_message(page)
    assert await store_of(client).feedback("inc-a") == []
    missing = await client.post(
        "/console/incidents/nope/acknowledge", data={"csrf_token": CSRF}, headers=OPERATOR
    )
    assert missing.status == 404


async def test_silencing_without_alertmanagers_says_so(console_factory: ConsoleFactory) -> None:
    client = await console_factory(incidents=[stored_incident("inc-a")])
    _, page = await post(client, "/console/incidents/inc-a/silence", {"duration": "1h"})
    assert "No Alertmanager is configured" in status_message(page)
    assert await store_of(client).actions("inc-a") == []


async def test_every_page_shows_health_and_freshness(console_factory: ConsoleFactory) -> None:
    incident = replace(stored_incident("fresh"), updated_at=datetime(2026, 12, 1, 8, 0, tzinfo=UTC))
    client = await console_factory(incidents=[incident])
    await store_of(client).ingest([alert("Waiting", instance="q1")], datetime.now(UTC))
    for path in ("/console/incidents", "/console/incidents/fresh", "/console/anomalies"):
        page = await (await client.get(path, headers=VIEWER)).text()
        assert 'aria-label="Sidecar health"' in page, path
        assert "latest incident update 2026-12-01 08:00:00 UTC" in page, path
        assert "Prometheus: not configured" in page, path
    assert "Return trip: 0 failed posts" in page


async def test_health_counts_return_trip_failures_and_probes_prometheus(
    console_factory: ConsoleFactory,
) -> None:
    # A port nothing listens on: the probe says unreachable.
    client = await console_factory(prometheus="http://127.0.0.1:9")
    app = client.server.app
    app[METRICS].return_trip_failures.labels("http://am1").inc(3)
    assert app[PROBE].state in ("not probed yet", "unreachable")

    async with aiohttp.ClientSession() as session:
        await probe_prometheus(app, session)
    page = await (await client.get("/console/anomalies", headers=VIEWER)).text()
    assert "Return trip: 3 failed posts" in page
    assert 'Prometheus: <strong class="warn">unreachable</strong>' in page


async def test_the_graph_is_the_signed_route_on_this_origin(
    console_factory: ConsoleFactory,
) -> None:
    client = await console_factory(
        config="graphs: {enabled: true}", incidents=[stored_incident("g1")]
    )
    page = await (await client.get("/console/incidents/g1", headers=VIEWER)).text()
    found = re.search(r'<img class="graph" src="([^"]+)"', page)
    assert found is not None
    src = unescape(found.group(1))
    assert src.startswith("/graphs/g1.png?expires=")
    # No token, no session: the signature alone lets the image through.
    image = await client.get(src)
    assert image.status == 200
    assert image.content_type == "image/png"
    forged = await client.get(src[:-4] + "0000")
    assert forged.status == 403
    without = await console_factory(
        config="graphs: {enabled: false}", incidents=[stored_incident("g2")]
    )
    page = await (await without.get("/console/incidents/g2", headers=VIEWER)).text()
    assert 'class="graph"' not in page


async def test_a_custom_duration_too_large_to_count_is_refused(
    console_factory: ConsoleFactory,
) -> None:
    client = await console_factory(incidents=[stored_incident("inc-a")])
    for custom in ("99999999999999999999d", "10000000000000000000000000ms"):
        _, page = await post(
            client, "/console/incidents/inc-a/silence", {"duration": "custom", "custom": custom}
        )
        assert "up to 7 d" in status_message(page), custom
    assert await store_of(client).actions("inc-a") == []


async def test_a_comment_at_the_limit_with_line_breaks_is_kept(
    console_factory: ConsoleFactory,
) -> None:
    # A textarea's maxlength counts a line break as one character, but the browser
    # sends it as CRLF: the 2000 characters it let through arrive as 2001.
    client = await console_factory(incidents=[stored_incident("inc-a")])
    typed = "x" * 1000 + "\r\n" + "y" * 999
    _, page = await post(
        client, "/console/incidents/inc-a/feedback", {"useful": "yes", "comment": typed}
    )
    assert status_message(page) == "Thank you: your feedback is recorded."
    [given] = await store_of(client).feedback("inc-a")
    assert given.comment == "x" * 1000 + "\n" + "y" * 999


async def test_a_store_that_cannot_serve_is_a_503_page_and_a_503_answer(
    console_factory: ConsoleFactory, monkeypatch: Any, caplog: Any
) -> None:
    """PostgreSQL restarting or a full disk: the client may retry, so 503 with
    Retry-After (not a 500), and the database's reason stays in the log."""
    client = await console_factory()
    store = store_of(client)
    reason = "connection to server at db.internal failed: user scout-canary-9f2e"

    async def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise StoreError(reason)

    monkeypatch.setattr(store, "incident_page", unavailable)
    monkeypatch.setattr(store, "list_incidents", unavailable)
    page = await client.get("/console/incidents", headers=VIEWER)
    assert page.status == 503
    assert page.headers["Retry-After"] == "5"
    text = await page.text()
    assert "the store cannot be reached for a moment" in unescape(text)
    api = await client.get("/api/v1/incidents", headers={"Authorization": f"Bearer {TOKEN}"})
    assert api.status == 503
    assert api.headers["Retry-After"] == "5"
    assert await api.json() == {
        "error": "the store cannot be reached for a moment: try again shortly"
    }
    assert "scout-canary-9f2e" not in text + await api.text()
    assert any("scout-canary-9f2e" in str(r.__dict__) for r in caplog.records)

"""The console's pages against people who should not act, and alert text that tries to run."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from ai_sidecar.clock import utc_now
from ai_sidecar.models import Analysis, Incident, Member
from tests.ai_sidecar.builders import alert, member_of, stored_incident
from tests.ai_sidecar.console.conftest import OPERATOR, USERS, VIEWER, ConsoleFactory, store_of

ACTIONS = {
    "feedback": {"useful": "yes", "comment": "ok"},
    "acknowledge": {},
    "unacknowledge": {},
    "assign": {"assignee": "bob"},
    "silence": {"duration": "1h"},
}
HOSTILE = '<script>alert(1)</script>"onerror=alert(2)'


@pytest.mark.parametrize("action", sorted(ACTIONS))
async def test_a_viewer_cannot_act_even_with_a_valid_token(
    console_factory: ConsoleFactory, action: str
) -> None:
    client = await console_factory(incidents=[stored_incident("inc-a")])
    response = await client.post(
        f"/console/incidents/inc-a/{action}",
        data={"csrf_token": USERS["viewer"].csrf_token, **ACTIONS[action]},
        headers=VIEWER,
        allow_redirects=False,
    )
    assert response.status == 403
    assert "operator role" in await response.text()
    assert await store_of(client).actions("inc-a") == []
    assert await store_of(client).feedback("inc-a") == []


@pytest.mark.parametrize("action", sorted(ACTIONS))
@pytest.mark.parametrize("token", [None, "", "csrf-viewer-0123456789", "csrf-operator-012345678"])
async def test_a_missing_or_wrong_csrf_token_is_refused(
    console_factory: ConsoleFactory, action: str, token: str | None
) -> None:
    client = await console_factory(incidents=[stored_incident("inc-a")])
    form = dict(ACTIONS[action])
    if token is not None:
        form["csrf_token"] = token
    response = await client.post(
        f"/console/incidents/inc-a/{action}", data=form, headers=OPERATOR, allow_redirects=False
    )
    assert response.status == 403
    assert "CSRF" in await response.text()
    assert await store_of(client).actions("inc-a") == []


async def test_strangers_posting_are_sent_to_the_login(console_factory: ConsoleFactory) -> None:
    client = await console_factory(incidents=[stored_incident("inc-a")])
    response = await client.post(
        "/console/incidents/inc-a/acknowledge", data={}, allow_redirects=False
    )
    assert response.status == 303
    assert response.headers["Location"].startswith("/console/login")
    assert await store_of(client).actions("inc-a") == []


def hostile_incident() -> Incident:
    item = alert("Hostile" + HOSTILE, instance="sw" + HOSTILE, site=HOSTILE)
    member: Member = replace(member_of(item), annotations={"summary": HOSTILE})
    return replace(
        stored_incident("inc-x", member),
        group={"site": HOSTILE},
        analysis=Analysis(HOSTILE, HOSTILE, HOSTILE, (HOSTILE,), 0.5, 0.1),
        analyst=HOSTILE,
        root_cause_reasons=(HOSTILE,),
        priority_reasons=(HOSTILE,),
    )


def assert_inert(page: str) -> None:
    """No markup of the attacker's survives: no script element, no attribute they opened."""
    assert "<script" not in page.lower()
    assert '"onerror' not in page
    assert not re.search(r"<[^>]*\sonerror=", page)


async def test_hostile_alert_text_renders_as_text(console_factory: ConsoleFactory) -> None:
    client = await console_factory(incidents=[hostile_incident()])
    store = store_of(client)
    await store.add_feedback("inc-x", False, HOSTILE, utc_now())
    # Operators' text is escaped the same way.
    response = await client.post(
        "/console/incidents/inc-x/assign",
        data={"csrf_token": USERS["operator"].csrf_token, "assignee": HOSTILE},
        headers=OPERATOR,
        allow_redirects=False,
    )
    assert response.status == 303

    listed = await (await client.get("/console/incidents?q=script", headers=VIEWER)).text()
    assert 'href="/console/incidents/inc-x"' in listed
    assert_inert(listed)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&#34;onerror=alert(2)" in listed

    page = await (await client.get("/console/incidents/inc-x", headers=OPERATOR)).text()
    assert_inert(page)
    # Labels, annotations, the analysis, the feedback and the assignee: all shown, escaped.
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;&#34;onerror=alert(2)") >= 8
    assert "style=" not in page
    assert "<script" not in page


# Right-to-left override and isolate, then left-to-right embedding: each reorders
# what follows it until the end of its paragraph.
BIDI = "\u202egnp.exe \u2067x \u202ay"


async def test_bidi_controls_in_alert_text_cannot_reorder_the_page(
    console_factory: ConsoleFactory,
) -> None:
    item = alert("LinkDown", instance="sw1", site=BIDI)
    member: Member = replace(member_of(item), annotations={"summary": BIDI})
    incident = replace(stored_incident("inc-b", member), group={"site": BIDI})
    client = await console_factory(incidents=[incident])
    listed = await (await client.get("/console/incidents", headers=VIEWER)).text()
    page = await (await client.get("/console/incidents/inc-b", headers=VIEWER)).text()
    for shown in (listed, page):
        # Shown, and visibly so, as the PDF report shows them; never in force.
        assert not re.search("[\u202a-\u202e\u2066-\u2069]", shown)
    assert "\ufffdgnp.exe \ufffdx \ufffdy" in page


async def test_pages_carry_no_inline_script_or_style_and_a_strict_policy(
    console_factory: ConsoleFactory,
) -> None:
    client = await console_factory(incidents=[stored_incident("inc-a")])
    for path in ("/console/incidents", "/console/incidents/inc-a", "/console/anomalies"):
        response = await client.get(path, headers=OPERATOR)
        page = await response.text()
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy
        assert "unsafe-inline" not in policy
        assert "<script" not in page
        assert " style=" not in page
        assert "<style" not in page
        assert '<html lang="en">' in page
        assert 'name="viewport"' in page
        # Every input has a label (hidden ones carry the CSRF token).
        for input_id in re.findall(
            r'<(?:input|select|textarea)(?![^>]*type="hidden")[^>]*id="([^"]+)"', page
        ):
            assert f'for="{input_id}"' in page, (path, input_id)
        unlabelled = re.findall(
            r'<(?:input|select|textarea)(?![^>]*type="hidden")(?![^>]*\sid=)[^>]*>', page
        )
        assert unlabelled == [], path


@pytest.mark.parametrize(
    "query",
    [
        "?done=silenced&ok=2&peers=2",
        "?done=acknowledged",
        "?refused=duration",
        # A signature made for another session (the viewer's) or another page.
        "?done=silenced&ok=2&peers=2&sig=0123456789abcdef0123456789abcdef",
    ],
)
async def test_a_crafted_link_shows_no_confirmation(
    console_factory: ConsoleFactory, query: str
) -> None:
    """A link with a flash in its query, sent by someone else, must not tell the
    reader that the incident was silenced or acknowledged."""
    client = await console_factory(incidents=[stored_incident("inc-a")])
    page = await (await client.get(f"/console/incidents/inc-a{query}", headers=OPERATOR)).text()
    assert 'class="flash' not in page
    for claim in ("Silenced on", "is acknowledged", "Choose how long"):
        assert claim not in page


async def test_a_flash_is_shown_only_to_the_session_it_was_made_for(
    console_factory: ConsoleFactory,
) -> None:
    client = await console_factory(incidents=[stored_incident("inc-a"), stored_incident("inc-b")])
    acted = await client.post(
        "/console/incidents/inc-a/acknowledge",
        data={"csrf_token": USERS["operator"].csrf_token},
        headers=OPERATOR,
        allow_redirects=False,
    )
    assert acted.status == 303
    target = acted.headers["Location"]
    mine = await (await client.get(target, headers=OPERATOR)).text()
    assert "The incident is acknowledged." in mine
    theirs = await (await client.get(target, headers=VIEWER)).text()
    assert "The incident is acknowledged." not in theirs
    other_page = target.replace("/inc-a?", "/inc-b?")
    elsewhere = await (await client.get(other_page, headers=OPERATOR)).text()
    assert "The incident is acknowledged." not in elsewhere


async def test_preferences_saved_is_said_only_after_saving(console_factory: ConsoleFactory) -> None:
    client = await console_factory()
    crafted = await (await client.get("/console/preferences?done=saved", headers=OPERATOR)).text()
    saved = await client.post(
        "/console/preferences",
        data={"csrf_token": USERS["operator"].csrf_token, "language": ""},
        headers=OPERATOR,
        allow_redirects=False,
    )
    assert saved.status == 303
    real = await (await client.get(saved.headers["Location"], headers=OPERATOR)).text()
    assert "Your language is saved." in real
    assert "Your language is saved." not in crafted

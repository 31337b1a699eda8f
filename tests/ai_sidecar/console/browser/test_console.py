"""The console in a real browser, against a real sidecar process and a real Alertmanager.

One stack per module: Alertmanager 0.25 with the shipped configuration, the
sidecar as ``scout-sidecar serve`` in its own process, users made with
``scout-sidecar user add``, and the demo's alert storm (``scripts/demo_storm.py``:
a core switch's uplink down and what sits behind it) posted to Alertmanager as
Prometheus would. Headless chromium then does what people do: an operator signs
in, finds the incident, gives feedback, acknowledges, assigns and silences it
(the silence must then be in Alertmanager, covering the incident's alerts and
nothing else) and signs out; a viewer sees no action and a forged POST is
refused; signing in works from the keyboard alone.

The selectors are the console's form contract (``form#login``,
``a.incident-link``, ``form#feedback`` ...), which the pages keep for these tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ai_sidecar.models import parse_time
from ai_sidecar.store import SqliteStore
from scripts.demo_storm import CORE, storm
from scripts.localstack import free_port
from tests.ai_sidecar.console.browser.harness import DESKTOP, PHONE, Browser, OpenBrowser
from tests.conftest import NoRedirect, wait_for
from tests.peers.alertmanager import Alertmanager, render_config
from tests.peers.notify import SlackSink, SmtpSink
from tests.peers.sidecar import Sidecar, start_sidecar

pytestmark = pytest.mark.peers

SIDECAR_CONFIG = """\
correlation:
  preset: network
  window: 5m
"""
OPERATOR = "olivia"
VIEWER = "victor"


@dataclass
class ConsoleStack:
    sidecar: Sidecar
    alertmanager: Alertmanager
    passwords: dict[str, str]
    data_dir: Path
    # The incident the storm became, and the labels of its member alerts.
    incident_id: str
    member_labels: list[dict[str, str]]
    # The alerts of the demo that are not the storm's (another site, hours old).
    background_labels: list[dict[str, str]]

    @property
    def url(self) -> str:
        return self.sidecar.url


def add_user(data_dir: Path, name: str, role: str, password: str) -> None:
    """``scout-sidecar user add`` as an administrator runs it, on the sidecar's store."""
    command = [sys.executable, "-m", "ai_sidecar.cli", "user", "add", name]
    result = subprocess.run(
        [*command, "--role", role, "--password-stdin"],
        input=password + "\n",
        capture_output=True,
        text=True,
        env={**os.environ, "SCOUT_DATA_DIR": str(data_dir)},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert password not in result.stdout + result.stderr


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleStack]:
    with running_stack(tmp_path_factory, SIDECAR_CONFIG) as started:
        yield started


@contextmanager
def running_stack(
    tmp_path_factory: pytest.TempPathFactory, sidecar_config: str
) -> Iterator[ConsoleStack]:
    """Alertmanager, the sidecar with ``sidecar_config``, its users and the demo storm."""
    workdir = tmp_path_factory.mktemp("console-stack")
    sidecar_port = free_port()
    with SlackSink() as slack, SmtpSink() as smtp:
        config = render_config(
            workdir,
            sidecar_url=f"http://127.0.0.1:{sidecar_port}",
            slack_url=slack.url,
            smtp_smarthost=smtp.smarthost,
        )
        with Alertmanager(workdir, config) as alertmanager:
            sidecar = start_sidecar(workdir, sidecar_port, [alertmanager.url], sidecar_config)
            try:
                yield prepare(workdir, sidecar, alertmanager)
            finally:
                sidecar.service.stop(grace=5)


def prepare(workdir: Path, sidecar: Sidecar, alertmanager: Alertmanager) -> ConsoleStack:
    data_dir = workdir / "sidecar-data"  # where start_sidecar points SCOUT_DATA_DIR
    passwords = {OPERATOR: "correct horse battery staple", VIEWER: "viewer's own long secret"}
    add_user(data_dir, OPERATOR, "operator", passwords[OPERATOR])
    add_user(data_dir, VIEWER, "viewer", passwords[VIEWER])
    alerts = storm(datetime.now(UTC))
    alertmanager.post(alerts)
    at_hq = [a["labels"] for a in alerts if a["labels"]["site"] == "hq"]

    def storm_incident() -> dict[str, Any] | None:
        for incident in sidecar.incidents():
            members = [m["labels"] for m in incident["alerts"]]
            if any(m["instance"] == CORE for m in members):
                return incident if len(members) == len(at_hq) else None
        return None

    incident = wait_for(storm_incident, timeout=60, what="the storm to become one incident")
    members = [m["labels"] for m in incident["alerts"]]

    def by_labels(labels: dict[str, str]) -> list[tuple[str, str]]:
        return sorted(labels.items())

    assert sorted(members, key=by_labels) == sorted(at_hq, key=by_labels)
    return ConsoleStack(
        sidecar,
        alertmanager,
        passwords,
        data_dir,
        incident["id"],
        members,
        [a["labels"] for a in alerts if a["labels"]["site"] != "hq"],
    )


def sign_in(window: Browser, stack: ConsoleStack, name: str) -> None:
    """Go to the incidents, be sent to the login form, sign in, come back."""
    window.open("/console/incidents")
    assert window.location.startswith("/console/login?next="), window.location
    window.submit("form#login", {"username": name, "password": stack.passwords[name]})
    assert window.path == "/console/incidents"


def incident_path(stack: ConsoleStack) -> str:
    return f"/console/incidents/{stack.incident_id}"


def silences(alertmanager: Alertmanager) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{alertmanager.url}/api/v2/silences", timeout=10) as response:
        found: list[dict[str, Any]] = json.loads(response.read())
    return [s for s in found if s["status"]["state"] == "active"]


def raw_alert(alertmanager: Alertmanager, labels: dict[str, str]) -> dict[str, Any]:
    """Alertmanager's view of the alert with exactly ``labels`` (not its enriched copy)."""
    [alert] = [a for a in alertmanager.alerts() if a["labels"] == labels]
    return alert


def actions(stack: ConsoleStack) -> list[tuple[str, str, str]]:
    """(kind, actor, detail) of the incident's recorded actions, read from the store."""

    async def read() -> list[tuple[str, str, str]]:
        store = await SqliteStore.open(stack.data_dir / "scout.db")
        try:
            taken = await store.actions(stack.incident_id)
        finally:
            await store.close()
        return [(str(a.kind), a.actor, a.detail) for a in taken]

    return asyncio.run(read())


def test_operator_signs_in_acts_on_an_incident_and_signs_out(
    stack: ConsoleStack, browser: OpenBrowser
):
    window = browser(stack.url, DESKTOP)
    sign_in(window, stack, OPERATOR)
    links = {a.get_attribute("href") for a in window.find_all("a.incident-link")}
    # The storm and the background: one incident each at least, the storm's among them.
    assert len(links) >= 2
    assert stack.url + incident_path(stack) in links
    window.find(f'a.incident-link[href="{incident_path(stack)}"]').click()
    window.settled("incident page")
    assert window.path == incident_path(stack)
    assert CORE in window.find("main").text

    window.submit(
        "form#feedback", {"useful": "yes", "comment": "Root cause right: the uplink optic died."}
    )
    assert window.path == incident_path(stack)
    assert "feedback" in window.status_message().lower()
    feedback = stack.sidecar.incident(stack.incident_id)["feedback"]
    assert [(f["useful"], f["comment"]) for f in feedback] == [
        (True, "Root cause right: the uplink optic died.")
    ]

    window.submit("form#acknowledge")
    assert window.path == incident_path(stack)
    assert "acknowledged" in window.status_message().lower()
    window.submit("form#assign", {"assignee": VIEWER})
    assert window.path == incident_path(stack)
    assert "assign" in window.status_message().lower()
    assert [(kind, actor) for kind, actor, _ in actions(stack)] == [
        ("acknowledge", OPERATOR),
        ("assign", OPERATOR),
    ]
    assert actions(stack)[1][2] == VIEWER

    assert silences(stack.alertmanager) == []
    window.submit("form#silence", {"duration": "1h", "comment": "optic replaced at 10:00"})
    assert window.path == incident_path(stack)
    assert "silenced on every alertmanager (1 of 1)" in window.status_message().lower()
    created = silences(stack.alertmanager)
    assert created
    for silence in created:
        lasts = parse_time(silence["endsAt"]) - parse_time(silence["startsAt"])
        assert timedelta(minutes=59) <= lasts <= timedelta(minutes=61), silence
        assert "optic replaced at 10:00" in silence["comment"], silence
    ids = {silence["id"] for silence in created}
    # Every alert of the incident, and every enriched copy the sidecar posted
    # back for it, is silenced by them in Alertmanager; the unrelated alerts
    # elsewhere are not.
    for labels in stack.member_labels:
        silenced_by = raw_alert(stack.alertmanager, labels)["status"]["silencedBy"]
        assert silenced_by, labels
        assert set(silenced_by) <= ids, labels
    copies = stack.alertmanager.alerts(f'scout_incident="{stack.incident_id}"')
    assert all(copy["status"]["silencedBy"] for copy in copies)
    for labels in stack.background_labels:
        assert raw_alert(stack.alertmanager, labels)["status"]["silencedBy"] == [], labels
    assert [kind for kind, _, _ in actions(stack)][-1] == "silence"

    window.submit("form#logout")
    assert window.path.startswith("/console/login")
    window.open(incident_path(stack))
    # Sent to sign in, and back to the incident after.
    assert window.path == "/console/login"
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(window.location).query)
    assert query["next"] == [incident_path(stack)]
    assert window.find_all("form#login")


def post_form(stack: ConsoleStack, path: str, cookies: str, fields: dict[str, str]) -> int:
    """POST a form outside the browser with ``cookies``; the status, redirects not followed."""

    request = urllib.request.Request(
        stack.url + path,
        data=urllib.parse.urlencode(fields).encode(),
        headers={"Cookie": cookies, "Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_viewer_sees_no_action_and_forged_posts_are_refused(
    stack: ConsoleStack, browser: OpenBrowser
):
    viewer = browser(stack.url, PHONE)
    sign_in(viewer, stack, VIEWER)
    assert viewer.fits_width()
    viewer.open(incident_path(stack))
    assert CORE in viewer.find("main").text
    for form in ("feedback", "acknowledge", "assign", "silence"):
        assert viewer.find_all(f"form#{form}") == [], f"a viewer is offered form#{form}"
    # Readable on a phone: nothing wider than the screen, list or incident.
    assert viewer.fits_width()
    before = (len(silences(stack.alertmanager)), len(actions(stack)))
    silence_path = incident_path(stack) + "/silence"
    # The viewer's own session and CSRF token: the role alone refuses it.
    viewer_token = viewer.find('form#logout input[name="csrf_token"]').get_attribute("value")
    assert viewer_token
    refused = {"duration": "1h", "comment": "forged", "csrf_token": viewer_token}
    assert post_form(stack, silence_path, viewer.cookie_header(), refused) == 403
    # An operator's session without the token (a cross-site form): refused too.
    operator = browser(stack.url, DESKTOP)
    sign_in(operator, stack, OPERATOR)
    forged = {"duration": "1h", "comment": "forged"}
    assert post_form(stack, silence_path, operator.cookie_header(), forged) == 403
    ack = incident_path(stack) + "/acknowledge"
    assert post_form(stack, ack, operator.cookie_header(), {"csrf_token": "0" * 43}) == 403
    assert (len(silences(stack.alertmanager)), len(actions(stack))) == before


def test_signing_in_with_the_keyboard_alone(stack: ConsoleStack, browser: OpenBrowser):
    window = browser(stack.url, PHONE)
    window.open("/console/login")
    window.press_tab_until("username")
    window.type_keys(OPERATOR)
    window.press_tab_until("password")
    window.type_keys("not the password")
    window.press_enter(page_status=401)
    assert window.path.startswith("/console/login")
    assert window.alert_message(), "a refused login says so (role=alert)"
    # The page may keep the name typed: select whatever the field holds and retype it.
    window.press_tab_until("username")
    window.replace_text(OPERATOR)
    window.press_tab_until("password")
    window.type_keys(stack.passwords[OPERATOR])
    window.press_enter()
    assert window.path == "/console/incidents"
    assert window.find_all("a.incident-link")

"""The sidecar as an HTTP app: endpoints, the incidents API, and the CLI."""

from __future__ import annotations

import asyncio
import base64
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from ai_sidecar.app import create_app
from ai_sidecar.components import Components
from ai_sidecar.config import SidecarConfig
from ai_sidecar.enrichment.base import IncidentContext
from ai_sidecar.enrichment.chain import AnalystChain
from ai_sidecar.keys import STORE
from ai_sidecar.metrics import SidecarMetrics
from ai_sidecar.models import Analysis, Incident
from ai_sidecar.priority import NoAnomalyEvidence
from ai_sidecar.settings import SidecarSettings
from ai_sidecar.store import Store
from ai_sidecar.worker_process import NICENESS
from scripts.localstack import Service, free_port, sidecar_service
from tests.ai_sidecar.builders import (
    T0,
    FailingAnalyst,
    OfflineContext,
    alert,
    payload,
    stored_incident,
)
from tests.conftest import http_get, run_on_busy_port

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def settings(tmp_path: Path, token: str | None = TOKEN) -> SidecarSettings:
    return SidecarSettings(data_dir=tmp_path / "data", webhook_token=token)


async def wait_until(check: Callable[[], Any], seconds: float = 10.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not (result := await check()):
        if loop.time() > deadline:
            pytest.fail("timed out waiting for the sidecar")
        await asyncio.sleep(0.02)
    return result


async def test_metrics_health_and_landing(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(settings(tmp_path)))
    metrics = await (await client.get("/metrics")).text()
    assert 'scout_sidecar_build_info{pythonversion="' in metrics
    assert "process_cpu_seconds_total" in metrics
    for name in (
        "scout_sidecar_alerts_received_total",
        "scout_sidecar_incidents_open",
        "scout_sidecar_queue_depth",
        "scout_sidecar_processing_lag_seconds",
    ):
        assert name in metrics
    assert (await client.get("/-/healthy")).status == 200
    assert (await client.get("/-/ready")).status == 200
    landing = await (await client.get("/")).text()
    # Named, not linked: a browser following the link would only get a 401.
    assert "<code>/api/v1/incidents</code>" in landing
    assert 'href="/api/v1/incidents"' not in landing
    assert "<code>/graphs/&lt;incident&gt;.png</code>" in landing
    assert '<html lang="en">' in landing
    assert '<meta name="viewport"' in landing
    assert "<main>" in landing


def test_an_inline_pipeline_on_a_shared_store_is_refused(tmp_path):
    shared = SidecarSettings(
        data_dir=tmp_path, webhook_token=TOKEN, store_url="host=db.example dbname=scout"
    )
    with pytest.raises(ValueError, match="needs worker_process=True"):
        create_app(shared)
    assert create_app(shared, worker_process=True) is not None


async def test_two_apps_do_not_share_metrics(aiohttp_client, tmp_path):
    # Each app owns its registry: a second one must not fail on duplicate names.
    first = await aiohttp_client(create_app(settings(tmp_path / "a")))
    second = await aiohttp_client(create_app(settings(tmp_path / "b")))
    assert (await first.get("/metrics")).status == 200
    assert (await second.get("/metrics")).status == 200


async def test_storm_becomes_one_incident_with_an_analysis(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(settings(tmp_path)))
    storm = [
        alert(
            "InterfaceDown", severity="critical", site="ams", instance="core1", ifName="xe-0/0/1"
        ),
        *(
            alert("ProbeLoss", at=timedelta(seconds=20 + i), site="ams", instance=f"srv{i}")
            for i in range(5)
        ),
    ]
    response = await client.post("/api/v1/alertmanager", json=payload(*storm), headers=AUTH)
    assert response.status == 200, await response.text()

    async def analysed() -> list[dict[str, Any]]:
        body = await (await client.get("/api/v1/incidents", headers=AUTH)).json()
        return body if body and body[0]["analysis"] else []

    [incident] = await wait_until(analysed)
    assert sorted(incident["members"]) == sorted(a.fingerprint for a in storm)
    assert incident["rootCause"] == storm[0].fingerprint
    assert incident["status"] == "open"
    assert incident["priority"] in ("P1", "P2")
    assert "InterfaceDown" in incident["analysis"]["root_cause"]

    one = await client.get(f"/api/v1/incidents/{incident['id']}", headers=AUTH)
    assert (await one.json())["members"] == incident["members"]

    async def counted() -> str:
        text = await (await client.get("/metrics")).text()
        return "" if "scout_sidecar_incidents_created_total 0.0" in text else text

    # The worker counts a batch's incidents after the batch's commit, and the
    # analysis of the incident it saved can be shown before that: wait for the count.
    metrics = await wait_until(counted)
    assert "scout_sidecar_incidents_created_total 1.0" in metrics
    assert "scout_sidecar_incidents_open 1.0" in metrics
    assert "scout_sidecar_alerts_received_total 6.0" in metrics


class Scripted:
    name = "scripted"

    async def analyse(self, incident: Incident, context: IncidentContext) -> Analysis:
        asked = ",".join(sorted(context.members))
        return Analysis(f"scripted: {asked}", "x", "y", (), 0.5, 0.1)


def scripted_components(
    config: SidecarConfig,
    settings: SidecarSettings,
    session: aiohttp.ClientSession,
    *,
    db: Store,
    metrics: SidecarMetrics,
) -> Components:
    """Importable by name, so the worker process can build it too."""
    return Components(
        AnalystChain(Scripted(), (FailingAnalyst("remote", "quota exhausted"),)),
        OfflineContext(),
        NoAnomalyEvidence(),
    )


@pytest.mark.parametrize("worker_process", [False, True], ids=["inline", "worker-process"])
async def test_injected_components_run_in_either_process(aiohttp_client, tmp_path, worker_process):
    app = create_app(
        settings(tmp_path), components=scripted_components, worker_process=worker_process
    )
    client = await aiohttp_client(app)
    down = alert("DeviceDown", site="ams", instance="r1")
    response = await client.post("/api/v1/alertmanager", json=payload(down), headers=AUTH)
    assert response.status == 200

    async def analysed() -> list[dict[str, Any]]:
        body = await (await client.get("/api/v1/incidents", headers=AUTH)).json()
        return body if body and body[0]["analysis"] else []

    [incident] = await wait_until(analysed, 30)
    assert incident["analyst"] == "scripted"
    assert incident["analysis"]["summary"] == f"scripted: {down.fingerprint}"
    assert incident["skippedAnalysts"] == [
        {
            "analyst": "remote",
            "reason": "error",
            "detail": "RuntimeError (details in the sidecar's log)",
        }
    ]
    fallback = 'scout_sidecar_analysis_fallbacks_total{analyst="remote",reason="error"} 1.0'

    async def counted() -> str:
        text = await (await client.get("/metrics")).text()
        return text if fallback in text else ""

    # From the worker process, the metrics arrive with its next report.
    metrics = await wait_until(counted, 30)
    assert "scout_sidecar_incidents_created_total 1.0" in metrics
    assert metrics.count("# TYPE scout_sidecar_incidents_created_total counter") == 1
    assert metrics.count("# TYPE process_cpu_seconds_total counter") == 1


async def test_a_killed_worker_process_is_restarted_and_catches_up(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(settings(tmp_path), worker_process=True))

    async def analysed(count: int) -> list[dict[str, Any]]:
        body = await (await client.get("/api/v1/incidents", headers=AUTH)).json()
        return body if len([i for i in body if i["analysis"]]) == count else []

    first = alert("DeviceDown", site="ams", instance="r1")
    assert (await client.post("/api/v1/alertmanager", json=payload(first), headers=AUTH)).ok
    await wait_until(lambda: analysed(1), 30)
    [worker] = [p for p in multiprocessing.active_children() if p.name == "scout-sidecar-worker"]
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGKILL)
    await asyncio.to_thread(worker.join, 10)

    # Acknowledged while no worker runs: the next one folds and analyses it.
    second = alert("DeviceDown", site="fra", instance="r2")
    assert (await client.post("/api/v1/alertmanager", json=payload(second), headers=AUTH)).ok
    await wait_until(lambda: analysed(2), 30)


async def test_incident_filters(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(settings(tmp_path)))
    down = alert("DeviceDown", site="a", instance="r1")
    other = alert("DeviceDown", site="b", instance="r2")
    await client.post("/api/v1/alertmanager", json=payload(down, other), headers=AUTH)
    resolved = alert(
        "DeviceDown", status="resolved", ends=timedelta(minutes=3), site="a", instance="r1"
    )
    await client.post("/api/v1/alertmanager", json=payload(resolved), headers=AUTH)

    async def statuses() -> dict[str, str]:
        body = await (await client.get("/api/v1/incidents", headers=AUTH)).json()
        found = {i["group"].get("site", ""): i["status"] for i in body}
        return found if found == {"a": "resolved", "b": "open"} else {}

    await wait_until(statuses)
    open_only = await (await client.get("/api/v1/incidents?status=open", headers=AUTH)).json()
    assert [i["group"]["site"] for i in open_only] == ["b"]
    future = await client.get("/api/v1/incidents?since=2100-01-01T00:00:00Z", headers=AUTH)
    assert await future.json() == []
    limited = await (await client.get("/api/v1/incidents?limit=1", headers=AUTH)).json()
    assert len(limited) == 1


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("status=closed", "status: expected open or resolved, got 'closed'"),
        ("since=yesterday", "since: expected an RFC 3339 time or Unix seconds, got 'yesterday'"),
        ("since=2026-01-01T00:00:00", "since: the time needs a zone"),
        ("limit=0", "limit: expected a whole number from 1 to 1000"),
        ("limit=abc", "limit: expected a whole number from 1 to 1000"),
        ("since=0001-01-01T00:00:00%2B01:00", "since: expected an RFC 3339 time"),
        ("state=open", "unknown parameter 'state'; use status, since, limit or cursor"),
        ("status=open&status=resolved", "status: give it once, not 2 times"),
        ("since=1&since=1", "since: give it once, not 2 times"),
        ("limit=5&status=open&limit=3&limit=1", "limit: give it once, not 3 times"),
    ],
)
async def test_bad_incident_queries_are_400(aiohttp_client, tmp_path, query, message):
    client = await aiohttp_client(create_app(settings(tmp_path)))
    response = await client.get(f"/api/v1/incidents?{query}", headers=AUTH)
    assert response.status == 400
    assert message in (await response.json())["error"]


async def test_api_needs_the_token(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(settings(tmp_path)))
    for request in (
        client.get("/api/v1/incidents"),
        client.get("/api/v1/incidents/x", headers={"Authorization": "Bearer wrong"}),
        client.post("/api/v1/incidents/x/feedback", json={"useful": True}),
    ):
        response = await request
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "token" in (await response.json())["error"]


async def test_no_auth_mode_serves_without_a_token(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(settings(tmp_path, token=None)))
    assert (await client.get("/api/v1/incidents")).status == 200


async def test_feedback_must_be_json_so_no_cross_site_form_can_post_it(aiohttp_client, tmp_path):
    """Without a token (--web.insecure-no-auth), the media type is what keeps another
    site's page from posting feedback: a browser sends a form or text/plain unasked."""
    client = await aiohttp_client(create_app(settings(tmp_path, token=None)))
    incident_id = await first_incident_id(client)
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        response = await client.post(
            f"/api/v1/incidents/{incident_id}/feedback",
            data=b'{"useful": false, "comment": "posted by another site"}',
            headers={"Content-Type": content_type},
        )
        assert response.status == 415, content_type
        assert content_type in (await response.json())["error"]
    detail = await (await client.get(f"/api/v1/incidents/{incident_id}")).json()
    assert detail["feedback"] == []


async def first_incident_id(client: Any) -> str:
    """Post one alert and wait for the sidecar to make it an incident; its id."""
    await client.post(
        "/api/v1/alertmanager", json=payload(alert("DeviceDown", instance="r1")), headers=AUTH
    )

    async def first_id() -> str:
        body = await (await client.get("/api/v1/incidents", headers=AUTH)).json()
        return str(body[0]["id"]) if body else ""

    incident_id: str = await wait_until(first_id)
    return incident_id


async def test_feedback(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(settings(tmp_path)))
    incident_id = await first_incident_id(client)
    url = f"/api/v1/incidents/{incident_id}/feedback"
    response = await client.post(
        url, json={"useful": False, "comment": "wrong device"}, headers=AUTH
    )
    assert response.status == 201
    detail = await (await client.get(f"/api/v1/incidents/{incident_id}", headers=AUTH)).json()
    assert [(f["useful"], f["comment"]) for f in detail["feedback"]] == [(False, "wrong device")]

    missing = await client.post(
        "/api/v1/incidents/inc-nope/feedback", json={"useful": True}, headers=AUTH
    )
    assert missing.status == 404
    assert "no incident 'inc-nope'" in (await missing.json())["error"]
    for body, message in (
        ({"comment": "x"}, "useful: required, true or false"),
        ({"useful": "yes"}, "useful: required, true or false"),
        ({"useful": True, "comment": 3}, "comment: expected a string"),
        ({"useful": True, "extra": 1}, "unknown field 'extra'"),
        ([1], "expected a JSON object"),
    ):
        response = await client.post(url, json=body, headers=AUTH)
        assert response.status == 400
        assert message in (await response.json())["error"]
    bad_json = await client.post(
        url, data=b"{", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert "not valid JSON" in (await bad_json.json())["error"]
    detail = await (await client.get(f"/api/v1/incidents/{incident_id}", headers=AUTH)).json()
    assert len(detail["feedback"]) == 1


async def test_feedback_holding_half_a_surrogate_pair_is_a_400(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(settings(tmp_path)))
    incident_id = await first_incident_id(client)
    # Valid JSON (an escape may name half a pair alone), but no text a store keeps.
    body = b'{"useful": true, "comment": "wrong \\ud800 device"}'
    response = await client.post(
        f"/api/v1/incidents/{incident_id}/feedback",
        data=body,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.status == 400
    assert (await response.json())["error"] == (
        "comment: not valid Unicode text (it holds half a surrogate pair)"
    )
    detail = await (await client.get(f"/api/v1/incidents/{incident_id}", headers=AUTH)).json()
    assert detail["feedback"] == []


async def test_feedback_nested_too_deep_is_a_400(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(settings(tmp_path)))
    # Well under the body limit, and deeper than Python's parser recurses.
    for body in (b"[" * 10_000, b'{"a":' * 3_000):
        response = await client.post(
            "/api/v1/incidents/inc-x/feedback",
            data=body,
            headers={**AUTH, "Content-Type": "application/json"},
        )
        assert response.status == 400
        assert (await response.json())["error"] == "request body is not valid JSON"


async def test_unknown_incident_is_404(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(settings(tmp_path)))
    response = await client.get("/api/v1/incidents/inc-missing", headers=AUTH)
    assert response.status == 404
    assert (await response.json()) == {"error": "no incident 'inc-missing'"}


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ai_sidecar.cli", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


def test_cli_refuses_to_start_without_a_token(tmp_path):
    result = run_cli("--web.listen-address=127.0.0.1:1", env={"SCOUT_DATA_DIR": str(tmp_path)})
    assert result.returncode == 1
    assert "SCOUT_WEBHOOK_TOKEN is not set" in result.stderr
    assert "--web.insecure-no-auth" in result.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SCOUT_PROMETHEUS_URL": "localhost:9090"}, "SCOUT_PROMETHEUS_URL: expected an http://"),
        (
            {"SCOUT_ALERTMANAGER_URLS": "http://127.0.0.1:9093,ftp://x"},
            "SCOUT_ALERTMANAGER_URLS: expected an http:// or https:// URL with a host",
        ),
        (
            {"SCOUT_ALERTMANAGER_URLS": "http://admin:hunter2@127.0.0.1:9093"},
            "SCOUT_ALERTMANAGER_URLS: remove the user:password part",
        ),
        # Parsed as the scheme "admin": still refused without echoing the password.
        (
            {"SCOUT_PROMETHEUS_URL": "admin:hunter2@prom:9090"},
            "SCOUT_PROMETHEUS_URL: remove the user:password part",
        ),
        (
            {"SCOUT_PROMETHEUS_URL": "http://prom:9090/?token=hunter2"},
            "SCOUT_PROMETHEUS_URL: remove the ?query",
        ),
    ],
)
def test_cli_rejects_bad_urls(tmp_path, env, message):
    result = run_cli(
        "--dry-run", env={"SCOUT_WEBHOOK_TOKEN": TOKEN, "SCOUT_DATA_DIR": str(tmp_path), **env}
    )
    assert result.returncode == 1
    assert message in result.stderr
    assert "hunter2" not in result.stderr


def test_cli_dry_run_checks_the_config_file(tmp_path):
    good = run_cli("--dry-run", "--web.insecure-no-auth", env={"SCOUT_DATA_DIR": str(tmp_path)})
    assert good.returncode == 0, good.stderr
    bad = tmp_path / "sidecar.yml"
    bad.write_text("correlation:\n  windw: 5m\n")
    result = run_cli(
        "--dry-run",
        f"--config.file={bad}",
        "--web.insecure-no-auth",
        env={"SCOUT_DATA_DIR": str(tmp_path)},
    )
    assert result.returncode == 1
    assert f"{bad}:2" in result.stderr


def test_cli_unwritable_data_dir_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_cli(
        "--dry-run", "--web.insecure-no-auth", env={"SCOUT_DATA_DIR": str(blocker / "data")}
    )
    assert result.returncode == 1
    assert "SCOUT_DATA_DIR: cannot create" in result.stderr
    assert "Traceback" not in result.stderr


def start_sidecar(
    tmp_path: Path, start_service: Callable[[Service], Service]
) -> tuple[Service, int]:
    """``scout-sidecar serve`` on a free port (returned), with its worker process."""
    port = free_port()
    env = {"SCOUT_WEBHOOK_TOKEN": TOKEN, "SCOUT_DATA_DIR": str(tmp_path / "data")}
    return start_service(sidecar_service(tmp_path, port, env=env)), port


def test_cli_serves_and_stops_cleanly_on_sigterm(tmp_path, start_service):
    service, port = start_sidecar(tmp_path, start_service)
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    assert "scout_sidecar_build_info" in body
    assert (tmp_path / "data" / "scout.db").exists()
    assert service.process is not None
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(timeout=10) == 0


def test_the_worker_process_yields_the_cpu_to_the_webhook(tmp_path, start_service):
    # Regression (issue 10): at equal priority the worker's correlation took as
    # much CPU as the webhook during a storm of single-alert requests, and the
    # acknowledgements Alertmanager waits for slowed down to match.
    service, _ = start_sidecar(tmp_path, start_service)
    assert service.process is not None
    http = psutil.Process(service.process.pid)

    def worker_niceness() -> list[int]:
        # multiprocessing's spawned children; its resource tracker is not one.
        spawned = [c for c in http.children() if "spawn_main" in " ".join(c.cmdline())]
        return [c.nice() for c in spawned]

    # The worker lowers its priority as it starts, once Python is up.
    deadline = time.monotonic() + 10
    while (niceness := worker_niceness()) != [http.nice() + NICENESS]:
        assert time.monotonic() < deadline, f"worker niceness {niceness}, HTTP {http.nice()}"
        time.sleep(0.05)


def test_cli_busy_port_is_a_clear_error(tmp_path, monkeypatch):
    # The store's directory is created before the port is tried: keep it out of the tree.
    monkeypatch.setenv("SCOUT_DATA_DIR", str(tmp_path / "data"))
    result, port = run_on_busy_port("ai_sidecar.cli", "serve", "--web.insecure-no-auth")
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr


def test_cli_reads_the_token_from_a_file(tmp_path):
    token_file = tmp_path / "webhook-token"
    env = {"SCOUT_DATA_DIR": str(tmp_path), "SCOUT_WEBHOOK_TOKEN_FILE": str(token_file)}
    missing = run_cli("--dry-run", env=env)
    assert missing.returncode == 1
    assert f"SCOUT_WEBHOOK_TOKEN_FILE: cannot read {token_file}: No such file" in missing.stderr
    token_file.write_text("\n")
    empty = run_cli("--dry-run", env=env)
    assert f"SCOUT_WEBHOOK_TOKEN_FILE: {token_file} is empty" in empty.stderr
    token_file.write_text("s3cret-0123456789\n")
    assert run_cli("--dry-run", env=env).returncode == 0
    both = run_cli("--dry-run", env={**env, "SCOUT_WEBHOOK_TOKEN": "other"})
    assert "set SCOUT_WEBHOOK_TOKEN or SCOUT_WEBHOOK_TOKEN_FILE, not both" in both.stderr
    assert "s3cret" not in both.stderr + both.stdout


@pytest.mark.parametrize("where", ["environment", "file"])
def test_cli_refuses_a_short_webhook_token_without_echoing_it(tmp_path, where):
    token = "k7Qz9"
    if where == "file":
        (tmp_path / "webhook-token").write_text(token + "\n")
        env = {"SCOUT_WEBHOOK_TOKEN_FILE": str(tmp_path / "webhook-token")}
        name = "SCOUT_WEBHOOK_TOKEN_FILE"
    else:
        env = {"SCOUT_WEBHOOK_TOKEN": token}
        name = "SCOUT_WEBHOOK_TOKEN"
    result = run_cli("--dry-run", env={"SCOUT_DATA_DIR": str(tmp_path), **env})
    assert result.returncode == 1
    assert result.stderr == (
        f"scout-sidecar: {name}: the webhook token has 5 characters, fewer than 16: "
        "a short token can be guessed; make a random one, e.g. `openssl rand -base64 24`\n"
    )
    assert token not in result.stderr + result.stdout
    assert (
        run_cli(
            "--dry-run", env={"SCOUT_DATA_DIR": str(tmp_path), "SCOUT_WEBHOOK_TOKEN": "x" * 16}
        ).returncode
        == 0
    )


async def test_the_incident_list_pages_by_cursor_through_tied_update_times(
    aiohttp_client, tmp_path
):
    # Five incidents updated at the same instant, and one on either side: a
    # poller paging by updatedAt alone never saw two of the five.
    tied = [stored_incident(f"inc-{k}", updated_at=T0 + timedelta(minutes=5)) for k in range(5)]
    older = stored_incident("inc-old", updated_at=T0)
    newer = stored_incident("inc-new", updated_at=T0 + timedelta(minutes=9))
    client = await aiohttp_client(create_app(settings(tmp_path)))
    await client.app[STORE].save_incidents([older, *tied, newer])
    since = (T0 + timedelta(minutes=1)).isoformat().replace("+00:00", "Z")

    pages: list[list[str]] = []
    url = f"/api/v1/incidents?since={since}&limit=3"
    while url:
        response = await client.get(url, headers=AUTH)
        assert response.status == 200
        pages.append([i["id"] for i in await response.json()])
        cursor = response.headers.get("Scout-Next-Cursor")
        link = response.headers.get("Link")
        if cursor is None:
            assert link is None
            break
        assert link.startswith("</api/v1/incidents?")
        assert link.endswith('>; rel="next"')
        url = link[1 : -len('>; rel="next"')]
        assert f"cursor={cursor}" in url
        assert "limit=3" in url
        assert "since=" in url

    # (updatedAt, id) descending; the page after a full last one is empty.
    assert pages == [["inc-new", "inc-4", "inc-3"], ["inc-2", "inc-1", "inc-0"], []]


def _encoded(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "x",
        "bm90IGpzb24",
        "WyJub3QgYSB0aW1lIiwiYSJd",
        "WzEsMl0",
        # Tampered: a time before year 1 in UTC, and nesting past the recursion limit.
        _encoded('["0001-01-01T00:00:00+01:00","x"]'),
        _encoded("[" * 3000 + "]" * 3000),
    ],
)
async def test_a_cursor_the_api_did_not_answer_is_400(aiohttp_client, tmp_path, cursor):
    client = await aiohttp_client(create_app(settings(tmp_path)))
    response = await client.get(f"/api/v1/incidents?cursor={cursor}", headers=AUTH)
    assert response.status == 400
    assert (await response.json())["error"].startswith("cursor: not one this API answered")

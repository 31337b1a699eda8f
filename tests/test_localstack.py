"""`make up`'s stack runner: the whole stack on loopback, and nothing left after Ctrl-C."""

from __future__ import annotations

import asyncio
import html.parser
import http.cookiejar
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest
import yaml

from ai_sidecar.store import SqliteStore
from scripts.demo_storm import CORE, holding, storm
from scripts.localstack import (
    CONSOLE_ADMIN,
    SLACK_PLACEHOLDER,
    _ports_outside_ephemeral_range,
    demo_command,
    ensure_console_login,
    ensure_secrets,
    free_port,
    load_alertmanager_config,
    parse_args,
    port_is_free,
)
from tests.conftest import NoRedirect, promql, wait_for

# Starts real daemons: the slow lane (see the peers marker in pyproject).
pytestmark = pytest.mark.peers


REPO = Path(__file__).resolve().parent.parent


def start_stack(tmp_path: Path, ports: dict[str, int]) -> subprocess.Popen[str]:
    argv = [sys.executable, str(REPO / "scripts" / "localstack.py"), f"--data-dir={tmp_path}"]
    argv += [f"--{name}-port={port}" for name, port in ports.items()]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def post_alert(port: int, labels: dict[str, str]) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v2/alerts",
        data=json.dumps([{"labels": labels}]).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def sidecar_incidents(port: int, token: str) -> list[dict[str, object]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/incidents",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        incidents: list[dict[str, object]] = json.loads(response.read())
    return incidents


class _FormInputs(html.parser.HTMLParser):
    """The named inputs of ``form#login`` (hidden fields such as a CSRF token)."""

    def __init__(self) -> None:
        super().__init__()
        self.in_form = False
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "form":
            self.in_form = named.get("id") == "login"
        elif tag == "input" and self.in_form and named.get("name"):
            self.fields[str(named["name"])] = named.get("value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.in_form = False


def console_sign_in(base_url: str, name: str, password: str) -> urllib.request.OpenerDirector:
    """Sign in to the console as a browser would; returns an opener holding the session."""
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), NoRedirect
    )
    with opener.open(f"{base_url}/console/login", timeout=10) as response:
        form = _FormInputs()
        form.feed(response.read().decode())
    assert {"username", "password"} <= form.fields.keys(), form.fields
    fields = {**form.fields, "username": name, "password": password}
    request = urllib.request.Request(
        f"{base_url}/console/login", data=urllib.parse.urlencode(fields).encode(), method="POST"
    )
    # Signed in: sent on to the incidents; refused: the form again (4xx).
    with pytest.raises(urllib.error.HTTPError) as answer:
        opener.open(request, timeout=10)
    with answer.value as refused_or_redirected:
        assert refused_or_redirected.code == 303, refused_or_redirected.read().decode()
        assert refused_or_redirected.headers["Location"] == "/console/incidents"
    return opener


def test_free_ports_are_drawn_outside_the_ephemeral_range():
    """An outgoing connection takes its local port from the ephemeral range; a server
    told to listen on a port from there can find it taken (seen in CI as a Prometheus
    that never listened while the stack said it was up)."""
    if not _ports_outside_ephemeral_range():
        pytest.skip("this machine's ephemeral range leaves no port above 10000 outside it")
    low, high = (int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        ports = {free_port(kind=kind) for _ in range(50)}
        assert not [port for port in ports if low <= port <= high]
        # Drawn at random: two test workers asking at once rarely meet.
        assert len(ports) > 40
        for port in ports:
            with socket.socket(socket.AF_INET, kind) as sock:
                sock.bind(("127.0.0.1", port))


def test_parallel_test_workers_draw_from_disjoint_ports(monkeypatch):
    drawn = {}
    for worker in ("gw0", "gw1", "gw2"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
        drawn[worker] = {free_port() for _ in range(30)}
    assert {port % 3 for port in drawn["gw0"]} == {0}
    assert {port % 3 for port in drawn["gw1"]} == {1}
    assert {port % 3 for port in drawn["gw2"]} == {2}


def test_a_port_in_use_is_never_drawn(monkeypatch):
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    with held:
        taken = held.getsockname()[1]
        # Every draw lands on the one port that is taken: the fallback is the kernel's pick.
        monkeypatch.setattr(
            "scripts.localstack._ports_outside_ephemeral_range", lambda: [range(taken, taken + 1)]
        )
        assert free_port() != taken
        assert not port_is_free(taken)


def test_secrets_are_made_private_once_and_kept(tmp_path):
    directory = tmp_path / "secrets"
    first = ensure_secrets(directory)
    token = first["webhook-token"].read_text()
    assert len(token) >= 40
    assert first["slack-api-url"].read_text() == SLACK_PLACEHOLDER
    assert first["smtp-password"].read_text() == ""
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in first.values()} == {0o600}
    # An operator's own values survive the next start.
    first["slack-api-url"].write_text("https://hooks.slack.example/T/B/x")
    second = ensure_secrets(directory)
    assert second["webhook-token"].read_text() == token
    assert second["slack-api-url"].read_text() == "https://hooks.slack.example/T/B/x"
    assert ensure_secrets(tmp_path / "other")["webhook-token"].read_text() != token


def test_console_login_is_made_once_with_a_private_random_password(tmp_path):
    secrets_dir = tmp_path / "secrets"
    ensure_secrets(secrets_dir)
    env = {"SCOUT_DATA_DIR": str(tmp_path / "sidecar")}

    async def as_the_sidecar_starts() -> None:
        # `make up` makes the login once the sidecar is ready: its store exists.
        (tmp_path / "sidecar").mkdir()
        store = await SqliteStore.open(tmp_path / "sidecar" / "scout.db")
        await store.close()

    asyncio.run(as_the_sidecar_starts())
    path = ensure_console_login(secrets_dir, env)
    assert path == secrets_dir / "console-admin"
    password = path.read_text()
    assert len(password) >= 24
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Kept on the next start: the user is not made again (it exists already).
    assert ensure_console_login(secrets_dir, env) == path
    assert path.read_text() == password
    # Deleted: the next start gives the same user a new password.
    path.unlink()
    assert ensure_console_login(secrets_dir, env).read_text() != password
    users = subprocess.run(
        [sys.executable, "-m", "ai_sidecar.cli", "user", "list"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=True,
    )
    assert users.stdout.splitlines() == [f"{CONSOLE_ADMIN}\toperator"]


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        ([], "make demo"),
        (["--prometheus-port", "19090"], "make demo"),
        (["--alertmanager-port", "19093"], "make demo ALERTMANAGER_PORT=19093"),
        (
            ["--alertmanager-port", "19093", "--sidecar-port", "18782"],
            "make demo ALERTMANAGER_PORT=19093 SIDECAR_PORT=18782",
        ),
    ],
)
def test_the_banner_names_the_demo_command_for_the_stacks_ports(argv, command):
    # Run as printed, the demo reaches this stack, not the default ports.
    assert demo_command(parse_args(argv)) == command


def test_alertmanager_config_is_the_shipped_one_with_local_paths(tmp_path):
    shipped_path = REPO / "alertmanager" / "alertmanager.yml"
    shipped = yaml.safe_load(shipped_path.read_text())
    config = load_alertmanager_config(
        shipped_path, secrets_dir=tmp_path, sidecar_url="http://127.0.0.1:18782/"
    )
    assert config["route"] == shipped["route"]
    assert config["inhibit_rules"] == shipped["inhibit_rules"]
    assert config["templates"] == [str(REPO / "alertmanager" / "templates" / "*.tmpl")]
    assert config["global"]["slack_api_url_file"] == str(tmp_path / "slack-api-url")
    assert config["global"]["smtp_auth_password_file"] == str(tmp_path / "smtp-password")
    [hook] = next(r for r in config["receivers"] if r["name"] == "scout-sidecar")["webhook_configs"]
    assert hook["url"] == "http://127.0.0.1:18782/api/v1/alertmanager"
    assert hook["http_config"]["authorization"]["credentials_file"] == str(
        tmp_path / "webhook-token"
    )
    rendered = tmp_path / "alertmanager.yml"
    rendered.write_text(yaml.safe_dump(config))
    check = subprocess.run(
        ["amtool", "check-config", str(rendered)], capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_stack_serves_host_metrics_and_ctrl_c_leaves_nothing(tmp_path):
    ports = {n: free_port() for n in ("prometheus", "alertmanager", "exporter", "sidecar")}
    stack = start_stack(tmp_path, ports)
    children: list[psutil.Process] = []
    try:
        assert stack.stdout is not None
        banner = [stack.stdout.readline() for _ in range(9)]
        assert banner[0].startswith("Scout stack is up"), "".join(banner) + stack.stdout.read()
        login_file = tmp_path / "secrets" / "console-admin"
        console_line = (
            f"  console        http://127.0.0.1:{ports['sidecar']}/console/"
            f" (sign in as {CONSOLE_ADMIN}: the password is in {login_file})\n"
        )
        assert console_line in banner, "".join(banner)
        password = login_file.read_text()
        assert stat.S_IMODE(login_file.stat().st_mode) == 0o600
        # Four services; their own children (the sidecar's worker process) are
        # checked below with the rest.
        assert len(psutil.Process(stack.pid).children()) == 4
        children = psutil.Process(stack.pid).children(recursive=True)
        prometheus = f"http://127.0.0.1:{ports['prometheus']}"
        # The shipped config scrapes every 15s; the first scrape comes within one interval.
        rows = wait_for(
            lambda: promql(prometheus, 'scout_host_load1{job="scout-exporter"}'),
            timeout=40,
            what="host metrics through Prometheus",
        )
        assert rows[0]["metric"]["instance"] == f"127.0.0.1:{ports['exporter']}"
        up = wait_for(
            lambda: len(rows := promql(prometheus, "up == 1")) >= 5 and rows,
            timeout=40,
            what="all five targets up (four services and the loopback probe)",
        )
        # Exactly these jobs, each once: a target scraped twice or a stray job is a defect.
        assert sorted(row["metric"]["job"] for row in up) == [
            "alertmanager",
            "probe_icmp",
            "prometheus",
            "scout-exporter",
            "scout-sidecar",
        ]
        # The multi-target ICMP job reaches loopback through the exporter's /probe.
        probe = wait_for(
            lambda: promql(prometheus, 'scout_probe_success{job="probe_icmp"} == 1'),
            timeout=40,
            what="the ICMP probe of loopback",
        )
        assert probe[0]["metric"]["instance"] == "127.0.0.1"
        alertmanagers = promql(prometheus, "prometheus_notifications_alertmanagers_discovered")
        assert alertmanagers[0]["value"][1] == "1"
        # Alertmanager reaches the sidecar's webhook with the stack's own token:
        # an alert posted to Alertmanager becomes an incident in the sidecar.
        token = (tmp_path / "secrets" / "webhook-token").read_text()
        post_alert(ports["alertmanager"], {"alertname": "LocalStackProbe", "instance": "x"})
        incidents = wait_for(
            lambda: [
                i
                for i in sidecar_incidents(ports["sidecar"], token)
                if any(a["labels"]["alertname"] == "LocalStackProbe" for a in i["alerts"])
            ],
            timeout=20,
            what="the alert to reach the sidecar through Alertmanager",
        )
        [incident] = incidents
        [member] = incident["alerts"]
        assert member["labels"]["instance"] == "x"
        # The first login works in the console.
        console_sign_in(f"http://127.0.0.1:{ports['sidecar']}", CONSOLE_ADMIN, password)
    finally:
        stack.send_signal(signal.SIGINT)
        output, _ = stack.communicate(timeout=60)
        # Shown by pytest only when the test fails: what the stack and its services said.
        print(output)
        for log in sorted((tmp_path / "logs").glob("*")):
            print(f"--- {log.name}", log.read_text(errors="replace")[-3000:], sep="\n")
    assert stack.returncode == 0, output
    assert "stopped." in output
    # The password is written to its file and nowhere else.
    assert password not in "".join(banner) + output
    for log in (tmp_path / "logs").iterdir():
        assert password not in log.read_text(errors="replace"), log
    still_running = [p.pid for p in children if p.is_running() and p.status() != "zombie"]
    assert still_running == []
    assert all(port_is_free(port) for port in ports.values())


# A service that takes two seconds to stop after SIGTERM, and says when stopping began.
_SLOW_TO_STOP = """
import http.server, os, signal, sys, time
port, began = int(sys.argv[1]), sys.argv[2]
def stop(signum, frame):
    open(began, "w").close()
    time.sleep(2)
    os._exit(0)
signal.signal(signal.SIGTERM, stop)
http.server.HTTPServer(("127.0.0.1", port), http.server.SimpleHTTPRequestHandler).serve_forever()
"""

# The stack runner's own shape (main's signals, running(), watch()) around that one service.
_RUNNER = """
import sys
from pathlib import Path
from scripts.localstack import Service, running, stop_on_signals, watch
stop_on_signals()
port, began, log = sys.argv[1], sys.argv[2], Path(sys.argv[3])
slow = Service("slow", [sys.executable, "-c", sys.argv[4], port, began],
               f"http://127.0.0.1:{port}/", log)
try:
    with running([slow]):
        print("up", flush=True)
        watch([slow])
except KeyboardInterrupt:
    print("stopped", flush=True)
"""


def test_a_second_signal_while_stopping_leaves_nothing_running(tmp_path):
    """`timeout make up` signals twice (timeout and make); so does a double Ctrl-C.
    The second must not cut the stop short and orphan the services not yet stopped."""
    began = tmp_path / "stopping"
    runner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _RUNNER,
            str(free_port()),
            str(began),
            str(tmp_path / "slow.log"),
            _SLOW_TO_STOP,
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert runner.stdout is not None
        assert runner.stdout.readline() == "up\n", runner.stdout.read()
        [service] = psutil.Process(runner.pid).children()
        runner.send_signal(signal.SIGTERM)
        wait_for(began.exists, timeout=20, what="the service to be told to stop")
        runner.send_signal(signal.SIGTERM)
        runner.send_signal(signal.SIGINT)
        output, _ = runner.communicate(timeout=30)
    finally:
        runner.kill()
    # The runner ended only after its service did, and said so once, without a traceback.
    assert not (service.is_running() and service.status() != psutil.STATUS_ZOMBIE)
    assert output == "stopped\n", output


def test_busy_port_names_the_variable_to_override(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = {
            "prometheus": busy,
            "alertmanager": free_port(),
            "exporter": free_port(),
            "sidecar": free_port(),
        }
        stack = start_stack(tmp_path, ports)
        output, _ = stack.communicate(timeout=60)
    assert stack.returncode == 1
    assert f"port {busy} is in use: pick another with `make up PROMETHEUS_PORT=<port>`" in output


def test_the_demo_counts_only_incidents_its_alerts_fire_in():
    now = datetime.now(UTC)
    alerts = storm(now)

    def listed(incident_id: str, status: str) -> dict[str, object]:
        members = [{"labels": a["labels"], "status": status} for a in alerts[:3]]
        return {"id": incident_id, "alerts": members}

    # A demo run an hour ago left resolved incidents with the same labels.
    earlier = [listed("old", "resolved")]
    assert holding(earlier, alerts) == []
    assert [i["id"] for i in holding([*earlier, listed("new", "firing")], alerts)] == ["new"]


def run_demo(tmp_path: Path, ports: dict[str, int]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "demo_storm.py"),
            f"--alertmanager-port={ports['alertmanager']}",
            f"--sidecar-port={ports['sidecar']}",
            f"--data-dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_demo_storm_becomes_incidents_in_the_console(tmp_path):
    ports = {n: free_port() for n in ("prometheus", "alertmanager", "exporter", "sidecar")}
    refused = run_demo(tmp_path, ports)
    assert refused.returncode == 1
    assert (
        f"demo: no Alertmanager answers at http://127.0.0.1:{ports['alertmanager']}: "
        "start the stack with `make up` first" in refused.stderr
    )
    stack = start_stack(tmp_path, ports)
    try:
        assert stack.stdout is not None
        assert stack.stdout.readline().startswith("Scout stack is up")
        demo = run_demo(tmp_path, ports)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        token = (tmp_path / "secrets" / "webhook-token").read_text()
        incidents = sidecar_incidents(ports["sidecar"], token)
        [storm] = [
            i for i in incidents if any(a["labels"]["instance"] == CORE for a in i["alerts"])
        ]
        # The whole head-office storm is one incident; the branch's alerts are others.
        assert {a["labels"]["site"] for a in storm["alerts"]} == {"hq"}
        assert len(storm["alerts"]) == 9
        # Named after the core's port, not a switch behind it (both are labelled
        # upstream: core-sw1, and access-sw2 has more behind it).
        [root] = [a for a in storm["alerts"] if a["fingerprint"] == storm["rootCause"]]
        assert (root["labels"]["alertname"], root["labels"].get("ifName")) == (
            "InterfaceDown",
            "Te1/0/1",
        )
        branch = [
            i for i in incidents if any(a["labels"].get("site") == "branch" for a in i["alerts"])
        ]
        assert sorted(a["labels"]["alertname"] for i in branch for a in i["alerts"]) == [
            "HostFilesystemAlmostFull",
            "InterfaceErrors",
            "ProbeLatencyHigh",
        ]
        grouped = f"the sidecar grouped them into {1 + len(branch)} incidents"
        assert grouped in demo.stdout
        console = f"http://127.0.0.1:{ports['sidecar']}/console/incidents"
        assert f"see them at {console}" in demo.stdout
        # And a newcomer sees it in the console with the first login.
        password = (tmp_path / "secrets" / "console-admin").read_text()
        session = console_sign_in(console.removesuffix("/console/incidents"), "admin", password)
        with session.open(console, timeout=10) as page:
            assert f"/console/incidents/{storm['id']}" in page.read().decode()
    finally:
        stack.send_signal(signal.SIGINT)
        stack.communicate(timeout=60)
